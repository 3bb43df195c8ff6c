"""One way to reach shard storage: local folders and `s3://` prefixes, through fsspec (s3fs for S3).

S3 endpoint and credentials come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ...) unless `storage_options`
(s3fs keyword arguments, e.g. from the run config's `data.storage_options`) say otherwise.

Writes are all-or-nothing for readers: a local file is written under a temporary name and
`os.replace`d; an S3 object only becomes visible when its PUT (or multipart upload) completes.

s3fs holds sockets and an event loop, so filesystems are created lazily in the process that uses
them (fsspec caches instances per process id).
"""
from __future__ import annotations

import hashlib
import os
import posixpath
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Tuple

import fsspec

from mars_dist.io.atomic import atomic_write_bytes

READ_BLOCK_BYTES = 8 << 20  # large sequential reads: shards are streamed front to back
HASH_CHUNK_BYTES = 4 << 20


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join(url: str, *names: str) -> str:
    """`url/name/...` for a local folder or an s3:// prefix (no OS-specific separators in S3 keys)."""
    if is_s3(url):
        return posixpath.join(url.rstrip("/"), *names)
    return os.path.join(url, *names)


def resolve_storage_options(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """fsspec options for `url`: explicit options win; for S3 the endpoint falls back to AWS_ENDPOINT_URL.

    Listing caches are off for S3 because the sharder checks objects it has just written.
    """
    options = dict(storage_options or {})
    if not is_s3(url):
        return options
    client_kwargs = dict(options.get("client_kwargs") or {})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
        options["endpoint_url"] = endpoint
    options.setdefault("use_listings_cache", False)
    return options


def io_loop_alive() -> bool:
    """Whether fsspec's event loop (the one every sync s3fs call waits on) still has its IO thread.

    A call on a loop that no thread runs any more waits forever inside fsspec.asyn.sync (it only
    checks that the loop is not closed). Seen once in a forked DataLoader worker."""
    import fsspec.asyn

    thread = fsspec.asyn.iothread[0]
    return thread is None or thread.is_alive()


def revive_io_loop() -> bool:
    """If fsspec's IO thread is gone: start afresh (a new loop on the next call) and forget every
    cached filesystem, since each one is bound to the dead loop. Returns whether it had to."""
    if io_loop_alive():
        return False
    import fsspec.asyn

    fsspec.asyn.reset_lock()
    for cls in _filesystem_classes():
        cls.clear_instance_cache()
    return True


def _filesystem_classes() -> List[type]:
    """Every fsspec filesystem class that was ever instantiated here (the instance cache is per class)."""
    from fsspec.registry import registry

    return [cls for cls in registry.values() if isinstance(cls, type)]


def url_to_fs(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> Tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or an s3:// URL (never one bound to a dead event loop)."""
    revive_io_loop()
    return fsspec.core.url_to_fs(url, **resolve_storage_options(url, storage_options))


def open_url(url: str, mode: str = "rb", storage_options: Optional[Mapping[str, Any]] = None) -> BinaryIO:
    """Open a file for reading (or non-atomic writing); S3 reads use large read-ahead blocks."""
    if not is_s3(url):
        return open(url, mode)
    fs, path = url_to_fs(url, storage_options)
    if "r" in mode:
        return fs.open(path, mode, block_size=READ_BLOCK_BYTES, cache_type="readahead")
    return fs.open(path, mode)


def exists(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> bool:
    fs, path = url_to_fs(url, storage_options)
    return fs.exists(path)


def size(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> int:
    fs, path = url_to_fs(url, storage_options)
    return int(fs.size(path))


def list_names(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Base names of the files directly under a folder / prefix ([] when it does not exist)."""
    fs, path = url_to_fs(url, storage_options)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def makedirs(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Create a local folder (S3 has no folders: a prefix exists once an object is under it)."""
    if not is_s3(url):
        os.makedirs(url, exist_ok=True)


def remove(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Delete a file if it exists."""
    fs, path = url_to_fs(url, storage_options)
    if fs.exists(path):
        fs.rm_file(path)


def read_bytes(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> bytes:
    if not is_s3(url):
        with open(url, "rb") as f:
            return f.read()
    fs, path = url_to_fs(url, storage_options)
    return fs.cat_file(path)


def sha256_of(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> str:
    """Hex sha256 of a file's content, streamed (shards need not fit in memory)."""
    digest = hashlib.sha256()
    with open_url(url, "rb", storage_options) as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bytes_atomic(url: str, data: bytes, storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Write a whole file so that readers see either the old content or the new one, never a part
    (local: mars_dist.io.atomic, the one writer; S3: one PUT)."""
    if is_s3(url):
        fs, path = url_to_fs(url, storage_options)
        fs.pipe_file(path, data)
        return
    atomic_write_bytes(url, data)


def _new_file_mode() -> int:
    """What open() would give a new file (0o666 minus the umask); mkstemp's 0o600 would hide shards."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def commit_file(tmp_path: str, url: str, storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Move a finished local temporary file to `url` atomically, then check the stored size.

    Local: `os.replace` (write the temporary file in the destination folder so the rename stays on
    one filesystem). S3: upload, after which the object appears whole; the temporary is removed.
    """
    expected = os.path.getsize(tmp_path)
    if is_s3(url):
        fs, path = url_to_fs(url, storage_options)
        try:
            fs.put_file(tmp_path, path)
        finally:
            os.remove(tmp_path)
    else:
        os.chmod(tmp_path, _new_file_mode())
        os.replace(tmp_path, url)
    stored = size(url, storage_options)
    if stored != expected:
        raise OSError(f"{url}: {stored} bytes stored, expected {expected}")
