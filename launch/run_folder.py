"""One job per run folder: the lock that slurm/*.sh and launch/sweep.py take before training into it.

The lock is the file RUN_DIR/LOCK naming its owner, a Slurm job id (or a process where there is no
Slurm). Not flock: a requeued job must keep its folder while it waits in the queue with no process
alive, and the next start of the same job (same id) gets it back. A lock whose owner has ended
(COMPLETED, FAILED, CANCELLED, ... or purged by Slurm; a dead process) is stale and is taken over.

Command line, for slurm/_common.sh (errors are one `error:` line and exit status 2):
    python -m launch.run_folder prepare --job ID --config C.yaml -- [key=value ...]   # prints the run folder
    python -m launch.run_folder prepare --job ID --run-dir DIR
    python -m launch.run_folder release --job ID DIR
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

LOCK_FILE = "LOCK"
PREEMPTED_MARKER = "PREEMPTED"  # the engine's marker file (a string here: this module imports no torch and starts fast)
# Slurm job states after which a job never runs again (`scontrol show job` JobState).
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "TIMEOUT"}


class RunLockedError(RuntimeError):
    """The run folder belongs to another live job; the message names the folder and the job."""


@dataclass(frozen=True)
class Owner:
    """Who holds a run folder: kind "slurm" (id = job id, "123" or "123_4") or "process" (id = "host:pid")."""

    kind: str
    id: str

    @classmethod
    def current(cls) -> "Owner":
        """This Slurm job; else the submitit local job (every task of it); else this process."""
        if os.environ.get("SLURM_JOB_ID"):
            return cls("slurm", os.environ["SLURM_JOB_ID"])
        pid = os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())
        return cls("process", f"{socket.gethostname()}:{pid}")

    def describe(self) -> str:
        if self.kind == "slurm":
            return f"Slurm job {self.id}"
        if self.kind == "damaged":
            return "an unreadable LOCK file (remove it if no job uses the folder)"
        host, _, pid = self.id.rpartition(":")
        return f"process {pid} on {host}"

    def state(self) -> Optional[str]:
        """Slurm's JobState for a job ("RUNNING", "PENDING", ...; None once purged); "RUNNING" or None for a process.

        Where it cannot be checked (scontrol failing, a process on another host) the owner is taken
        to be running: refusing a free folder is recoverable, two writers in one folder are not.
        """
        if self.kind == "slurm":
            return slurm_job_state(self.id)
        if self.kind == "damaged":
            return "UNKNOWN"
        host, _, pid = self.id.rpartition(":")
        if host != socket.gethostname():
            return "RUNNING"
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "RUNNING"

    def alive(self) -> bool:
        state = self.state()
        return state is not None and state not in ENDED_STATES


DAMAGED_LOCK = Owner("damaged", "")


def slurm_job_state(job_id: str) -> Optional[str]:
    """JobState of a Slurm job, None when Slurm no longer knows it; "UNKNOWN" when scontrol cannot tell."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    if out.returncode != 0:
        return None if "Invalid job id" in out.stderr else "UNKNOWN"
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"


def lock_holder(run_dir: Path) -> Optional[Owner]:
    """The owner named in RUN_DIR/LOCK (alive or not), or None when there is no lock."""
    return _read_owner(Path(run_dir) / LOCK_FILE)


def _read_owner(path: Path) -> Optional[Owner]:
    try:
        data = json.loads(path.read_text())
        return Owner(data["owner"]["kind"], data["owner"]["id"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return DAMAGED_LOCK


def acquire(run_dir: Path, owner: Owner) -> None:
    """Takes RUN_DIR/LOCK for `owner`, or raises RunLockedError if another live owner holds it.

    Idempotent for one owner (every rank of a job, and every start of a requeued job, may call it).
    The lock appears by an atomic hard link of a complete file, so readers never see it half written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_FILE
    mine = run_dir / f".{LOCK_FILE}.{uuid.uuid4().hex}"
    mine.write_text(json.dumps({"owner": {"kind": owner.kind, "id": owner.id}, "host": socket.gethostname(),
                                "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    try:
        for _ in range(10):  # only lost races with other takers loop
            try:
                os.link(mine, lock)
                return
            except FileExistsError:
                pass
            holder = lock_holder(run_dir)
            if holder == owner:
                return
            if holder is None:
                continue  # released meanwhile
            state = holder.state()
            if state is not None and state not in ENDED_STATES:
                raise RunLockedError(
                    f"run directory {run_dir} is in use by {holder.describe()} ({state}): two jobs must not "
                    f"write one run folder; wait for it to end, cancel it, or choose another run_dir")
            _take_stale(run_dir, holder)
        raise RunLockedError(f"run directory {run_dir}: could not take {lock} (other jobs keep taking it)")
    finally:
        mine.unlink(missing_ok=True)


def _take_stale(run_dir: Path, stale: Owner) -> None:
    """Moves a dead owner's lock aside; if a racing taker replaced it meanwhile, puts that one back."""
    lock, aside = run_dir / LOCK_FILE, run_dir / f".{LOCK_FILE}.stale.{uuid.uuid4().hex}"
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if _read_owner(aside) != stale:
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def release(run_dir: Path, owner: Owner) -> bool:
    """Removes RUN_DIR/LOCK if `owner` holds it; True if it did."""
    if lock_holder(run_dir) != owner:
        return False
    (Path(run_dir) / LOCK_FILE).unlink(missing_ok=True)
    return True


def prepare(job: str, config: Optional[str], run_dir: Optional[str], overrides: List[str]) -> Path:
    """The start of a Slurm job: resolve the config (if any), lock the run folder, record the resolved config.

    Also removes a PREEMPTED marker left by an earlier start, so that this start counts as preempted
    only if it is preempted itself (a crash must not be mistaken for a preemption and requeue forever).
    """
    cfg = None
    if config is not None:
        from mars_dist.config import load_config  # only here: the release path stays quick

        cfg = load_config(config, overrides)
        run_dir = cfg.run_dir
    folder = Path(run_dir).absolute()
    acquire(folder, Owner("slurm", job))
    (folder / PREEMPTED_MARKER).unlink(missing_ok=True)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        from mars_dist.config import save_config

        save_config(cfg, folder / "logs" / f"slurm-{job}.config.yaml")
    return folder


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.run_folder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="lock the run folder of a job and record its resolved config; prints the folder")
    p.add_argument("--job", required=True, help="Slurm job id")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="run config; the run folder is its run_dir (after the overrides)")
    where.add_argument("--run-dir", help="the run folder itself")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    r = sub.add_parser("release", help="unlock a run folder held by this job")
    r.add_argument("--job", required=True)
    r.add_argument("run_dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare(args.job, args.config, args.run_dir, args.overrides))
        else:
            release(Path(args.run_dir), Owner("slurm", args.job))
    except (RunLockedError, ValueError, OSError) as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
