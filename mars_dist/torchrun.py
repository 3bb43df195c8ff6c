"""torchrun that ends a preempted job with the requeue status: `mars-torchrun` + torchrun's arguments.

Plain torchrun counts a worker's exit 75 (preempted, after the group committed a checkpoint) as a
failure: it exits 1, and with --max-restarts it restarts the group in place, which then trains on past
the scheduler's deadline. This is torchrun itself (its parser, its launch config, its
LocalElasticAgent) with three changes:
- a worker exit of 75 stops the group without a restart and the launcher exits 75; any other
  failure (a crash, a kill -9) restarts the group up to --max-restarts as before;
- SIGUSR1 and SIGTERM are always among --signals-to-handle, so the agent forwards either one to
  every worker (which then commit a checkpoint together and exit 75) and SIGKILLs the workers still
  alive 30 s later (torchrun's grace period);
- at the end it logs the exit status of every worker of the last attempt.

    mars-torchrun --nnodes 1:4 --nproc-per-node 8 --max-restarts 3 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m mars_dist.train --config X.yaml

`python -m mars_dist.torchrun` is the same command.
"""
from __future__ import annotations

import signal
import sys
from typing import Any, Dict, List, Optional

from torch.distributed import run as torch_run
from torch.distributed.elastic.agent.server.api import RunResult, WorkerGroup, WorkerState
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher import api as launcher_api

from mars_dist.cli import console_script
from mars_dist.engine.preemption import PREEMPTION_SIGNALS, REQUEUE_EXIT_CODE

PROG = "mars-torchrun"


class PreemptionAwareAgent(LocalElasticAgent):
    """torchrun's agent, except that a worker exit of 75 ends the job instead of being retried."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.exit_codes: Dict[int, Optional[int]] = {}  # global rank -> exit status (last attempt)

    @property
    def preempted(self) -> bool:
        return REQUEUE_EXIT_CODE in self.exit_codes.values()

    def _monitor_workers(self, worker_group: WorkerGroup) -> RunResult:
        result = super()._monitor_workers(worker_group)
        if result.state is WorkerState.FAILED and any(f.exitcode == REQUEUE_EXIT_CODE for f in result.failures.values()):
            # The loop of torchrun's agent restarts a failed group while restarts remain: none remain.
            self._remaining_restarts = 0
        return result

    def _shutdown(self, death_sig: signal.Signals = signal.SIGTERM) -> None:
        """Stops the workers (forwarding `death_sig`, SIGKILL after the grace period) and records how each exited."""
        super()._shutdown(death_sig)
        if self._pcontext is not None:
            workers = self._worker_group.workers
            self.exit_codes = {workers[local].global_rank: handler.proc.returncode
                               for local, handler in self._pcontext.subprocess_handlers.items()}


def with_preemption_signals(signals_to_handle: str) -> str:
    """torchrun's --signals-to-handle list, completed with SIGUSR1 and SIGTERM."""
    names = [name.strip() for name in signals_to_handle.split(",") if name.strip()]
    return ",".join(names + [sig.name for sig in PREEMPTION_SIGNALS if sig.name not in names])


def describe_status(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}" + (" (preempted)" if code == REQUEUE_EXIT_CODE else "")


def log_exit_statuses(agent: PreemptionAwareAgent) -> None:
    for rank, code in sorted(agent.exit_codes.items()):
        print(f"[{PROG}] worker rank {rank}: {describe_status(code)}", file=sys.stderr, flush=True)
    if agent.preempted:
        print(f"[{PROG}] preempted: exiting {REQUEUE_EXIT_CODE} for requeue (no restart in place)", file=sys.stderr, flush=True)


@record
def main(argv: Optional[List[str]] = None) -> int:
    """0, or REQUEUE_EXIT_CODE when the group was preempted; a failed group raises torchrun's ChildFailedError."""
    parser = torch_run.get_args_parser()
    parser.prog = PROG
    args = parser.parse_args(argv)
    args.signals_to_handle = with_preemption_signals(args.signals_to_handle)
    agents: List[PreemptionAwareAgent] = []

    def build_agent(**kwargs: Any) -> PreemptionAwareAgent:
        agents.append(PreemptionAwareAgent(**kwargs))
        return agents[-1]

    # torchrun's launch_agent builds its agent from this module global; everything else is torchrun's own.
    original, launcher_api.LocalElasticAgent = launcher_api.LocalElasticAgent, build_agent
    try:
        torch_run.run(args)
    except (ChildFailedError, SignalException):
        if not (agents and agents[-1].preempted):
            raise
    finally:
        launcher_api.LocalElasticAgent = original
        if agents:
            log_exit_statuses(agents[-1])
    return REQUEUE_EXIT_CODE if agents[-1].preempted else 0


entry = console_script(main, PROG)


if __name__ == "__main__":
    entry()
