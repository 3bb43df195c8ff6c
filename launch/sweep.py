"""Sweeps with submitit: the grid's product becomes one Slurm job array, one run folder per point.

    mars-sweep submit --config configs/next_scale/small.yaml --grid optim.lr=1e-4,3e-4 --grid next_scale.depth=4,6 \\
        [key=value ...] [--nodes N] [--tasks-per-node T] [--gpus-per-node G] [--partition P] \\
        [--time MINUTES] [--cluster slurm|local|debug] [--sweep-dir DIR] [--dry-run]
    mars-sweep status SWEEP_DIR

(`python launch/sweep.py ...` and `python -m launch.sweep ...` are the same command.) Each `--grid`
gives one key and its values; the positional `key=value` overrides apply to every run.

A run folder is named by its grid values and a hash of its resolved config (run_dir excluded), e.g.
SWEEP_DIR/lr3e-4_depth6-1a2b3c4d, so submitting the same sweep again finds its runs: finished ones
(a committed checkpoint at train.max_steps) and queued or running ones are skipped, the others
(new, preempted, failed) are submitted and resume from their newest committed checkpoint.
`--dry-run` prints that plan and submits nothing; `status` prints each run's state, last logged step
and losses (from the run's metrics.jsonl), and folder.

Inside a job every task runs mars_dist.train in-process, with torch.distributed set up from
submitit's environment (RANK, WORLD_SIZE, MASTER_ADDR, ... of the Slurm tasks). Preemption: Slurm's
SIGUSR1 (`--signal=USR1@90`, submitit's preemption signal here) or SIGTERM reaches every task, the
engine commits one checkpoint and returns 75, and the job then hands over to submitit's own path:
its signal handler calls `SweepJob.checkpoint`, pickles the resumed submission and requeues the job
(`--max-requeues` times at most per submission). Run folder: sweep_run.json (what the run is),
job.json (its latest job), train.log (rank 0's console), FAILED (the error that ended the last
attempt), LOCK (the job that holds it, launch/run_folder.py) and the engine's files.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

if __package__ in (None, ""):
    # `python launch/sweep.py`: the repository root belongs on sys.path (launch/ itself does not),
    # and the job must be pickled as launch.sweep.SweepJob, which the Slurm jobs can import.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

# submitit reads its preemption signal at import, here (for sbatch --signal) and in the jobs (they
# inherit the variable). It must be one the engine checkpoints on, and USR1 is what Slurm sends.
os.environ["SUBMITIT_PREEMPT_SIGNAL"] = "USR1"

import submitit  # noqa: E402
from submitit.core.job_environment import SignalHandler  # noqa: E402
from submitit.core.utils import UncompletedJobError  # noqa: E402

from launch.run_folder import ENDED_STATES, PREEMPTED_MARKER, Owner, acquire, lock_holder, release  # noqa: E402
from mars_dist.cli import console_script  # noqa: E402
from mars_dist.errors import UserValueError  # noqa: E402

PROG = "mars-sweep"
REPO = Path(__file__).resolve().parent.parent
RUN_FILE, JOB_FILE, LOG_FILE, FAILED_FILE = "sweep_run.json", "job.json", "train.log", "FAILED"
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
REQUEUE_EXIT_CODE = 75  # mars_dist.engine.preemption.REQUEUE_EXIT_CODE
METRICS_FILE = "metrics.jsonl"  # mars_dist.engine.metrics.METRICS_FILE: the trainer's reports


class SweepError(UserValueError):
    """A bad sweep request (grid, config, folder); the message says what and where."""


@dataclass(frozen=True)
class Run:
    """One point of the grid: what the job trains, in which folder."""

    name: str
    folder: str
    config: str
    overrides: Tuple[str, ...]  # the shared overrides, then this point's grid values
    config_hash: str
    max_steps: int
    max_requeues: int = 20

    def train_argv(self) -> List[str]:
        return ["--config", self.config, "--resume", "auto", *self.overrides, f"run_dir={self.folder}"]


# ----------------------------------------------------------------------------------------- the plan
def parse_grid(items: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """["optim.lr=1e-4,3e-4", ...] -> [("optim.lr", ["1e-4", "3e-4"]), ...] (the order given)."""
    grid: List[Tuple[str, List[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(parts):
            raise SweepError(f"--grid {item!r}: expected key=value1,value2,... (e.g. optim.lr=1e-4,3e-4)")
        if key in dict(grid):
            raise SweepError(f"--grid names {key} twice")
        grid.append((key, parts))
    return grid


def run_name(point: Sequence[Tuple[str, str]], config_hash: str) -> str:
    """Readable prefix from the grid values (last key component + value), then the hash: lr3e-4_depth6-1a2b3c4d."""
    prefix = "_".join(re.sub(r"[^\w.+-]", "-", f"{key.rsplit('.', 1)[-1]}{value}") for key, value in point)[:96]
    return f"{prefix}-{config_hash}" if prefix else config_hash


def config_hash(config: dict) -> str:
    """First 8 hex digits of the sha256 of the resolved config without run_dir (the folder is named by it)."""
    identity = {k: v for k, v in config.items() if k != "run_dir"}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def plan_runs(config: str, grid: List[Tuple[str, List[str]]], fixed: Sequence[str], sweep_dir: Path,
              max_requeues: int) -> List[Run]:
    """One Run per point of the grid's product, each resolved (a bad key or value fails here, naming it)."""
    from mars_dist.config import config_to_dict, load_config

    both = sorted({item.partition("=")[0] for item in fixed} & {key for key, _ in grid})
    if both:
        raise SweepError(f"{', '.join(both)}: both swept (--grid) and shared (key=value); give each key one of the two")
    config = str(Path(config).absolute())
    runs: Dict[str, Run] = {}
    for values in itertools.product(*(vals for _, vals in grid)):
        point = [(key, value) for (key, _), value in zip(grid, values)]
        overrides = (*fixed, *(f"{k}={v}" for k, v in point))
        cfg = load_config(config, list(overrides))
        digest = config_hash(config_to_dict(cfg))
        if digest in runs:
            raise SweepError(f"grid points {' '.join(runs[digest].overrides[len(fixed):])} and "
                             f"{' '.join(overrides[len(fixed):])} resolve to the same config")
        name = run_name(point, digest)
        runs[digest] = Run(name, str(Path(sweep_dir).absolute() / name), config, overrides, digest, cfg.train.max_steps, max_requeues)
    return list(runs.values())


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _owner_of_job(job: dict) -> Owner:
    """The owner a job's lock will name: a Slurm job, or a submitit local job's controlling process."""
    if job["cluster"] == "slurm":
        return Owner("slurm", job["job_id"])
    return Owner("process", f"{job['host']}:{job['job_id']}")


def run_state(folder: Path, max_steps: int) -> str:
    """new | pending (queued or requeued) | running | preempted | failed | done."""
    from mars_dist.engine.checkpoint import committed_checkpoints

    steps = [step for step, _ in committed_checkpoints(folder)]
    if steps and steps[-1] >= max_steps:
        return "done"
    job = _read_json(folder / JOB_FILE)
    for owner in filter(None, (lock_holder(folder), _owner_of_job(job) if job else None)):
        state = owner.state()
        if state is not None and state not in ENDED_STATES:
            return "pending" if state in QUEUED_STATES else "running"
    if (folder / FAILED_FILE).exists():
        return "failed"
    if (folder / PREEMPTED_MARKER).exists():
        return "preempted"
    return "failed" if job else "new"  # a job ended without finishing or a preemption checkpoint: killed


def action(state: str, folder: Path) -> str:
    if state in ("done", "running", "pending"):
        return "skip"
    return "resume" if (folder / "checkpoints").is_dir() else "submit"


# ----------------------------------------------------------------------------------------- the job
class SweepJob(submitit.helpers.Checkpointable):
    """What every task of a sweep job runs: mars_dist.train in-process on one run folder."""

    def __init__(self, requeues: int = 0):
        self.requeues = requeues

    def __call__(self, run: Run) -> str:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        # submitit's checkpoint-and-requeue handler, before mars_dist.train installs the engine's own.
        requeue = signal.getsignal(signal.SIGUSR1)
        folder, owner = Path(run.folder), Owner.current()
        acquire(folder, owner)  # every rank: the same owner, so the same answer
        main_rank = env.global_rank == 0
        if main_rank:
            (folder / FAILED_FILE).unlink(missing_ok=True)
        from mars_dist.train import main as train_main

        try:
            with _tee(folder / LOG_FILE) if main_rank else contextlib.nullcontext():
                status = train_main(run.train_argv())
        except BaseException as err:
            if main_rank:
                (folder / FAILED_FILE).write_text(f"{type(err).__name__}: {err}\n")
                release(folder, owner)
            raise
        if status == REQUEUE_EXIT_CODE and isinstance(getattr(requeue, "__self__", None), SignalHandler):
            try:
                requeue(signal.SIGUSR1, None)  # rank 0: checkpoint() -> pickle -> scontrol requeue -> exit
            except UncompletedJobError:
                release(folder, owner)  # not requeued (--max-requeues reached): the run stays "preempted"
                raise
            return "preempted"  # the other ranks; the job, requeued, keeps the folder
        release(folder, owner)
        return "done" if status == 0 else "preempted"

    def checkpoint(self, run: Run) -> Optional[submitit.helpers.DelayedSubmission]:
        """Called by submitit's handler: the same run again (the engine already committed its checkpoint)."""
        if self.requeues >= run.max_requeues:
            print(f"preempted, but requeued {self.requeues} times already (--max-requeues {run.max_requeues}): "
                  f"not requeued; submit the sweep again to resume", flush=True)
            return None
        return submitit.helpers.DelayedSubmission(SweepJob(self.requeues + 1), run)


class _Tee:
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def _tee(path: Path) -> Iterator[None]:
    """Copies what rank 0 prints into the run folder, so `status` and users find it beside the run."""
    with open(path, "a") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


# ----------------------------------------------------------------------------------------- submit
def make_executor(args: argparse.Namespace, sweep_dir: Path) -> submitit.Executor:
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=args.cluster)
    params = dict(name=f"sweep-{sweep_dir.name}", timeout_min=args.time, nodes=args.nodes,
                  tasks_per_node=args.tasks_per_node or max(1, args.gpus_per_node), cpus_per_task=args.cpus_per_task)
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if executor.cluster == "slurm":
        params.update(slurm_signal_delay_s=90, slurm_array_parallelism=args.max_parallel,
                      slurm_additional_parameters={"requeue": True})
        if args.partition:
            params["slurm_partition"] = args.partition
    executor.update_parameters(**params)
    return executor


def submit(runs: List[Run], args: argparse.Namespace, sweep_dir: Path) -> Dict[str, str]:
    """Submits `runs` as one array; {run name: job id}. The debug cluster trains them here, one after another."""
    if not runs:
        return {}
    # The jobs import launch.sweep and mars_dist from the repository, whatever folder they start in.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for run in runs:
        Path(run.folder).mkdir(parents=True, exist_ok=True)
        (Path(run.folder) / RUN_FILE).write_text(json.dumps(asdict(run), indent=1) + "\n")
    executor = make_executor(args, sweep_dir)
    jobs = executor.map_array(SweepJob(), runs)
    ids = {run.name: job.job_id for run, job in zip(runs, jobs)}
    if executor.cluster == "debug":
        for job in jobs:
            job.result()
        return ids
    for run, job in zip(runs, jobs):
        record = {"cluster": executor.cluster, "job_id": job.job_id, "host": socket.gethostname(),
                  "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (Path(run.folder) / JOB_FILE).write_text(json.dumps(record) + "\n")
    return ids


# ----------------------------------------------------------------------------------------- tables
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


def last_logged(folder: Path) -> Tuple[str, str]:
    """(step, "name=value ...") of the run's last report in metrics.jsonl (the trainer writes one JSON
    object per logged step; loss terms sorted by name), or ("-", "-") before the first one."""
    try:
        lines = (folder / METRICS_FILE).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "-", "-"
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed run may be cut short
        losses = " ".join(f"{key[len('loss/'):]}={value:.4g}" for key, value in sorted(record.items())
                          if key.startswith("loss/") and isinstance(value, (int, float)))
        return str(record.get("step", "-")), losses or "-"
    return "-", "-"


def status_table(sweep_dir: Path) -> str:
    records = sorted(p for p in Path(sweep_dir).glob(f"*/{RUN_FILE}"))
    if not records:
        raise SweepError(f"{sweep_dir}: no runs of a sweep here (no */{RUN_FILE}); is it the --sweep-dir of a submitted sweep?")
    rows, counts = [], {}
    for record in records:
        run = json.loads(record.read_text())
        folder = record.parent
        state = run_state(folder, run["max_steps"])
        counts[state] = counts.get(state, 0) + 1
        rows.append([run["name"], state, *last_logged(folder), str(folder)])
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return table(["RUN", "STATE", "STEP", "LOSS", "FOLDER"], rows) + f"\n{len(rows)} runs: {summary}"


# ----------------------------------------------------------------------------------------- CLI
def shared_overrides(items: Sequence[str]) -> List[str]:
    """The positional `key=value` overrides every run shares; a value list there is a grid mistyped as one."""
    for item in items:
        key, _, value = item.partition("=")
        if "," in value and value.strip()[:1] not in ("[", "{", "'", '"'):
            raise SweepError(f"override {item!r}: a shared override takes one value (the same in every run); "
                             f"to sweep {key} over {value}, write --grid {item}")
    return list(items)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{submit,status}")
    p = commands.add_parser("submit", help="plan the grid's runs; submit those not done, queued or running",
                            description="Plan one run per point of the grid's product and submit, as one job array, "
                                        "the runs that are not done, queued or running.")
    p.add_argument("--config", required=True, help="run config YAML every run starts from")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="one key and the values to sweep it over; repeat --grid for more keys "
                        "(the runs are the product)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides shared by every run")
    p.add_argument("--sweep-dir", help="where the run folders go (default runs/sweeps/<config name>)")
    p.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None,
                   help="default: slurm where sbatch exists, else local; debug trains in this process")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int, default=0, help="processes per node (default: GPUs per node, or 1)")
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--partition")
    p.add_argument("--time", type=int, default=24 * 60, help="time limit per job, minutes")
    p.add_argument("--max-parallel", type=int, default=64, help="array jobs running at once")
    p.add_argument("--max-requeues", type=int, default=20, help="preemption requeues per job")
    p.add_argument("--dry-run", action="store_true", help="print the plan, submit nothing")
    s = commands.add_parser("status", help="each run's state, last logged step and losses",
                            description="Each run's state, last logged step and losses (metrics.jsonl), and folder.")
    s.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the --sweep-dir of a submitted sweep")
    return parser


def submit_command(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir or Path("runs") / "sweeps" / Path(args.config).stem)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"--sweep-dir {sweep_dir}: is a file (expected a folder for the run folders, or a new path)")
    fixed = shared_overrides(args.overrides)
    runs = plan_runs(args.config, parse_grid(args.grid), fixed, sweep_dir, args.max_requeues)
    states = {run.name: run_state(Path(run.folder), run.max_steps) for run in runs}
    actions = {run.name: action(states[run.name], Path(run.folder)) for run in runs}
    todo = [run for run in runs if actions[run.name] != "skip"]
    ids = {} if args.dry_run else submit(todo, args, sweep_dir)
    rows = [[run.name, states[run.name], actions[run.name], ids.get(run.name, "-"),
             " ".join(run.overrides[len(fixed):]), run.folder] for run in runs]
    print(table(["RUN", "STATE", "ACTION", "JOB", "GRID", "FOLDER"], rows))
    verb = "would submit" if args.dry_run else "submitted"
    print(f"{len(runs)} runs in {sweep_dir}: {verb} {len(todo)}, skipped {len(runs) - len(todo)}")
    if todo and not args.dry_run:
        print(f"progress: {PROG} status {sweep_dir}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """0 once submitted (or planned, or the status printed); a bad grid, config or folder raises a UserError."""
    args = build_parser().parse_args(argv)
    if args.command == "status":
        print(status_table(Path(args.sweep_dir)))
        return 0
    return submit_command(args)


entry = console_script(main, PROG)


if __name__ == "__main__":
    from launch.sweep import entry as _entry  # the module, not __main__, so that jobs pickle by reference

    _entry()
