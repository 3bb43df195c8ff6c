"""The sharder's output location: its files, and one-line errors for file-system and S3 problems.

mars_dist.data.fs raises what the OS, s3fs and botocore raise (FileExistsError, FileNotFoundError
for a missing bucket, EndpointConnectionError), none of which names the URL the user gave; here
they become a `StorageError` that names it and the cause. The sharder owns only the names it
writes (shards, sidecars, the manifest and their temporaries), so cleaning up never touches a
file it did not make.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterable, Iterator, List, Mapping, Optional

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from mars_dist.data import fs

_SHARD_FILE = re.compile(r"^shard-\d{6}\.(tar|index\.json)$")
_TEMPORARY = re.compile(r"^\.(shard-\d{6}\.(tar|index\.json)|manifest\.json)\..+\.tmp$")
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)


class StorageError(RuntimeError):
    """The output location cannot be used; the message names the URL and the cause."""


def is_temporary(name: str) -> bool:
    """A staging file of a sharding run (a finished run leaves none)."""
    return bool(_TEMPORARY.match(name))


def is_owned(name: str) -> bool:
    """A file name the sharder writes: shard tars and sidecars, and the temporaries of these and of the manifest."""
    return bool(_SHARD_FILE.match(name)) or is_temporary(name)


def _endpoint(url: str, storage_options: Optional[Mapping[str, Any]]) -> str:
    options = fs.resolve_storage_options(url, storage_options)
    return options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url") or "AWS's default"


def describe(exc: BaseException, url: str, storage_options: Optional[Mapping[str, Any]] = None) -> str:
    """`URL: cause` in one line for an error met while using the output location `url`."""
    if isinstance(exc, EndpointConnectionError):
        return f"{url}: cannot reach the S3 endpoint {_endpoint(url, storage_options)} ({exc})"
    if isinstance(exc, NoCredentialsError):
        return f"{url}: no S3 credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or data.storage_options)"
    if fs.is_s3(url) and isinstance(exc, FileNotFoundError) and "bucket" in str(exc).lower():
        bucket = url[len("s3://"):].split("/", 1)[0]
        return f"{url}: bucket {bucket!r} does not exist at S3 endpoint {_endpoint(url, storage_options)}"
    if isinstance(exc, FileExistsError):
        return f"{url}: exists and is not a folder (expected a folder or a new path)"
    if isinstance(exc, NotADirectoryError):
        return f"{url}: part of the path is a file, not a folder"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{url}: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{url}: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def storage_errors(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> Iterator[None]:
    """Turn OS / S3 errors raised inside into a StorageError naming `url` (picklable, unlike botocore's)."""
    try:
        yield
    except STORAGE_ERRORS as exc:
        raise StorageError(describe(exc, url, storage_options)) from exc


def list_names(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Base names of the files directly under a folder / prefix ([] if there are none yet).

    Unlike fs.list_names, a missing bucket is an error here, not an empty prefix.
    """
    if not fs.is_s3(url):
        return sorted(os.listdir(url)) if os.path.exists(url) else []
    filesystem, path = fs.url_to_fs(url, storage_options)
    return sorted(os.path.basename(p) for p in filesystem.find(path, maxdepth=1))


def prepare_output(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Check that `url` can hold shards (creating a local folder), before any work: StorageError if not."""
    with storage_errors(url, storage_options):
        fs.makedirs(url, storage_options)
        list_names(url, storage_options)


def remove_temporaries(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Staging files of an earlier or a failed run (S3 stages locally, so only folders have them)."""
    if fs.is_s3(url):
        return
    with storage_errors(url, storage_options):
        for name in list_names(url, storage_options):
            if is_temporary(name):
                fs.remove(fs.join(url, name), storage_options)


def remove_unlisted(url: str, keep: Iterable[str], storage_options: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Delete the sharder's files under `url` that are not in `keep` (call only once the manifest is committed).

    What another plan left (more shards, other shard sizes) would otherwise sit beside the new
    manifest, and a plain `shard-*.tar` glob would read it twice. Returns the names removed.
    """
    keep = set(keep)
    with storage_errors(url, storage_options):
        stale = [name for name in list_names(url, storage_options) if is_owned(name) and name not in keep]
        for name in stale:
            fs.remove(fs.join(url, name), storage_options)
    return stale
