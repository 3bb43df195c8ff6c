"""The error convention every mars_dist command line follows.

A user's mistake (mars_dist.errors.UserError: a bad path, key, value or file) ends the command
with one line on stderr, `prog: error: <what was wrong and what is expected>`, and exit status 2
(the status argparse uses for a bad argument). Anything else is a bug: it keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, List, Optional

from mars_dist.errors import UserError

USAGE_EXIT_CODE = 2


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
