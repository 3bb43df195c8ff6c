"""What an epoch order costs and buys, computed from the order alone (no I/O).

`node_fetch_bytes`: bytes of the distinct shards each node reads in an epoch (what its cache must
download with a cold cache) for a world size and node size. `shuffle_quality`: how local the
order is (spread of a shard's samples over the epoch, distinct shards per global batch). The
benchmark prints both at NSynth scale; the tests assert the documented bounds.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from mars_dist.data.order import EpochOrder


def node_fetch_bytes(order: EpochOrder, epoch: int, global_batch: int, world_size: int, ranks_per_node: int,
                     shard_of_N: np.ndarray, shard_bytes: Sequence[int]) -> List[int]:
    """Per node: bytes of the distinct shards its ranks read over the full steps of `epoch`.

    A node's ranks are contiguous, so together they hold one contiguous slice of each step's
    positions ordered by partition (mars_dist.data.order.rank_positions with the node as "rank").
    """
    sample_N, partition_N = order.epoch(epoch)
    steps = order.num_samples // global_batch
    per_node = global_batch // world_size * ranks_per_node
    bytes_S = np.asarray(shard_bytes, dtype=np.int64)
    step_first = (np.arange(steps) * global_batch)[:, None]
    if partition_N is None:
        ordered = np.arange(global_batch)[None, :] + step_first
    else:
        part = partition_N[:steps * global_batch].reshape(steps, global_batch)
        ordered = np.argsort(part, axis=1, kind="stable") + step_first
    fetched = []
    for node in range(world_size // ranks_per_node):
        shards = np.unique(shard_of_N[sample_N[ordered[:, node * per_node:(node + 1) * per_node]]])
        fetched.append(int(bytes_S[shards].sum()))
    return fetched


def shuffle_quality(order: EpochOrder, epoch: int, global_batch: int, shard_of_N: np.ndarray) -> Dict[str, float]:
    """Locality of one epoch's order, as fractions of the epoch and counts per global batch.

    shard_spread_*: (last - first position of a shard's samples) / N, mean and max over shards
    (a uniform permutation gives ~(n-1)/(n+1) for a shard of n samples, i.e. close to 1);
    batch_shards_mean: distinct shards in a global batch; batch_same_shard_max: most samples of
    one shard in one global batch.
    """
    sample_N, _ = order.epoch(epoch)
    shard_at_N = shard_of_N[sample_N]
    num_shards = int(shard_of_N.max()) + 1
    positions = np.arange(len(sample_N))
    first = np.full(num_shards, len(sample_N))
    last = np.full(num_shards, -1)
    np.minimum.at(first, shard_at_N, positions)
    np.maximum.at(last, shard_at_N, positions)
    spread = (last - first) / len(sample_N)
    steps = len(sample_N) // global_batch
    per_batch = shard_at_N[:steps * global_batch].reshape(steps, global_batch)
    distinct = [len(np.unique(b)) for b in per_batch]
    same = [int(np.bincount(b).max()) for b in per_batch]
    return {"shard_spread_mean": float(spread.mean()), "shard_spread_max": float(spread.max()),
            "batch_shards_mean": float(np.mean(distinct)), "batch_same_shard_max": float(max(same))}
