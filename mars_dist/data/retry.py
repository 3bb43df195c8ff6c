"""One retry policy for reads from object stores: exponential backoff with full jitter.

Why our own loop rather than botocore's and s3fs's: theirs retry one HTTP request, but a shard
can also fail after its response began (a connection reset mid-body) or arrive with the wrong
sha256, and the two libraries' loops stack (up to 5 x 5 tries, without jitter) and hide from the
caller that the store is throttling. Readers of mars_dist.data turn the libraries' retries off
(mars_dist.data.remote) and wrap each whole object in `with_retries`, so every fault is counted,
backs off with jitter (ranks that were throttled together do not come back together) and, after
`attempts` tries, fails with an error naming the object and the last cause.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


@dataclass
class RetryConfig:
    attempts: int = 8  # tries per object, the first included
    base_delay_s: float = 0.2  # the sleep before try k+1 is uniform in [0, min(max_delay_s, base_delay_s * 2**k)]
    max_delay_s: float = 10.0
    request_timeout_s: float = 300.0  # one request (a whole shard's GET included) fails as transient after this

    def check(self) -> None:
        if self.request_timeout_s <= 0:
            raise ValueError(f"data.retry.request_timeout_s={self.request_timeout_s}: expected > 0 seconds")
        if self.attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(f"data.retry.attempts={self.attempts}, base_delay_s={self.base_delay_s}, "
                             f"max_delay_s={self.max_delay_s}: expected attempts >= 1 and "
                             "0 <= base_delay_s <= max_delay_s")

    def delay(self, failures: int, rng: random.Random) -> float:
        """Full jitter after `failures` failed tries (1, 2, ...)."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (failures - 1)))


class FetchError(OSError):
    """An object could not be read after every allowed try; the message names it and the last cause."""


def describe_error(exc: BaseException) -> str:
    """`Type: message`, followed by the root cause when the library wrapped one."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text


_jitter = random.Random()  # timing only: jitter need not be reproducible, and must differ between ranks


def with_retries(fn: Callable[[], T], *, what: str, config: RetryConfig,
                 transient: Callable[[BaseException], bool],
                 on_retry: Optional[Callable[[int, BaseException], None]] = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """fn(), tried up to `config.attempts` times while it fails with a transient error.

    A non-transient error (a missing object, denied access, a bug) is raised at once, unchanged.
    `on_retry(failures, exc)` is called before each backoff, e.g. to count retries.
    """
    failures = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified right below
            failures += 1
            if not transient(exc):
                raise
            if failures >= config.attempts:
                raise FetchError(f"{what}: failed {failures} times, giving up; last error: "
                                 f"{describe_error(exc)}") from exc
            if on_retry is not None:
                on_retry(failures, exc)
            sleep(config.delay(failures, _jitter))
