"""Checkpoint folders: atomic commit after every rank wrote, keep-last-N, and choosing where to resume.

Layout (see docs/engine.md):

    run_dir/checkpoints/step-00001000/
        <the backend's files>          backend.save_checkpoint(dir), every rank
        rng-rank00000.pt ...           each rank's RNG state
        task_state.pt                  task.state_dict() (rank 0)
        config.yaml                    the resolved run config (rank 0)
        train_state.json               step, samples seen, data cursor, world size, ... (rank 0)
        COMMITTED                      written last, after the folder got its final name

A checkpoint is written under `.step-XXXXXXXX.tmp/`, renamed once every rank has finished
(barrier), and only then marked COMMITTED (fsync'd). Resume looks only at committed folders, so a
process killed at any moment leaves at worst an ignored temporary or uncommitted folder. Why a
marker on top of the rename: on network file systems and object-store mounts a directory rename is
not atomic, but the presence of one small file written last is.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from mars_dist.engine.rng import capture_rng_state
from mars_dist.errors import UserValueError
from mars_dist.io.atomic import atomic_torch_save, atomic_write_text, fsync_dir

if TYPE_CHECKING:
    from mars_dist.engine.backend import Backend

COMMITTED = "COMMITTED"
TRAIN_STATE = "train_state.json"
TASK_STATE = "task_state.pt"
CONFIG_FILE = "config.yaml"
TRAIN_STATE_FORMAT = "mars_dist.train_state/1"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(UserValueError):
    """A checkpoint that is missing, uncommitted, or not readable; the message names the folder.

    A user's mistake (a wrong --resume path, a checkpoint of another run), so the command lines
    print it as one `prog: error:` line."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_file_name(rank: int) -> str:
    return f"rng-rank{rank:05d}.pt"


def is_committed(directory: Path) -> bool:
    return (Path(directory) / COMMITTED).is_file()


def committed_checkpoints(run_dir: Path) -> List[Tuple[int, Path]]:
    """(step, folder) of every committed checkpoint of the run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and is_committed(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_resume(run_dir: Path, resume: str) -> Optional[Path]:
    """`--resume`: auto (newest committed checkpoint, or a fresh start) | none | a checkpoint folder."""
    if resume == "none":
        return None
    if resume == "auto":
        found = committed_checkpoints(run_dir)
        return found[-1][1] if found else None
    directory = Path(resume)
    if not directory.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint folder (expected auto, none or run_dir/checkpoints/step-XXXXXXXX)")
    if not is_committed(directory):
        raise CheckpointError(f"--resume {resume}: checkpoint has no {COMMITTED} marker (it was never finished); pick a committed one")
    return directory


def read_train_state(directory: Path) -> Dict[str, Any]:
    path = Path(directory) / TRAIN_STATE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {directory} is not a mars_dist checkpoint") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path}: format {state.get('format')!r}, expected {TRAIN_STATE_FORMAT!r}")
    return state


def _fsync_tree(directory: Path) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


class Checkpointer:
    """Writes, commits and prunes the checkpoints of one run. `save` is collective (every rank calls it)."""

    def __init__(self, run_dir: Path, keep_last: int, backend: "Backend"):
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last={keep_last}: must be >= 1")
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.backend = backend

    def save(self, step: int, train_state: Dict[str, Any], task_state: Dict[str, Any], config_yaml: str) -> Path:
        final = self.root / step_dir_name(step)
        tmp = self.root / f".{step_dir_name(step)}.tmp"
        backend = self.backend
        if backend.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        backend.barrier()  # the folder exists for every rank before anyone writes into it

        backend.save_checkpoint(tmp)
        atomic_torch_save(capture_rng_state(), tmp / rng_file_name(backend.rank))
        if backend.is_main:
            atomic_torch_save(task_state, tmp / TASK_STATE)
            atomic_write_text(tmp / CONFIG_FILE, config_yaml)
            atomic_write_text(tmp / TRAIN_STATE, json.dumps({"format": TRAIN_STATE_FORMAT, **train_state}, indent=1))
        backend.barrier()  # every rank's files are complete
        self._commit(step, tmp, final)
        return final

    def _commit(self, step: int, tmp: Path, final: Path) -> None:
        """Renames the complete temporary folder into place and marks it COMMITTED (rank 0), then
        prunes; every rank waits until the commit is durable. Collective."""
        backend = self.backend
        if backend.is_main:
            _fsync_tree(tmp)
            if final.exists():  # an uncommitted leftover of a crash, or an older save of this very step
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(self.root)
            atomic_write_text(final / COMMITTED, f"{step}\n")
            fsync_dir(final)
            self._prune()
        backend.barrier()  # nobody moves on (or exits) before the commit is durable

    def _prune(self) -> None:
        """Keeps the newest `keep_last` committed checkpoints; drops stale temporary folders.

        The marker goes first, so a crash halfway through a deletion leaves an uncommitted folder
        that resume ignores rather than a committed one with missing files.
        """
        for _, old in committed_checkpoints(self.root.parent)[: -self.keep_last]:
            (old / COMMITTED).unlink()
            shutil.rmtree(old)
        for stale in self.root.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
