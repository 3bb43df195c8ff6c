"""ElasticStream end to end on real shards (data_tools.shard), locally and on a real S3 server.

The multi-process tests run real gloo process groups (tests/fixtures/dist.py): over an epoch the
ranks together see every sample once (up to the documented drop of N mod G), and a mid-epoch
cursor resumes with 2, 1 and 3 ranks onto exactly the same remaining global batches.
"""
import itertools
import json
import logging
import shutil
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist

from data_tools.nsynth import load_note, read_examples
from data_tools.shard import shard_nsynth
from data_tools.synthetic import write_synthetic_nsynth
from mars_dist.audio.config import AudioConfig, LogScaleConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.data.config import DataConfig
from mars_dist.data.manifest import ManifestError
from mars_dist.data.order import CursorError, OrderConfig
from mars_dist.data.sample_reader import ShardFormatError
from mars_dist.labels import SAMPLE_FIELDS
from mars_dist.data.shard_cache import CacheConfig
from mars_dist.data.geometry import BatchGeometry
from mars_dist.data.stream import ElasticStream, resolve_ranks_per_node
from tests.fixtures.dist import run_distributed

NUM_NOTES = 33  # G = 6 divides 1, 2 and 3 ranks; 33 = 5 steps x 6 + 3 dropped per epoch
SHARD_SIZE = 14  # shards of 14, 14 and 5 notes: uneven, and fewer than 3 ranks x 2 workers
GLOBAL_BATCH = 6
SEED = 11
STEPS_PER_EPOCH = NUM_NOTES // GLOBAL_BATCH


@pytest.fixture(scope="module")
def nsynth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_nsynth")
    write_synthetic_nsynth(str(root), (("train", NUM_NOTES),), seed=3)
    return str(root)


@pytest.fixture(scope="module")
def shards(nsynth_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("stream_shards"))
    manifest = shard_nsynth(nsynth_root, "train", out, AudioConfig(), shard_size=SHARD_SIZE, workers=1,
                            progress=False)
    assert [s["num_samples"] for s in manifest["shards"]] == [14, 14, 5]
    return out


def _stream(url, rank=0, world_size=1, micro_batch=GLOBAL_BATCH, num_workers=0, cursor=None,
            global_batch=GLOBAL_BATCH, **kw):
    grad_accum = global_batch // (world_size * micro_batch)
    args = dict(url=url, global_batch=global_batch, rank=rank, world_size=world_size, micro_batch=micro_batch,
                grad_accum=grad_accum, seed=SEED, num_workers=num_workers, storage_options=None,
                expected_audio=AudioConfig(), cursor=cursor)
    return ElasticStream(**{**args, **kw})


def _take(stream, num_steps):
    """Per step: this rank's keys (micro-batches concatenated) and the cursor right after the step."""
    return [([k for mb in step for k in mb["key"]], stream.cursor()) for step in itertools.islice(stream, num_steps)]


def _global_steps(per_rank):
    """Per step: the sorted keys of all ranks together."""
    return [sorted(sum(keys, [])) for keys in zip(*([k for k, _ in steps] for steps in per_rank))]


# ---------------------------------------------------------------- single process

def test_micro_batches_hold_the_notes_cmx_and_labels(shards, nsynth_root):
    stream = _stream(shards, micro_batch=3)
    step = next(iter(stream))
    assert len(step) == 2 and stream.steps_per_epoch == STEPS_PER_EPOCH
    entries = {e.note_str: e for e in read_examples(nsynth_root, "train")}
    frontend = AudioFrontend(AudioConfig())
    for mb in step:
        assert mb["cmx"].dtype == torch.float32 and mb["cmx"].shape == (3, *frontend.cmx_shape)
        for field in SAMPLE_FIELDS:
            assert mb[field].dtype == torch.long
            assert mb[field].tolist() == [getattr(entries[k], field) for k in mb["key"]]
        expected = torch.stack([frontend.wave_to_cmx(load_note(nsynth_root, "train", entries[k])) for k in mb["key"]])
        assert torch.equal(mb["cmx"], expected.half().float())


def test_cursor_counts_steps_handed_out_not_prefetched_and_iteration_resumes_from_it(shards):
    stream = _stream(shards, micro_batch=2, num_workers=2)
    first = _take(stream, 2)  # the workers have prefetched further by now
    assert first[-1][1] == {"format": "mars_dist.cursor/1", "seed": SEED, "dataset": stream.cursor()["dataset"],
                            "num_samples": NUM_NOTES, "epoch": 0, "position": 12,
                            "order": "windowed/1:partitions=2,block=22"}
    rest = _take(stream, 5)  # iterating again continues at the cursor, into epoch 1
    uninterrupted = _take(_stream(shards), 7)
    assert [k for k, _ in first + rest] == [k for k, _ in uninterrupted]
    assert [c["epoch"] for _, c in rest] == [0, 0, 1, 1, 1]


def test_same_seed_same_order_other_seed_or_epoch_other_order(shards):
    epoch0, epoch1 = (_take(_stream(shards), 2 * STEPS_PER_EPOCH)[e::STEPS_PER_EPOCH] for e in (0, 1))
    assert _take(_stream(shards), STEPS_PER_EPOCH) == _take(_stream(shards), STEPS_PER_EPOCH)
    assert [k for k, _ in _take(_stream(shards), STEPS_PER_EPOCH)] != [k for k, _ in _take(_stream(shards, seed=12),
                                                                                          STEPS_PER_EPOCH)]
    assert [k for k, _ in epoch0] != [k for k, _ in epoch1], "epoch 1 must be reshuffled"


def test_cursor_of_another_seed_is_refused(shards):
    cursor = _stream(shards).cursor()
    with pytest.raises(CursorError, match=f"saved with data seed {SEED}, the stream has seed 5"):
        _stream(shards, seed=5, cursor=cursor)


def test_shards_made_with_other_audio_settings_are_refused_naming_the_difference(shards):
    other = replace(AudioConfig(), log_scale=LogScaleConfig(db_min=-80.0))
    with pytest.raises(ManifestError, match=r"audio\.log_scale\.db_min: manifest -100\.0, run -80\.0"):
        _stream(shards, expected_audio=other)


def test_index_sidecar_that_does_not_match_its_tar_is_refused(shards, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    sidecar_path = broken / "shard-000000.index.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["ranges"][0], sidecar["ranges"][1] = sidecar["ranges"][1], sidecar["ranges"][0]
    sidecar_path.write_text(json.dumps(sidecar))
    reader = _stream(str(broken))._reader
    with pytest.raises(ShardFormatError, match=f"expected sample '{sidecar['keys'][0]}'.*does not match the tar"):
        reader[0]


def test_fewer_samples_than_one_global_batch_is_refused(shards):
    with pytest.raises(ValueError, match=f"{NUM_NOTES} samples are fewer than one global batch of 36"):
        _stream(shards, global_batch=36, micro_batch=36)


@pytest.mark.parametrize("batch, world, micro, expected", [
    (8, 2, 0, (4, 1)), (8, 2, 2, (2, 2)), (8, 1, 2, (2, 4)), (6, 3, 1, (1, 2)),
])
def test_global_batch_splits_into_micro_batch_and_accumulation(batch, world, micro, expected):
    geometry = BatchGeometry.of(batch, world, micro)
    assert (geometry.micro_batch, geometry.grad_accum) == expected


@pytest.mark.parametrize("batch, world, micro, message", [
    (8, 3, 0, "data.batch_size=8 is not divisible by the 3 processes"),
    (8, 2, 3, r"data.batch_size=8 is not divisible by 2 processes x data.micro_batch_size=3 = 6"),
])
def test_global_batch_that_does_not_divide_is_refused_naming_the_numbers(batch, world, micro, message):
    with pytest.raises(ValueError, match=message):
        BatchGeometry.of(batch, world, micro)


def test_ranks_per_node_come_from_the_launcher_and_must_divide_the_world_size(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_ranks_per_node(0, 8) == 4
    assert resolve_ranks_per_node(0, 1) == 1, "a one-process stream in a multi-rank job is its own node"
    assert resolve_ranks_per_node(2, 8) == 2
    with pytest.raises(ValueError, match=r"world_size=6 is not a multiple of 4 ranks per node"):
        resolve_ranks_per_node(0, 6)


def test_partitions_that_do_not_divide_the_global_batch_warn_that_nodes_will_fetch_more(shards, caplog):
    with caplog.at_level(logging.WARNING, logger="mars_dist.data.stream"):
        _stream(shards, world_size=2, micro_batch=3, order=OrderConfig(partitions=2), ranks_per_node=1)
        assert not caplog.text
        _stream(shards, world_size=2, micro_batch=3, order=OrderConfig(partitions=4), ranks_per_node=1)
    assert "partitions=4,block=22 with global batch 6 on 2 nodes: each node will fetch more" in caplog.text


def test_from_config_uses_the_global_batch_and_derives_accumulation(shards):
    cfg = DataConfig(train_shards=shards, batch_size=GLOBAL_BATCH, micro_batch_size=1, seed=SEED)
    stream = ElasticStream.from_config(cfg, AudioConfig(), cfg.train_shards, rank=1, world_size=3)
    assert (stream.micro_batch, stream.grad_accum) == (1, 2)
    step = next(iter(stream))
    assert [len(mb["key"]) for mb in step] == [1, 1]


# ---------------------------------------------------------------- S3

def test_stream_from_s3_matches_the_local_stream_and_accepts_its_cursor(nsynth_root, shards, s3_url, tmp_path):
    shard_nsynth(nsynth_root, "train", s3_url, AudioConfig(), shard_size=SHARD_SIZE, workers=1, progress=False)
    cache = CacheConfig(dir=str(tmp_path / "cache"))
    local = _take(_stream(shards, micro_batch=3), 3)
    s3_first = _take(_stream(s3_url, micro_batch=3, num_workers=2, cache=cache), 1)
    s3_rest = _take(_stream(s3_url, micro_batch=2, num_workers=2, cursor=s3_first[-1][1], cache=cache), 2)
    assert s3_first + s3_rest == local


# ---------------------------------------------------------------- multi-process (gloo)

def _run_and_resume(url, num_steps, resume_after, resumed_steps):
    """On every rank: `num_steps` from the start, then a fresh stream from the cursor after `resume_after`."""
    rank, world = dist.get_rank(), dist.get_world_size()
    uninterrupted = _take(_stream(url, rank, world, micro_batch=1), num_steps)
    cursor = json.loads(json.dumps(uninterrupted[resume_after - 1][1]))
    resumed = _take(_stream(url, rank, world, micro_batch=1, cursor=cursor), resumed_steps)
    return uninterrupted, resumed


def _resume(url, cursor, num_steps, num_workers):
    rank, world = dist.get_rank(), dist.get_world_size()
    return _take(_stream(url, rank, world, micro_batch=2, num_workers=num_workers, cursor=cursor), num_steps)


RESUME_AFTER = 2  # steps; the cursor is mid-epoch 0
RESUMED_STEPS = 2 * STEPS_PER_EPOCH - RESUME_AFTER  # the rest of epoch 0 and all of epoch 1


@pytest.fixture(scope="module")
def two_rank_run(shards):
    """2 gloo ranks x (micro-batch 1, accumulation 3): two epochs, and a resume from mid-epoch 0."""
    per_rank = run_distributed(_run_and_resume, 2, shards, 2 * STEPS_PER_EPOCH, RESUME_AFTER, RESUMED_STEPS)
    return [u for u, _ in per_rank], [r for _, r in per_rank]


@pytest.mark.distributed
def test_two_ranks_see_each_sample_once_per_epoch_up_to_the_documented_drop(two_rank_run, nsynth_root):
    uninterrupted, _ = two_rank_run
    all_keys = {e.note_str for e in read_examples(nsynth_root, "train")}
    assert all(len(steps) == 2 * STEPS_PER_EPOCH for steps in uninterrupted), "every rank gets the same step count"
    assert uninterrupted[0][RESUME_AFTER - 1][1] == uninterrupted[1][RESUME_AFTER - 1][1], "ranks' cursors differ"
    assert uninterrupted[0][RESUME_AFTER - 1][1]["position"] == RESUME_AFTER * GLOBAL_BATCH
    for epoch in range(2):
        rank_keys = [sum((k for k, _ in steps[epoch * STEPS_PER_EPOCH:(epoch + 1) * STEPS_PER_EPOCH]), [])
                     for steps in uninterrupted]
        assert all(len(keys) == STEPS_PER_EPOCH * GLOBAL_BATCH // 2 for keys in rank_keys)
        seen = rank_keys[0] + rank_keys[1]
        assert len(seen) == len(set(seen)) == STEPS_PER_EPOCH * GLOBAL_BATCH, "a sample was repeated in an epoch"
        assert len(all_keys - set(seen)) == NUM_NOTES % GLOBAL_BATCH
    epochs = [_global_steps(uninterrupted)[e * STEPS_PER_EPOCH:(e + 1) * STEPS_PER_EPOCH] for e in (0, 1)]
    assert epochs[0] != epochs[1], "epoch 1 must be reshuffled"


@pytest.mark.distributed
def test_mid_epoch_cursor_resumes_identically_with_2_1_and_3_ranks(two_rank_run, shards):
    uninterrupted, resumed_2 = two_rank_run
    expected = _global_steps(uninterrupted)[RESUME_AFTER:]
    cursor = uninterrupted[0][RESUME_AFTER - 1][1]
    assert _global_steps(resumed_2) == expected
    resumed_1 = [_take(_stream(shards, micro_batch=2, num_workers=1, cursor=cursor), RESUMED_STEPS)]
    assert _global_steps(resumed_1) == expected
    # 3 ranks x 2 workers = 6 readers over 3 shards of 14, 14 and 5 samples
    resumed_3 = run_distributed(_resume, 3, shards, cursor, RESUMED_STEPS, 2)
    assert _global_steps(resumed_3) == expected
    final_cursors = [steps[-1][1] for steps in resumed_3] + [resumed_1[0][-1][1], resumed_2[0][-1][1]]
    assert all(c == uninterrupted[0][-1][1] for c in final_cursors)
