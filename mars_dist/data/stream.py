"""The training stream: exact, elastic, resumable batches of CMX tensors + labels from a shard set.

Per optimizer step each rank gets `grad_accum` micro-batches; the order is a pure function of
(seed, epoch, position) (mars_dist.data.order), so `cursor()` resumes without repeats or gaps,
also on another world size. Samples are read by random access (mars_dist.data.sample_reader) in
torch DataLoader workers: from the local folder, or, for s3:// shards under the windowed order,
from whole shards that a read-ahead thread fetches into the node's cache ahead of need
(mars_dist.data.readahead, mars_dist.data.shard_cache). Design and guarantees: docs/data.md.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.data import fs as storage
from mars_dist.data.config import DataConfig
from mars_dist.data.geometry import BatchGeometry
from mars_dist.data.io_stats import IOCounters
from mars_dist.data.manifest import check_compatible, manifest_url, read_manifest
from mars_dist.data.order import (Cursor, OrderConfig, build_order, dataset_fingerprint, global_steps,
                                  rank_micro_batches, rank_steps)
from mars_dist.data.readahead import ReadAhead, peak_pinned_bytes, shard_needs
from mars_dist.data.remote import RemoteShardSet
from mars_dist.data.retry import RetryConfig
from mars_dist.data.sample_reader import SampleReader, ShardIndex, collate_micro_batch
from mars_dist.data.shard_cache import GB, CacheConfig, ShardCache
from mars_dist.data.shard_source import CachedShards, LocalRanges, RemoteRanges
from mars_dist.errors import UserValueError

MicroBatch = Dict[str, Any]
log = logging.getLogger(__name__)

# Workers are forked wherever fork exists, whatever the process's default start method (a rank
# started by spawn defaults to spawn): a forked worker starts in milliseconds and shares the
# sample index, a spawned one re-imports torch (seconds per worker, each time iteration starts).
# Forking is safe here: workers touch no CUDA, the shard sources open files and filesystems per
# process, and the read-ahead starts its threads only after the workers are forked.
WORKER_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def resolve_ranks_per_node(ranks_per_node: int, world_size: int) -> int:
    """Ranks per node: the setting, else the launcher's LOCAL_WORLD_SIZE, capped at the world size.

    torchrun (and accelerate, and srun with torchrun) give node n the ranks [n*L, (n+1)*L).
    """
    if ranks_per_node < 0:
        raise ValueError(f"data.ranks_per_node={ranks_per_node}: expected >= 1, or 0 for LOCAL_WORLD_SIZE")
    local = ranks_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or world_size)
    local = min(local, world_size)
    if world_size % local:
        raise ValueError(f"world_size={world_size} is not a multiple of {local} ranks per node "
                         "(data.ranks_per_node or LOCAL_WORLD_SIZE): every node must run the same number of ranks")
    return local


class ElasticStream:
    """Iterating yields, per optimizer step, this rank's `grad_accum` micro-batches (see MicroBatch).

    A micro-batch is {"cmx": float32 [m, C, H, W], "pitch", "velocity", "instrument_family",
    "instrument_source", "instrument": LongTensor [m], "key": list of note_str}. Iteration is
    endless: epoch e+1 (reshuffled) follows epoch e; the caller decides when to stop. Iterating
    again resumes from `cursor()` (an earlier iteration still open is closed first).

    `order`, `cache`, `retry` and `ranks_per_node` are the DataConfig sections of the same names.
    """

    def __init__(self, url: str, global_batch: int, rank: int, world_size: int, micro_batch: int,
                 grad_accum: int, seed: int, num_workers: int, storage_options: Optional[Dict[str, Any]],
                 expected_audio: AudioConfig, cursor: Optional[Dict[str, Any]] = None, *,
                 order: Optional[OrderConfig] = None, cache: Optional[CacheConfig] = None,
                 retry: Optional[RetryConfig] = None, ranks_per_node: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside world_size={world_size}")
        self.geometry = BatchGeometry(global_batch, world_size, micro_batch, grad_accum)
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers}: must be >= 0")
        order_cfg, self.cache_cfg, retry = order or OrderConfig(), cache or CacheConfig(), retry or RetryConfig()
        self.cache_cfg.check()
        retry.check()
        self.url = url.rstrip("/")
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.micro_batch, self.grad_accum, self.num_workers = micro_batch, grad_accum, num_workers
        self.ranks_per_node = resolve_ranks_per_node(ranks_per_node, world_size)
        self.counters = IOCounters()
        remote = RemoteShardSet(self.url, storage_options, retry, self.counters) if storage.is_s3(self.url) else None
        self.manifest = read_manifest(self.url, storage_options, remote=remote)
        check_compatible(self.manifest, expected_audio, where=manifest_url(self.url))
        shards = self.manifest["shards"]
        num_samples = self.manifest["num_samples"]
        if num_samples < global_batch:
            raise UserValueError(f"{self.url}: {num_samples} samples are fewer than one global batch of {global_batch} "
                                 "(data.batch_size)")
        index = ShardIndex.load(self.url, self.manifest, storage_options, remote=remote)
        self.order = build_order(order_cfg, seed, [s["num_samples"] for s in shards])
        self.steps_per_epoch = num_samples // global_batch
        fingerprint = dataset_fingerprint(shards)
        if cursor is None:
            start = Cursor(seed, fingerprint, num_samples, order=self.order.describe())
        else:
            start = Cursor.from_dict(cursor)
            start.check_matches(seed, fingerprint, num_samples, self.order.describe())
        self._cursor = start.normalized(global_batch)
        self._shard_of_N = index.shard_of_N
        # the read-ahead must stay ahead of the workers' prefetch (2 micro-batches per worker)
        self._lead = max(self.cache_cfg.readahead_steps, -(-2 * num_workers // grad_accum) + 1)
        self._warn_if_locality_suffers()
        self._source = self._build_source(remote, order_cfg, shards)
        self._reader = SampleReader(self.url, storage_options, index, self.manifest["cmx_shape"], source=self._source)
        self._open: Optional[Iterator[List[MicroBatch]]] = None

    def _build_source(self, remote: Optional[RemoteShardSet], order_cfg: OrderConfig, shards):
        """Local folder: read in place. S3: whole shards in the node cache, or (global order) ranged GETs."""
        if remote is None:
            return LocalRanges(self.url, shards, self.counters)
        if order_cfg.kind == "global":
            return RemoteRanges(remote, shards)
        source = CachedShards(ShardCache(self.cache_cfg.folder(), self.cache_cfg.limit_bytes()), remote, shards)
        self._check_cache_fits()
        return source

    @classmethod
    def from_config(cls, data_cfg: DataConfig, audio_cfg: AudioConfig, split_url: str, rank: int,
                    world_size: int, cursor: Optional[Dict[str, Any]] = None) -> "ElasticStream":
        """The run config's stream: data_cfg.batch_size is GLOBAL, micro-batch and accumulation derived."""
        geometry = BatchGeometry.of(data_cfg.batch_size, world_size, data_cfg.micro_batch_size)
        return cls(split_url, data_cfg.batch_size, rank, world_size, geometry.micro_batch, geometry.grad_accum, data_cfg.seed,
                   data_cfg.num_workers, data_cfg.storage_options, audio_cfg, cursor, order=data_cfg.order,
                   cache=data_cfg.cache, retry=data_cfg.retry, ranks_per_node=data_cfg.ranks_per_node)

    def cursor(self) -> Dict[str, Any]:
        """Position after the last step handed out (not what workers prefetched); JSON-serialisable."""
        return self._cursor.to_dict()

    def io_stats(self) -> Dict[str, int]:
        """What this rank's processes read so far (mars_dist.data.io_stats.FIELDS)."""
        return self.counters.snapshot()

    def _rank_steps(self, rank: int, start: Cursor):
        return rank_steps(start, self.global_batch, rank, self.micro_batch * self.grad_accum, self.order)

    def _node_shard_needs(self, num_steps: int):
        """The ShardNeeds of every rank of this node over `num_steps` steps from the cursor."""
        node = self.rank // self.ranks_per_node
        ranks = range(node * self.ranks_per_node, (node + 1) * self.ranks_per_node)
        return [need for r in ranks
                for need in shard_needs(itertools.islice(self._rank_steps(r, self._cursor), num_steps),
                                        self._shard_of_N)]

    def _warn_if_locality_suffers(self) -> None:
        """Every world size resumes exactly; these ones make each node fetch more than its share."""
        partitions = getattr(self.order, "partitions", None)
        nodes = self.world_size // self.ranks_per_node
        if self.rank != 0 or partitions is None or nodes == 1:
            return
        if self.global_batch % partitions or nodes > partitions:
            log.warning("%s with global batch %d on %d nodes: each node will fetch more than its share of the "
                        "shards (docs/data.md, \"Locality\"); for exact locality choose data.order.partitions "
                        "dividing data.batch_size and >= the number of nodes", self.order.describe(),
                        self.global_batch, nodes)

    def _check_cache_fits(self) -> None:
        """Refuse a cache limit below what this node's read-ahead must pin at once (over one epoch)."""
        shard_bytes = [int(s["bytes"]) for s in self.manifest["shards"]]
        peak = peak_pinned_bytes(self._node_shard_needs(self.steps_per_epoch), shard_bytes, self._lead)
        limit = self.cache_cfg.limit_bytes()
        if peak > limit:
            raise ValueError(
                f"data.cache.limit_gb={self.cache_cfg.limit_gb} ({limit} bytes) is below the {peak} bytes "
                f"({peak / GB:.3f} GB) that the {self.ranks_per_node} ranks of this node keep pinned at once "
                f"under {self.order.describe()} with data.cache.readahead_steps={self.cache_cfg.readahead_steps}: "
                f"set data.cache.limit_gb >= {np.ceil(peak / GB * 1000) / 1000}, or lower "
                "data.order.shuffle_window or data.cache.readahead_steps")

    def _start_readahead(self, start: Cursor) -> Optional[ReadAhead]:
        if not isinstance(self._source, CachedShards) or self.cache_cfg.readahead_steps == 0:
            return None
        source = self._source
        return ReadAhead(shard_needs(self._rank_steps(self.rank, start), self._shard_of_N),
                         lambda shard_id: source.fetch(shard_id, pin=True),
                         lead=self._lead, threads=self.cache_cfg.fetch_threads).start()

    def __iter__(self) -> Iterator[List[MicroBatch]]:
        self.close()  # one reader per stream: an earlier iteration's workers and read-ahead stop here
        self._open = self._steps()
        return self._open

    def close(self) -> None:
        """Stop the DataLoader workers and the read-ahead now, releasing the cache pins.

        Call it when done with a stream that is not iterated to its end (a generator left
        suspended keeps its read-ahead threads and pins until it is garbage-collected, and threads
        busy in S3 calls while another stream forks its workers are what fork-safety warnings are
        about). Iterating again restarts from `cursor()`.
        """
        if self._open is not None:
            self._open.close()
            self._open = None

    def _steps(self) -> Iterator[List[MicroBatch]]:
        start = self._cursor
        loader = torch.utils.data.DataLoader(
            self._reader,
            batch_sampler=rank_micro_batches(start, self.global_batch, self.rank, self.micro_batch,
                                             self.grad_accum, self.order),
            num_workers=self.num_workers,
            collate_fn=collate_micro_batch,
            multiprocessing_context=WORKER_START_METHOD if self.num_workers else None,
        )
        micro_batches = iter(loader)  # forks the workers before the read-ahead starts its threads
        readahead = self._start_readahead(start)
        try:
            for step_start in global_steps(start, self.global_batch):
                stored = [next(micro_batches) for _ in range(self.grad_accum)]
                if readahead is not None:
                    readahead.advance()
                    readahead.check()
                # float16 crosses the worker -> main process pipe (half the bytes); float32 from here on
                step = [{**mb, "cmx": mb["cmx"].float()} for mb in stored]
                self._cursor = step_start.after_step(self.global_batch)
                yield step
        finally:
            if readahead is not None:
                readahead.close()
            del micro_batches  # shuts the workers down now, not at garbage collection
