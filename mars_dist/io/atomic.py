"""The one atomic file writer: write beside the target under a temporary name, fsync, then rename.

A reader (or a resumed run) sees either the old file or the complete new one, never a torn write,
even when the writer is SIGKILLed midway. New files get the mode a plain open() would give them
(0o666 minus the umask): on a shared cluster, teammates read each other's checkpoints, exports and
samples. Every writer in mars_dist and data_tools goes through here.
"""
from __future__ import annotations

import io
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, os.PathLike]


def _temporary_beside(path: Path) -> Path:
    """A fresh name in the target's folder (same file system, so the rename is atomic), created
    with O_EXCL and mode 0o666 so the umask applies as it does for open()."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: could not create a temporary file for {path.name}")


def atomic_write(path: PathLike, write: Callable[[str], Any]) -> None:
    """Calls `write(tmp_path)` to produce the content, then fsyncs and renames it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what open() gives a new file here (0o666 minus the umask)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)  # some writers (safetensors) recreate the file with their own mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """torch.save through the atomic writer (serialised in memory first: the file appears whole)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def fsync_dir(path: PathLike) -> None:
    """Makes a rename or a new file in `path` durable (the directory entry itself is fsync'd)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
