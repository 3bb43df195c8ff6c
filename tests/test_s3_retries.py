"""S3 reads under faults: a real S3 API (moto) behind a real fault/latency proxy (mars_dist/bench/s3_fault_proxy.py).

First the proxy itself is checked to do what it is told (else the fault tests would prove
nothing). Then whole-shard downloads, small reads and ranged reads through mars_dist.data.remote
survive throttling, resets, truncation, corruption and stalls, and every injected fault is
exactly one counted retry; after the allowed tries the error names the object and the cause;
errors that retrying cannot fix fail at once.
"""
from __future__ import annotations

import hashlib
import os
import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from mars_dist.bench.s3_fault_proxy import ProxyFaults
from mars_dist.data.io_stats import IOCounters
from mars_dist.data.remote import RemoteShardSet
from mars_dist.data.retry import FetchError, RetryConfig
from tests.fixtures.s3 import proxied_options

OBJECT_BYTES = 200_000
FAST_RETRY = RetryConfig(attempts=8, base_delay_s=0.01, max_delay_s=0.05)


def _put_objects(s3_url, count, size=OBJECT_BYTES):
    bucket, _, prefix = s3_url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    objects = {}
    for i in range(count):
        data = os.urandom(size)
        client.put_object(Bucket=bucket, Key=f"{prefix}/obj-{i}.tar", Body=data)
        objects[f"obj-{i}.tar"] = data
    return objects


def _plain_client(proxy):
    """boto3 straight through the proxy, no retries: sees exactly what the proxy sends."""
    return boto3.client("s3", endpoint_url=proxy.endpoint_url, config=botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=2))


def test_the_proxy_adds_latency_caps_bandwidth_and_injects_each_fault(s3_proxy, s3_url):
    objects = _put_objects(s3_url, 1)
    bucket, _, prefix = s3_url[len("s3://"):].partition("/")
    key, data = f"{prefix}/obj-0.tar", objects["obj-0.tar"]
    client = _plain_client(s3_proxy)
    client.head_object(Bucket=bucket, Key=key)  # connects and signs once, outside the timings

    s3_proxy.set_faults(ProxyFaults(latency_s=0.2))
    start = time.perf_counter()
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert time.perf_counter() - start >= 0.2

    s3_proxy.set_faults(ProxyFaults(bandwidth_bytes_per_s=1_000_000))
    start = time.perf_counter()
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert time.perf_counter() - start >= 0.9 * OBJECT_BYTES / 1_000_000

    s3_proxy.set_faults(ProxyFaults(slowdown_rate=1.0))
    with pytest.raises(ClientError) as slowdown:
        client.get_object(Bucket=bucket, Key=key)
    assert slowdown.value.response["Error"]["Code"] == "SlowDown"
    assert slowdown.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    s3_proxy.set_faults(ProxyFaults(drop_rate=1.0))
    with pytest.raises(Exception) as dropped:
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert not isinstance(dropped.value, ClientError), "a dropped connection is not an S3 error response"

    s3_proxy.set_faults(ProxyFaults(corrupt_rate=1.0))
    body = client.get_object(Bucket=bucket, Key=key, Range="bytes=0-999")["Body"].read()  # no checksum on ranges
    assert len(body) == 1000 and sum(a != b for a, b in zip(body, data[:1000])) == 1

    s3_proxy.set_faults(ProxyFaults(stall_rate=1.0, stall_s=5))
    start = time.perf_counter()
    with pytest.raises(Exception):
        client.get_object(Bucket=bucket, Key=key)
    assert 1.5 < time.perf_counter() - start < 4.5, "a stall must end in the client's read timeout"
    stats = s3_proxy.stats()
    assert (stats["slowdown"], stats["drop"], stats["corrupt"], stats["stall"]) == (1, 1, 1, 1)


def test_downloads_and_reads_survive_every_fault_and_each_injected_fault_is_one_counted_retry(s3_proxy, s3_url,
                                                                                             tmp_path):
    objects = _put_objects(s3_url, 8)
    counters = IOCounters()
    remote = RemoteShardSet(s3_url, proxied_options(s3_proxy, read_timeout_s=0.5), FAST_RETRY, counters)
    s3_proxy.set_faults(ProxyFaults(latency_s=0.005, slowdown_rate=0.15, drop_rate=0.15, corrupt_rate=0.1,
                                    stall_rate=0.05, stall_s=2, seed=7))
    for name, data in objects.items():
        dest = str(tmp_path / name)
        remote.download(name, dest, len(data), hashlib.sha256(data).hexdigest())
        assert open(dest, "rb").read() == data
    assert remote.read_many(sorted(objects)) == [objects[n] for n in sorted(objects)]
    before = dict(s3_proxy.stats())
    # byte ranges carry no checksum (S3 has none for them): corruption is left out here
    s3_proxy.set_faults(ProxyFaults(slowdown_rate=0.2, drop_rate=0.2, stall_rate=0.05, stall_s=2, seed=8))
    for name, data in objects.items():
        assert remote.read_range(name, 1000, 3000) == data[1000:3000]
    assert s3_proxy.stats()["requests"] > before["requests"]
    stats, faults = s3_proxy.stats(), counters.snapshot()
    injected = stats["slowdown"] + stats["drop"] + stats["corrupt"] + stats["stall"]
    assert injected >= 5, f"the proxy injected too few faults to test anything: {stats}"
    assert faults["retries"] == injected, f"every injected fault must be one retry: {faults} vs {stats}"
    assert faults["downloads"] == 8 and faults["downloaded_bytes"] == 8 * OBJECT_BYTES


def test_after_the_allowed_tries_the_error_names_the_object_and_the_last_cause(s3_proxy, s3_url, tmp_path):
    objects = _put_objects(s3_url, 1)
    data = objects["obj-0.tar"]
    three_tries = RetryConfig(attempts=3, base_delay_s=0.01, max_delay_s=0.02)
    remote = RemoteShardSet(s3_url, proxied_options(s3_proxy), three_tries, IOCounters())
    s3_proxy.set_faults(ProxyFaults(slowdown_rate=1.0))
    with pytest.raises(FetchError, match=rf"{s3_url}/obj-0\.tar: failed 3 times, giving up; last error: "
                                         r".*reduce your request rate"):
        remote.download("obj-0.tar", str(tmp_path / "x"), len(data), hashlib.sha256(data).hexdigest())
    assert s3_proxy.stats()["GET"] == 3

    s3_proxy.set_faults(ProxyFaults())
    with pytest.raises(FetchError, match=rf"obj-0\.tar: failed 3 times.*ChecksumMismatch: sha256 "
                                         rf"{hashlib.sha256(data).hexdigest()} downloaded, the manifest says "
                                         f"{'0' * 64}"):
        remote.download("obj-0.tar", str(tmp_path / "x"), len(data), "0" * 64)


def test_an_error_that_retrying_cannot_fix_fails_at_once(s3_proxy, s3_url, tmp_path):
    remote = RemoteShardSet(s3_url, proxied_options(s3_proxy), FAST_RETRY, IOCounters())
    with pytest.raises(FileNotFoundError, match=rf"{s3_url}/missing\.tar: "):
        remote.download("missing.tar", str(tmp_path / "x"), 1, "0" * 64)
    assert s3_proxy.stats()["GET"] == 1 and remote.counters.snapshot()["retries"] == 0


@pytest.mark.timeout(120)  # a regression here hangs: fail in minutes, not after the suite's limit
def test_a_filesystem_whose_event_loop_died_is_rebuilt_instead_of_waiting_forever(s3_proxy, s3_url, tmp_path):
    """fsspec's calls wait on an event loop in an IO thread; a call on a loop that no thread runs any
    more would wait forever (seen once in a forked DataLoader worker). The filesystem is rebuilt on
    a fresh loop, and a request that still hangs fails after data.retry.request_timeout_s and is retried.
    Filesystems cached by fsspec for mars_dist.data.fs (bound to the dead loop too) are dropped."""
    import fsspec.asyn

    from mars_dist.data import fs

    objects = _put_objects(s3_url, 1)
    assert fs.list_names(s3_url) == ["obj-0.tar"]  # fsspec now caches a filesystem on this loop
    remote = RemoteShardSet(s3_url, proxied_options(s3_proxy), RetryConfig(attempts=3, base_delay_s=0.01, max_delay_s=0.05,
                                                                           request_timeout_s=3), IOCounters())
    assert remote.read("obj-0.tar") == objects["obj-0.tar"]
    dead_loop, thread = fsspec.asyn.loop[0], fsspec.asyn.iothread[0]
    dead_loop.call_soon_threadsafe(dead_loop.stop)  # the IO thread returns; the loop object stays
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert fs.list_names(s3_url) == ["obj-0.tar"], "the cached filesystem of the dead loop must not be reused"
    assert fsspec.asyn.loop[0] is not dead_loop
    started = time.monotonic()
    remote.download("obj-0.tar", str(tmp_path / "obj-0.tar"), OBJECT_BYTES, hashlib.sha256(objects["obj-0.tar"]).hexdigest())
    assert (tmp_path / "obj-0.tar").read_bytes() == objects["obj-0.tar"]
    assert fsspec.asyn.iothread[0] is not thread and fsspec.asyn.iothread[0].is_alive(), "a new IO thread serves the new loop"
    assert time.monotonic() - started < 3, "rebuilt at once, not after the request timeout"



def test_a_request_without_progress_is_cut_off_at_the_request_timeout_and_counted(s3_proxy, s3_url, tmp_path):
    """botocore's read timeout is long here (30 s), the proxy answers nothing for 10 s: only
    data.retry.request_timeout_s (1 s) ends each try, and each such retry is counted apart."""
    objects = _put_objects(s3_url, 1)
    remote = RemoteShardSet(s3_url, proxied_options(s3_proxy, read_timeout_s=30),
                            RetryConfig(attempts=2, base_delay_s=0.01, max_delay_s=0.02, request_timeout_s=1), IOCounters())
    s3_proxy.set_faults(ProxyFaults(stall_rate=1.0, stall_s=10))
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"{s3_url}/obj-0\.tar: failed 2 times"):
        remote.download("obj-0.tar", str(tmp_path / "x"), OBJECT_BYTES, hashlib.sha256(objects["obj-0.tar"]).hexdigest())
    assert time.monotonic() - started < 8, "each try must end at the 1 s request timeout, not the proxy's 10 s stall"
    counts = remote.counters.snapshot()
    assert counts["retries"] == 1 and counts["request_timeouts"] == 1, counts
