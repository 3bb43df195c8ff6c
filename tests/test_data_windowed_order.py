"""The shard-local (windowed) order as pure functions: no files, no processes.

What the cluster-scale data path rests on: each epoch is still every sample once, a pure
function of (seed, epoch, position); a cursor resumes exactly across changes of world size;
a rank reads from a bounded window of shards; each node reads about its share of the shards.
Each locality test also runs the global order, which must fail the same bound (so the bound
tests something). End to end on real shards: tests/test_stream.py, tests/test_stream_s3_faults.py.
"""
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mars_dist.data.locality import node_fetch_bytes, shuffle_quality
from mars_dist.data.order import Cursor, OrderConfig, build_order, global_steps, rank_micro_batches, rank_steps
from mars_dist.data.windowed_order import WindowedOrder


def _shard_of(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=12), partitions=st.integers(1, 9),
       block=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_each_epoch_visits_every_sample_once_and_partitions_keep_their_samples(sizes, partitions, block, seed):
    order = WindowedOrder(sizes, seed, partitions, block)
    n = sum(sizes)
    epochs = [order.epoch(e) for e in (0, 1)]
    for sample_N, partition_N in epochs:
        assert sorted(sample_N.tolist()) == list(range(n))
        for k in range(partitions):
            assert set(sample_N[partition_N == k].tolist()) == set(order.partition_samples(k).tolist())
    again = WindowedOrder(sizes, seed, partitions, block).epoch(0)
    assert np.array_equal(again[0], epochs[0][0]), "the order must be a pure function of (seed, epoch)"


def test_a_global_batch_of_k_times_p_positions_holds_k_samples_of_every_partition_reshuffled_each_epoch():
    order = WindowedOrder([7] * 10 + [3], seed=4, partitions=5, block=6)
    sample_N, partition_N = order.epoch(2)
    for first in range(0, 70, 10):
        assert np.bincount(partition_N[first:first + 10], minlength=5).tolist() == [2] * 5
    assert not np.array_equal(sample_N, order.epoch(3)[0]), "epoch 3 must be reshuffled"
    assert not np.array_equal(sample_N, WindowedOrder([7] * 10 + [3], 5, 5, 6).epoch(2)[0]), "so must another seed"


def _global_batches(order, start, global_batch, world, micro_batch, num_steps):
    """Per global step: the sorted samples of all ranks together."""
    grad_accum = global_batch // (world * micro_batch)
    per_rank = [list(itertools.islice(rank_micro_batches(start, global_batch, r, micro_batch, grad_accum, order),
                                      num_steps * grad_accum)) for r in range(world)]
    return [sorted(sum((sum(mbs[s * grad_accum:(s + 1) * grad_accum], []) for mbs in per_rank), []))
            for s in range(num_steps)]


def _cursor_after(start, global_batch, steps):
    cursor = next(itertools.islice(global_steps(start, global_batch), steps, None))
    return Cursor.from_dict(json.loads(json.dumps(cursor.to_dict())))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(3, 20), min_size=2, max_size=8), partitions=st.sampled_from([1, 2, 3, 4, 6, 8]),
       worlds=st.lists(st.sampled_from([1, 2, 3, 4, 6]), min_size=3, max_size=3), seed=st.integers(0, 2**31),
       cut=st.floats(0.1, 0.9))
def test_a_cursor_resumes_on_any_world_size_and_each_sample_is_seen_once_per_epoch(sizes, partitions, worlds,
                                                                                   seed, cut):
    global_batch = 12
    n = sum(sizes)
    if n < 2 * global_batch:
        sizes = sizes + [2 * global_batch]
        n = sum(sizes)
    order = build_order(OrderConfig("windowed", partitions, 1), seed, sizes)
    steps_per_epoch = n // global_batch
    start = Cursor(seed, "d", n, order=order.describe())
    expected = _global_batches(order, start, global_batch, 1, global_batch, 2 * steps_per_epoch)
    first_stop = max(1, int(cut * steps_per_epoch))
    second_stop = min(steps_per_epoch + 1, first_stop + max(1, steps_per_epoch // 3))
    pieces, done = [], 0
    for world, stop in zip(worlds, (first_stop, second_stop, 2 * steps_per_epoch)):
        cursor = _cursor_after(start, global_batch, done)
        pieces += _global_batches(order, cursor, global_batch, world, 1, stop - done)
        done = stop
    assert pieces == expected
    epoch0 = sum(pieces[:steps_per_epoch], [])
    assert len(epoch0) == len(set(epoch0)) == steps_per_epoch * global_batch


def _worst_window(order, sizes, global_batch, world, horizon):
    """Most distinct shards one rank reads in any `horizon` consecutive steps of an epoch."""
    n, shard_of = sum(sizes), _shard_of(sizes)
    worst = 0
    for rank in range(world):
        steps = [shard_of[s] for _, s in itertools.islice(
            rank_steps(Cursor(0, "d", n), global_batch, rank, global_batch // world, order), n // global_batch)]
        for c in range(len(steps) - horizon + 1):
            worst = max(worst, len(np.unique(np.concatenate(steps[c:c + horizon]))))
    return worst


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_a_rank_reads_from_a_bounded_window_of_shards(world):
    sizes, partitions, window, global_batch, horizon = [16] * 96, 16, 1, 48, 4
    block = window * 16
    # a rank holds <= ceil(P / world) + 1 partitions; in `horizon` steps a partition's reader moves
    # horizon * G / P samples, inside blocks of B samples: it touches at most that span + 2 blocks
    per_partition = math.ceil((horizon * global_batch / partitions + 2 * block) / 16) + 1
    bound = (math.ceil(partitions / world) + 1) * per_partition
    windowed = build_order(OrderConfig("windowed", partitions, window), 0, sizes)
    assert _worst_window(windowed, sizes, global_batch, world, horizon) <= bound
    everywhere = _worst_window(build_order(OrderConfig("global"), 0, sizes), sizes, global_batch, world, horizon)
    assert everywhere > bound, "the bound must be one that the global order breaks"


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5, 6, 8, 16])
def test_each_node_fetches_its_share_of_the_data_set_and_at_most_two_partitions_more(nodes):
    """P | G here (16 | 48). Nodes that divide P read exactly their partitions (the cuts fall on shard
    boundaries in this set); other counts split a partition at each end of a node's range, and both
    neighbours then read all of its shards: at most 2 partitions more than the node's P / nodes."""
    sizes, global_batch, partitions = [16] * 128, 48, 16
    shard_of, total = _shard_of(sizes), sum(sizes)
    ratio = 1.0 if partitions % nodes == 0 else 1 + 2 * nodes / partitions
    windowed = build_order(OrderConfig("windowed", partitions, 1), 3, sizes)
    for epoch in (0, 1):
        fetched = node_fetch_bytes(windowed, epoch, global_batch, nodes, 1, shard_of, sizes)
        assert max(fetched) <= ratio * total / nodes, f"{nodes} nodes, epoch {epoch}: {fetched}"
    if nodes > 1:
        everywhere = node_fetch_bytes(build_order(OrderConfig("global"), 3, sizes), 0, global_batch, nodes, 1,
                                      shard_of, sizes)
        assert min(everywhere) > 1.5 * ratio * total / nodes, "the global order must break the bound"


def test_ranks_of_one_node_share_its_partitions():
    sizes = [16] * 64
    order, shard_of = build_order(OrderConfig("windowed", 8, 1), 0, sizes), _shard_of(sizes)
    two_nodes_of_two = node_fetch_bytes(order, 0, 32, 4, 2, shard_of, sizes)
    two_nodes_of_one = node_fetch_bytes(order, 0, 32, 2, 1, shard_of, sizes)
    assert two_nodes_of_two == two_nodes_of_one, "a node's reads depend on its share, not on its rank count"


def test_shuffle_quality_stays_within_its_documented_bounds():
    sizes, partitions, window, global_batch = [32] * 64, 8, 2, 64
    block = window * 32
    order, shard_of = build_order(OrderConfig("windowed", partitions, window), 0, sizes), _shard_of(sizes)
    quality = shuffle_quality(order, 0, global_batch, shard_of)
    n = sum(sizes)
    assert quality["shard_spread_max"] * n <= (32 + 2 * block) * partitions + partitions
    assert quality["batch_shards_mean"] >= partitions, "each partition's window contributes to every batch"
    assert shuffle_quality(build_order(OrderConfig("global"), 0, sizes), 0, global_batch,
                           shard_of)["shard_spread_mean"] > 3 * quality["shard_spread_mean"]


@pytest.mark.parametrize("cfg, message", [
    (OrderConfig(kind="random"), r"data\.order\.kind='random': expected one of windowed, global"),
    (OrderConfig(partitions=-1), r"data\.order\.partitions=-1, data\.order\.shuffle_window=2: expected "
                                 r"partitions >= 1"),
    (OrderConfig(shuffle_window=0), r"data\.order\.partitions=0, data\.order\.shuffle_window=0: expected"),
])
def test_bad_order_settings_are_refused_naming_the_value(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_order(cfg, 0, [4, 4])


@pytest.mark.parametrize("num_shards, partitions", [(1, 1), (3, 2), (5, 4), (64, 64), (1130, 64)])
def test_the_default_partition_count_is_a_power_of_two_no_larger_than_the_shards_or_64(num_shards, partitions):
    order = build_order(OrderConfig(), 0, [2] * num_shards)
    assert order.describe() == f"windowed/1:partitions={partitions},block=4"
