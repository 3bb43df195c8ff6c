"""A shard-local epoch order: canonical partitions of whole shards, shuffled in windows, interleaved.

Why: a uniform permutation makes every global batch touch ~G different shards, so each sample
costs one request to the object store. This order keeps each reader inside a small window of
shards, so shards are fetched whole (one GET per ~256 samples), and gives each node a fixed share
of the data set, so a node fetches about N / nodes samples' worth of shards, not all of them.

Construction, all a pure function of (seed, epoch) and the shard sizes:
1. Membership (seed only, the same every epoch): the shards are permuted, their samples laid end to
   end and cut into P canonical partitions of floor(N/P) or ceil(N/P) samples. A shard lies in one
   partition, or in two where a cut falls inside it.
2. Per epoch, inside each partition: the shard pieces are put in a random order and the samples
   cut into blocks of B samples, each block shuffled (the "window"). Block boundaries are
   staggered by k*B/P in partition k, so partitions enter new windows at evenly spread steps and
   downloads stay steady instead of arriving in bursts.
3. The interleave: position p belongs to round p // P; each round visits every partition once
   and takes its next sample. The last N mod P positions are a final partial round over the
   longer partitions. Within a round, partitions are visited in a fixed low-discrepancy order
   (partition k at the rank of frac(k * golden ratio)): any run of consecutive positions then
   holds nearly equal counts of every range of partitions, which keeps a node's share of a step
   close to its own partitions' supply also when P does not divide G.

So a global batch of G = k*P positions holds exactly k samples of every partition, and the stream
(mars_dist.data.order) hands a node the positions of a contiguous range of partitions. Shuffle
quality (docs/data.md, "Order"): samples of one shard lie within about (piece + 2B) * P positions
of each other in an epoch; each global batch draws G/P samples from each partition's window.
"""
from __future__ import annotations

import threading
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

_MEMBERSHIP_STREAM = 0x5EED_0001  # separates the seed-only membership draw from the per-epoch draws
_EPOCH_STREAM = 0x5EED_0002
_GOLDEN = (5 ** 0.5 - 1) / 2


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.concatenate([arange(s, s + n) for s, n in zip(starts, lengths)]) without the Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total, dtype=np.int64)


class WindowedOrder:
    """The epoch order described in the module doc, over shards of `shard_sizes` samples (manifest order)."""

    def __init__(self, shard_sizes: Sequence[int], seed: int, partitions: int, block: int):
        if partitions < 1 or block < 1:
            raise ValueError(f"partitions={partitions}, block={block}: both must be >= 1")
        sizes_S = np.asarray(shard_sizes, dtype=np.int64)
        self.seed, self.partitions, self.block = seed, partitions, block
        self.num_samples = int(sizes_S.sum())
        first_sample_S = np.cumsum(sizes_S) - sizes_S
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _MEMBERSHIP_STREAM])))
        shard_order = rng.permutation(len(sizes_S))
        self._seq_N = concat_ranges(first_sample_S[shard_order], sizes_S[shard_order])
        q, r = divmod(self.num_samples, partitions)
        self.partition_len_P = np.full(partitions, q, dtype=np.int64)
        self.partition_len_P[:r] += 1
        self.partition_start_P = np.cumsum(self.partition_len_P) - self.partition_len_P
        self._partition_of_seq_N = np.repeat(np.arange(partitions), self.partition_len_P)
        shard_of_seq_N = np.repeat(shard_order, sizes_S[shard_order])
        new_piece = np.ones(self.num_samples, dtype=bool)
        new_piece[1:] = ((shard_of_seq_N[1:] != shard_of_seq_N[:-1])
                         | (self._partition_of_seq_N[1:] != self._partition_of_seq_N[:-1]))
        self._piece_start = np.flatnonzero(new_piece)
        self._piece_len = np.diff(np.append(self._piece_start, self.num_samples))
        self._piece_partition = self._partition_of_seq_N[self._piece_start]
        round_P = np.argsort(np.modf(np.arange(partitions) * _GOLDEN)[0], kind="stable")
        self._partition_at_N = np.concatenate([np.tile(round_P, q), round_P[round_P < r]]).astype(np.int64)
        self._partition_at_N.flags.writeable = False
        index_N = np.concatenate([np.repeat(np.arange(q), partitions), np.full(r, q)]).astype(np.int64)
        self._layout_at_N = self.partition_start_P[self._partition_at_N] + index_N  # into the by-partition layout
        # the loader's sampler and the read-ahead both walk the same epochs: compute each once
        self._epochs: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._epochs_lock = threading.Lock()

    def describe(self) -> str:
        return f"windowed/1:partitions={self.partitions},block={self.block}"

    def partition_samples(self, partition: int) -> np.ndarray:
        """The samples of one partition (the same set every epoch), in membership order."""
        start = self.partition_start_P[partition]
        return self._seq_N[start:start + self.partition_len_P[partition]]

    def epoch(self, epoch: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(sample_N, partition_N): the sample and the partition at each position of `epoch`."""
        with self._epochs_lock:
            if epoch not in self._epochs:
                self._epochs = {e: v for e, v in self._epochs.items() if e >= epoch - 1}
                self._epochs[epoch] = self._compute_epoch(epoch)
            return self._epochs[epoch]

    def _compute_epoch(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, _EPOCH_STREAM])))
        P, B, N = self.partitions, self.block, self.num_samples
        piece_order = np.lexsort((rng.random(len(self._piece_start)), self._piece_partition))
        seq_index_N = concat_ranges(self._piece_start[piece_order], self._piece_len[piece_order])
        part_N = self._partition_of_seq_N  # pieces stay in their partition, so the layout by partition holds
        within_N = np.arange(N) - self.partition_start_P[part_N]
        stagger_P = (np.arange(P) * B) // P
        block_N = (within_N + stagger_P[part_N]) // B
        shuffled = np.lexsort((rng.random(N), block_N, part_N))
        by_partition_N = self._seq_N[seq_index_N[shuffled]]
        return by_partition_N[self._layout_at_N], self._partition_at_N
