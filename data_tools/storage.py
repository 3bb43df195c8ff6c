"""The sharder's output location and its files, and the one-line errors the data tools give for file-system
and S3 problems.

mars_dist.data.fs raises what the OS, s3fs and botocore raise (FileExistsError, FileNotFoundError
for a missing bucket, EndpointConnectionError), none of which names the URL the user gave; here
they become a `StorageError` that names it and the cause, as does an S3 option s3fs would refuse
only at its first request. The sharder owns only the names it writes (shards, sidecars, the
manifest and their temporaries), so cleaning up never touches a file it did not make.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

import yaml
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from mars_dist.data import fs
from mars_dist.errors import UserValueError

_SHARD_FILE = re.compile(r"^shard-\d{6}\.(tar|index\.json)$")
_TEMPORARY = re.compile(r"^\.(shard-\d{6}\.(tar|index\.json)|manifest\.json)\..+\.tmp$")
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)


class StorageError(UserValueError):
    """A location (an output, a shard set to inspect) cannot be used; the message names the URL and the cause."""


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
        where = url if not exc.filename or str(exc.filename) == url else f"{url}: {exc.filename}"
        return f"{where}: exists and is not a folder (expected a folder or a new path)"
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


# fsspec's listing-cache and instance-cache options, which s3fs takes through **kwargs.
_FSSPEC_OPTIONS = {"use_listings_cache": True, "listings_expiry_time": None, "max_paths": None,
                   "skip_instance_cache": False}


@functools.lru_cache(maxsize=1)
def s3_option_defaults() -> Dict[str, Any]:
    """{option: default} of every storage option an s3:// location takes: s3fs.S3FileSystem's own, fsspec's
    caches', and the aiobotocore session's (s3fs hands it the options it does not know, which fail there)."""
    from aiobotocore.session import AioSession
    from s3fs import S3FileSystem

    defaults = dict(_FSSPEC_OPTIONS)
    for init in (S3FileSystem.__init__, AioSession.__init__):
        for name, param in inspect.signature(init).parameters.items():
            if param.kind is param.KEYWORD_ONLY or param.kind is param.POSITIONAL_OR_KEYWORD:
                defaults[name] = param.default
    for internal in ("self", "loop", "asynchronous", "session"):
        defaults.pop(internal, None)
    return defaults


def storage_option_value(key: str, text: str) -> Any:
    """The value of `--storage-option KEY=TEXT` as the option takes it: YAML for flags, numbers and the
    *_kwargs mappings (anon=true, config_kwargs={read_timeout: 5}), the text itself for the rest (keys, URLs)."""
    default = s3_option_defaults().get(key)
    if not (key.endswith("_kwargs") or isinstance(default, (bool, int, float))):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # check_storage_options names what was expected


def check_storage_options(url: str, storage_options: Optional[Mapping[str, Any]]) -> None:
    """StorageError naming the first option an s3:// `url` would refuse (an unknown name, a flag that is not
    true/false, a *_kwargs that is not a mapping); local paths take no options that matter."""
    if not fs.is_s3(url):
        return
    defaults = s3_option_defaults()
    for key, value in (storage_options or {}).items():
        if key not in defaults:
            raise StorageError(f"{url}: storage option {key!r} is not one s3fs takes (expected one of "
                               f"{', '.join(sorted(defaults))})")
        if key.endswith("_kwargs") and value is not None and not isinstance(value, Mapping):
            raise StorageError(f"{url}: storage option {key}={value!r}: expected a mapping, e.g. "
                               f"{key}={{read_timeout: 5}}")
        if isinstance(defaults[key], bool) and not isinstance(value, bool):
            raise StorageError(f"{url}: storage option {key}={value!r}: expected true or false")


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
    check_storage_options(url, storage_options)
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
