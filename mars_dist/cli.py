"""The conventions every mars_dist command line follows.

- Names: a console script `mars-<verb>` (pyproject.toml) with its `python -m` twin; argparse's prog
  is the `mars-<verb>` name either way (`make_parser`).
- Overrides of a run config are positional `key.sub=value` arguments; one flag name per meaning
  (`--batch-size` for notes processed together, `--out` for the output folder, `--device`, ...);
  subcommands where a command has modes (`mars-encode encode|decode`, `mars-sweep submit|status`).
- Errors: a user's mistake (mars_dist.errors.UserError: a bad path, key, value or file) ends the
  command with one line on stderr, `prog: error: <what was wrong and what is expected>`, and exit
  status 2 (the status argparse uses for a bad argument), with nothing written. Anything else is a
  bug: it keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from mars_dist.errors import UserError

USAGE_EXIT_CODE = 2


def make_parser(prog: str, doc: Optional[str]) -> argparse.ArgumentParser:
    """The argument parser of command `prog` (`mars-<verb>`), its module docstring as description."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def console_script(main: Callable[[Optional[List[str]]], int], prog: str) -> Callable[[], None]:
    """The entry point of command `prog` (pyproject's console script, and the module's `__main__`):
    `main`'s status, a user's mistake as one line with status 2 (`run_cli`)."""

    def entry() -> None:
        sys.exit(run_cli(main, prog))

    entry.__doc__ = f"The console script `{prog}`: user errors as one line, exit status 2."
    return entry


def user_error_line(prog: str, err: BaseException) -> str:
    message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{prog}: error: {message}"


def run_cli(main: Callable[[Optional[List[str]]], int], prog: str, argv: Optional[List[str]] = None) -> int:
    """`main(argv)`'s status, or USAGE_EXIT_CODE after printing a UserError as one line."""
    try:
        return main(argv)
    except UserError as err:
        print(user_error_line(prog, err), file=sys.stderr, flush=True)
        return USAGE_EXIT_CODE
