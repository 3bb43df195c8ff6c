"""Preemption: SIGUSR1 / SIGTERM ask the run to checkpoint and exit with the "requeue" status.

The signal handler only sets a flag (nothing else is safe inside a handler). The trainer folds the
flag into the one all-reduce it does every step, so all ranks see the same decision at the same
step, even when only some of them received the signal; they then save one checkpoint together and
exit with REQUEUE_EXIT_CODE. A signal before the first step (imports, data set-up, checkpoint
loading) is agreed on once before it: every rank exits 75 and the last committed checkpoint stands.

The handlers are installed first thing by `mars_dist.train` and stay until the process exits: a
launcher that signals a worker which is already past its last step (torchrun SIGTERMs the other
workers as soon as one exits) must still see that worker's 75, not a death by SIGTERM. Python's own
shutdown puts the default handlers back before the process ends, so the signals are ignored from
the start of that shutdown on (an atexit hook).

This module imports only the standard library, so that installing the handlers costs nothing.

Launchers: Slurm sends SIGUSR1 ahead of the time limit with `#SBATCH --signal=USR1@90` (or
SIGTERM at preemption); torchrun (and `mars-torchrun`) forward the signal to their
workers and SIGKILL them 30 s later, so a checkpoint must fit in that grace period.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Dict, Optional

from mars_dist.io.atomic import atomic_write_text

# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry". Distinct from
# 0 (finished), 1 (error) and the 128+N of a process killed by signal N.
REQUEUE_EXIT_CODE = 75
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
PREEMPTED_MARKER = "PREEMPTED"  # in run_dir: the last run stopped for preemption (launchers may requeue)


class PreemptionWatcher:
    """Records the last preemption signal received. `install()` it once, at process start (main thread)."""

    def __init__(self) -> None:
        self.received: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signum

    def install(self) -> "PreemptionWatcher":
        """Handles SIGUSR1/SIGTERM from now until the process exits (the defaults never come back)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("PreemptionWatcher.install() must run in the main thread (Python delivers signals there)")
        for sig in PREEMPTION_SIGNALS:
            signal.signal(sig, self._on_signal)
        atexit.unregister(_ignore_preemption_signals)  # once per process, however many runs it holds
        atexit.register(_ignore_preemption_signals)
        return self


def _ignore_preemption_signals() -> None:
    """At interpreter shutdown, which would put the default handlers back: an ignored signal cannot
    replace the exit status by a death. (Python leaves SIG_IGN alone; a blocked mask would cover
    only this thread, and a process-wide signal may go to any other.)"""
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------- the marker
def launcher_agent() -> Optional[Dict[str, Any]]:
    """The torchrun agent this worker runs under (None without one): its host, its pid (our parent)
    and the rendezvous run id. Written into PREEMPTED, so that a group the same agent restarts in place
    can tell that it was preempted rather than crashed."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    return {"host": socket.gethostname(), "pid": os.getppid(), "run_id": run_id}


def write_marker(run_dir: Path, checkpoint: Optional[Path]) -> None:
    """run_dir/PREEMPTED: line 1 the checkpoint a rerun resumes from (empty if none), line 2 the agent (JSON)."""
    atomic_write_text(Path(run_dir) / PREEMPTED_MARKER, f"{checkpoint or ''}\n{json.dumps(launcher_agent())}\n")


def restarted_after_preemption(run_dir: Path) -> bool:
    """True in a worker group that torchrun restarted in place after it was preempted.

    Plain torchrun counts the workers' exit 75 as a failure and, with --max-restarts, starts the group
    again on the same agent (TORCHELASTIC_RESTART_COUNT > 0): such a group must not train on past the
    scheduler's deadline. A fresh launch (a requeued job) has another agent and trains.
    """
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0) == 0:
        return False
    path = Path(run_dir) / PREEMPTED_MARKER
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return False
    if len(lines) < 2:
        return False  # a marker of an older mars_dist names no agent
    try:
        agent = json.loads(lines[1])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line 2 is not the agent's JSON ({err}): {lines[1]!r}") from None
    return agent is not None and agent == launcher_agent()
