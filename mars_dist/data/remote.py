"""Reads of one shard set on remote storage (s3://) with the retry policy of mars_dist.data.retry.

The filesystem used here has botocore's and s3fs's own retries turned off, so that every fault
reaches `with_retries`: throttling (503 SlowDown and friends), connection resets and truncated
bodies, timeouts, 5xx errors and checksum mismatches are retried with backoff and counted;
anything else (a missing key, denied access) fails at once. A whole-shard download is verified
against the manifest's size and sha256 before it may enter the cache; a mismatch is one more
transient failure, so the shard is fetched again.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from mars_dist.data import fs as storage
from mars_dist.data.io_stats import IOCounters
from mars_dist.data.retry import RetryConfig, with_retries

log = logging.getLogger(__name__)
HASH_CHUNK_BYTES = 4 << 20
# S3 error codes that mean "try again later", as botocore's own retry handler classifies them
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
                    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
                    "ProvisionedThroughputExceededException", "BandwidthLimitExceeded", "RequestTimeout",
                    "RequestTimeoutException", "PriorRequestNotComplete", "InternalError", "ServiceUnavailable"}
_TRANSIENT_ERRNOS = {errno.EBUSY, errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE,
                     errno.ETIMEDOUT, errno.EAGAIN}


class ChecksumMismatch(OSError):
    """A downloaded object's size or sha256 differs from the manifest's (transient: fetch it again)."""


def _transient_types() -> tuple:
    import aiohttp
    import botocore.exceptions as bx
    from fsspec.exceptions import FSTimeoutError

    return (ChecksumMismatch, TimeoutError, ConnectionError, FSTimeoutError, aiohttp.ClientPayloadError,
            aiohttp.ClientConnectionError, bx.HTTPClientError, bx.IncompleteReadError, bx.ResponseStreamingError,
            bx.FlexibleChecksumError, bx.ConnectionError)


def _chain(exc: Optional[BaseException], depth: int = 8) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from (s3fs wraps botocore's, which wrap aiohttp's)."""
    while exc is not None and depth > 0:
        yield exc
        exc, depth = exc.__cause__ or exc.__context__, depth - 1


def _is_request_timeout(exc: BaseException) -> bool:
    """Whether a try was cut off by our own per-request bound (fsspec's sync timeout), not by botocore's
    connect/read timeouts: a request that made no progress at all."""
    from fsspec.exceptions import FSTimeoutError

    return any(isinstance(e, FSTimeoutError) for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """Whether a failed read is worth retrying: walks the exception chain s3fs builds around botocore's."""
    types = _transient_types()
    for exc in _chain(exc):
        if isinstance(exc, types):
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
            if code in _TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
                return True
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS and not isinstance(exc, FileNotFoundError):
            return True
    return False


def _on_current_io_loop(fs) -> bool:
    """Whether `fs` is bound to fsspec's current event loop (not to one a revive replaced)."""
    import fsspec.asyn

    return fs is not None and getattr(fs, "_loop", None) is fsspec.asyn.loop[0]


def no_retry_options(url: str, storage_options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """fsspec options for `url` with botocore's retries off (s3fs's are turned off on the instance)."""
    options = storage.resolve_storage_options(url, storage_options)
    config_kwargs = dict(options.get("config_kwargs") or {})
    config_kwargs["retries"] = {"mode": "standard", "total_max_attempts": 1}
    options["config_kwargs"] = config_kwargs
    return options


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RemoteShardSet:
    """Objects under one s3:// prefix, each read under one retry policy; usable in any process.

    The filesystem is created lazily per process (s3fs holds sockets and an event loop that
    must not cross a fork), so instances can live in a Dataset that DataLoader workers inherit.
    """

    def __init__(self, url: str, storage_options: Optional[Mapping[str, Any]], retry: RetryConfig,
                 counters: Optional[IOCounters] = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retry = retry
        self.counters = counters
        self._fs, self._root, self._fs_pid = None, None, None

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_fs": None, "_root": None, "_fs_pid": None}

    @property
    def _timeout(self) -> float:
        return self.retry.request_timeout_s

    def _filesystem(self):
        """This process's filesystem, rebuilt after a fork and whenever fsspec's IO thread is gone.

        A call on a filesystem whose event loop no thread runs would wait forever (seen once in a
        forked DataLoader worker); with the per-request timeout it fails as a transient error, and
        the retry gets a filesystem on a fresh loop here."""
        storage.revive_io_loop()  # a revive replaces the loop, so the check below then rebuilds
        if self._fs_pid != os.getpid() or not _on_current_io_loop(self._fs):
            import fsspec

            options = no_retry_options(self.url, self.storage_options)
            protocol, root = fsspec.core.split_protocol(self.url)
            self._fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
            self._fs.retries = 1  # s3fs's own loop: one try, the retries are ours
            self._root = self._fs._strip_protocol(self.url)
            self._fs_pid = os.getpid()
        return self._fs, self._root

    def _count(self, field: str, amount: int = 1) -> None:
        if self.counters is not None:
            self.counters.add(field, amount)

    def _on_retry(self, what: str, exc: BaseException) -> None:
        self._count("retries")
        if _is_request_timeout(exc):
            self._count("request_timeouts")
            log.warning("%s: a request made no progress for data.retry.request_timeout_s=%s s; retrying",
                        what, self._timeout)

    def _retrying(self, fn, what: str):
        try:
            return with_retries(fn, what=what, config=self.retry, transient=is_transient,
                                on_retry=lambda failures, exc: self._on_retry(what, exc))
        except (FileNotFoundError, PermissionError) as exc:  # s3fs's messages do not always name the object
            raise type(exc)(f"{what}: {exc}") from exc

    def where(self, name: str) -> str:
        return storage.join(self.url, name)

    def read(self, name: str) -> bytes:
        """One whole (small) object: the manifest, a sidecar."""
        fs, root = self._filesystem()
        self._count("metadata_reads")
        return self._retrying(lambda: self._filesystem()[0].cat_file(f"{root}/{name}", max_concurrency=1, timeout=self._timeout),
                              self.where(name))

    def read_many(self, names: Sequence[str]) -> List[bytes]:
        """Several small objects, fetched concurrently; the ones that failed are retried one by one."""
        fs, root = self._filesystem()
        paths = [f"{root}/{name}" for name in names]
        self._count("metadata_reads", len(paths))
        try:
            blobs = fs.cat(paths, on_error="return", max_concurrency=1, timeout=self._timeout)
        except Exception as exc:  # the whole batch timed out or its loop is gone: each one is retried below
            if not is_transient(exc):
                raise
            blobs = {}
        out = []
        for name, path in zip(names, paths):
            blob = blobs.get(path)
            if not isinstance(blob, bytes):
                if isinstance(blob, (FileNotFoundError, PermissionError)):
                    raise type(blob)(f"{self.where(name)}: {blob}") from blob
                if isinstance(blob, BaseException) and not is_transient(blob):
                    raise blob
                self._count("retries")
                blob = self._retrying(lambda p=path: self._filesystem()[0].cat_file(p, max_concurrency=1, timeout=self._timeout),
                                      self.where(name))
            out.append(blob)
        return out

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of one object: one ranged GET (the random-access path)."""
        fs, root = self._filesystem()
        self._count("ranged_reads")
        return self._retrying(lambda: self._filesystem()[0].cat_file(f"{root}/{name}", start=start, end=end, timeout=self._timeout),
                              self.where(name))

    def download(self, name: str, dest: str, expected_bytes: int, expected_sha256: str) -> None:
        """The whole object into the local file `dest`, verified; one streamed GET per try."""
        fs, root = self._filesystem()

        def one_try() -> None:
            self._filesystem()[0].get_file(f"{root}/{name}", dest, max_concurrency=1, timeout=self._timeout)
            got = os.path.getsize(dest)
            if got != expected_bytes:
                raise ChecksumMismatch(f"{got} bytes downloaded, the manifest says {expected_bytes}")
            digest = sha256_file(dest)
            if digest != expected_sha256:
                raise ChecksumMismatch(f"sha256 {digest} downloaded, the manifest says {expected_sha256}")

        self._retrying(one_try, self.where(name))
        self._count("downloads")
        self._count("downloaded_bytes", expected_bytes)
