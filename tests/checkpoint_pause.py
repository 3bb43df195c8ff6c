"""mars_dist.train with the commit of one checkpoint delayed, so a test can kill a run while that
checkpoint is completely written but not yet renamed or marked COMMITTED:

    python tests/checkpoint_pause.py STEP SECONDS [mars-train arguments ...]

The pause is Checkpointer._commit of step STEP sleeping SECONDS first (every rank's files exist
under .step-XXXXXXXX.tmp/ by then); everything else is the real entry point.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `tests` and `mars_dist` importable

from mars_dist.engine.checkpoint import Checkpointer  # noqa: E402
from mars_dist.train import entry  # noqa: E402


def pause_before_commit(step: int, seconds: float) -> None:
    commit = Checkpointer._commit

    def paused(self: Checkpointer, at_step: int, tmp: Path, final: Path) -> None:
        if at_step == step:
            time.sleep(seconds)
        commit(self, at_step, tmp, final)

    Checkpointer._commit = paused


if __name__ == "__main__":
    step, seconds, *train_args = sys.argv[1:]
    pause_before_commit(int(step), float(seconds))
    sys.argv = [sys.argv[0], *train_args]
    entry()
