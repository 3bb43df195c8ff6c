"""The stream's order and cursor as pure functions: no files, no processes.

These are the properties the elastic resume rests on, for the global order (one uniform
permutation per epoch); tests/test_data_windowed_order.py checks the same for the shard-local
order, and tests/test_stream.py / tests/test_stream_s3_faults.py end to end on real shards.
"""
import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mars_dist.data.order import Cursor, CursorError, epoch_permutation, global_steps, rank_micro_batches


def _steps(start, global_batch, world_size, micro_batch, grad_accum, num_steps):
    """Per global step: the sorted samples of all ranks together, and each rank's own samples."""
    per_rank = [
        list(itertools.islice(rank_micro_batches(start, global_batch, r, micro_batch, grad_accum),
                              num_steps * grad_accum))
        for r in range(world_size)
    ]
    steps = []
    for s in range(num_steps):
        ranks = [sum(mbs[s * grad_accum:(s + 1) * grad_accum], []) for mbs in per_rank]
        steps.append((sorted(sum(ranks, [])), ranks))
    return steps


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    p = epoch_permutation(7, 3, 1000)
    assert np.array_equal(p, epoch_permutation(7, 3, 1000))
    assert sorted(p.tolist()) == list(range(1000))
    assert not np.array_equal(p, epoch_permutation(7, 4, 1000)), "epoch e+1 must be reshuffled"
    assert not np.array_equal(p, epoch_permutation(8, 3, 1000)), "another seed must give another order"


@settings(max_examples=60, deadline=None)
@given(num_samples=st.integers(6, 80), world_size=st.integers(1, 4), micro_batch=st.integers(1, 4),
       grad_accum=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_each_epoch_is_the_dataset_once_split_disjointly_over_ranks(num_samples, world_size, micro_batch,
                                                                    grad_accum, seed):
    global_batch = world_size * micro_batch * grad_accum
    steps_per_epoch = num_samples // global_batch
    start = Cursor(seed, "d", num_samples)
    steps = _steps(start, global_batch, world_size, micro_batch, grad_accum, 2 * steps_per_epoch)
    for epoch in range(2):
        epoch_steps = steps[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]
        seen = sum((together for together, _ in epoch_steps), [])
        assert len(seen) == len(set(seen)) == steps_per_epoch * global_batch
        dropped = set(range(num_samples)) - set(seen)
        assert dropped == set(epoch_permutation(seed, epoch, num_samples)[steps_per_epoch * global_batch:].tolist())
        for _, ranks in epoch_steps:
            assert all(len(r) == micro_batch * grad_accum for r in ranks)


@settings(max_examples=60, deadline=None)
@given(num_samples=st.integers(12, 60), seed=st.integers(0, 2**31), done=st.integers(0, 12),
       old_world=st.sampled_from([1, 2, 3]), new_world=st.sampled_from([1, 2, 3]))
def test_resuming_on_any_world_size_continues_with_the_same_global_batches(num_samples, seed, done,
                                                                         old_world, new_world):
    global_batch = 6
    start = Cursor(seed, "d", num_samples)
    uninterrupted = _steps(start, global_batch, old_world, global_batch // old_world, 1, done + 8)
    saved = start
    for cursor in itertools.islice(global_steps(start, global_batch), done + 1):
        saved = cursor  # the cursor at the start of step `done`, as a checkpoint after `done` steps holds it
    saved = Cursor.from_dict(json.loads(json.dumps(saved.to_dict())))
    resumed = _steps(saved, global_batch, new_world, 1, global_batch // new_world, 8)
    assert [together for together, _ in resumed] == [together for together, _ in uninterrupted[done:]]


def test_cursor_moves_to_the_next_epoch_when_less_than_a_global_batch_is_left():
    cursors = list(itertools.islice(global_steps(Cursor(0, "d", 20), 6), 5))
    assert [(c.epoch, c.position) for c in cursors] == [(0, 0), (0, 6), (0, 12), (1, 0), (1, 6)]
    # a cursor saved with global batch 4 at position 16 of 20 resumes at the next epoch with batch 6
    assert Cursor(0, "d", 20, 2, 16).normalized(6) == Cursor(0, "d", 20, 3, 0)


@pytest.mark.parametrize("bad, message", [
    ({"format": "other/1"}, "format 'other/1', expected 'mars_dist.cursor/1'"),
    ({"epoch": "1"}, "epoch='1', expected int"),
    ({"position": 21}, "position=21 out of range for 20 samples"),
])
def test_malformed_cursor_is_refused_naming_the_field(bad, message):
    d = {**Cursor(0, "d", 20, 1, 6).to_dict(), **bad}
    with pytest.raises(CursorError, match=message):
        Cursor.from_dict(d)


def test_cursor_for_another_dataset_or_seed_is_refused():
    cursor = Cursor(seed=1, dataset="abc", num_samples=20, epoch=0, position=6)
    cursor.check_matches(1, "abc", 20)
    with pytest.raises(CursorError, match=r"saved for dataset abc \(20 samples\).*dataset xyz \(20 samples\)"):
        cursor.check_matches(1, "xyz", 20)
    with pytest.raises(CursorError, match="saved with data seed 1, the stream has seed 2"):
        cursor.check_matches(2, "abc", 20)


def test_cursor_records_its_order_and_one_saved_before_orders_existed_means_the_global_order():
    legacy = {k: v for k, v in Cursor(1, "abc", 20, 0, 6).to_dict().items() if k != "order"}
    assert Cursor.from_dict(legacy).order == "global"
    windowed = Cursor(1, "abc", 20, 0, 6, order="windowed/1:partitions=4,block=8")
    assert Cursor.from_dict(json.loads(json.dumps(windowed.to_dict()))) == windowed
    with pytest.raises(CursorError, match=r"saved with order 'global', the stream has order "
                                          r"'windowed/1:partitions=4,block=8'.*data\.order"):
        Cursor.from_dict(legacy).check_matches(1, "abc", 20, "windowed/1:partitions=4,block=8")
