"""Fingerprints of the files a shard is made from, so a re-run rewrites exactly the shards whose input changed.

A shard's completion record stores, for each of its notes (skipped ones too), the audio file's size,
mtime_ns and sha256, taken by the worker that wrote the shard, stat before read: a change made while
it was reading shows up next time. A re-run compares size + mtime_ns (one stat per note, fast on
NSynth's 289k files) or, with `verify_content`, size + sha256 (reads every file: it catches a
rewrite that kept size and mtime, and keeps the shards of a copy whose mtimes all changed, recording
the new mtimes so that the next default run keeps them too).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from mars_dist.data import fs

Fingerprint = Optional[Dict[str, Any]]  # None: the file does not exist (or cannot even be stat'ed)


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


def _sha256(path: str) -> Optional[str]:
    try:
        return fs.sha256_of(path)
    except OSError:
        return None  # unreadable: the note fails to load, and the record says so until the file changes


def fingerprint(path: str) -> Fingerprint:
    """What a completion record stores about the input file at `path` (stat taken before the content is read)."""
    stat = _stat(path)
    if stat is None:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def _same(recorded: Any, now: Fingerprint, fields: Tuple[str, ...]) -> bool:
    if recorded is None or now is None:
        return recorded is None and now is None
    return isinstance(recorded, dict) and all(recorded.get(name) == now[name] for name in fields)


def check(recorded: Any, path: str, verify_content: bool) -> Tuple[bool, Fingerprint]:
    """(whether the file at `path` is still the one `recorded` describes, what to record from now on).

    By size + mtime_ns, or with verify_content by size + sha256; then the answer carries the file's
    current mtime, so a later default check of a touched or copied file that hashed the same passes.
    """
    if verify_content:
        now = fingerprint(path)
        return _same(recorded, now, ("size", "sha256")), now
    stat = _stat(path)
    now = None if stat is None else {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return _same(recorded, now, ("size", "mtime_ns")), recorded
