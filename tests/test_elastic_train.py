"""Elastic resume of the tokenizer GAN on every backend: 2 processes, then 1, then 3, nothing repeated or skipped.

One epoch of the 48-note tiny set (8 steps of a global batch of 6) is trained in three launches of
real gloo process groups: steps 0-3 on 2 processes, 4-5 on 1, 6-7 on 3 (checkpoints every 2
steps), each resuming the newest checkpoint of the one before (`--resume auto`), with the real
Trainer, stream and checkpoints (tests.toy_task.build_trainer builds them as mars_dist.train does).
Each launch trains every backend in turn, in its own run folder. The task records the sample keys
every rank trained on: over the epoch every note must appear exactly once (the data cursor
continues across the world-size changes without repeats or gaps) and every step must hold exactly
one global batch. The tiny config's dead-code restart is on, so ZeRO-3 on 3 processes also writes
restarted codebook rows into partitions that 3 does not divide (64 x 8 codes).

Launching through torchrun itself is covered by test_torchrun_dead_rank.py and
test_preemption_launchers.py; backend-level state equality after an elastic resume by
test_backend_distributed.py and test_engine_accelerate_resume.py.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import pytest

from mars_dist.bench.engine import VARIANTS
from mars_dist.engine.checkpoint import committed_checkpoints, read_train_state
from mars_dist.tasks.tokenizer import TokenizerTask
from tests.fixtures.dist import run_distributed
from tests.fixtures.processes import extensions_env
from tests.test_tokenizer_resume import TINY
from tests.toy_task import build_trainer

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

GLOBAL_BATCH = 6
# ZeRO-3 last: its engine replaces torch.nn.functional.linear process-wide, which FSDP2 does not survive.
BACKENDS = {"debug": ["engine.backend=debug"], **VARIANTS}
# (processes, steps trained by the end of the launch)
LAUNCHES = ((2, 4), (1, 6), (3, 8))


class RecordsKeys:
    """Task mixin: appends the keys of every micro-batch it trains on to run_dir/keys/rank-R.jsonl."""

    def micro_step(self, batch: Dict[str, Any], models, step: int, backward):
        path = Path(self.cfg.run_dir) / "keys" / f"rank-{os.environ.get('RANK', '0')}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps({"step": step, "keys": list(batch["key"])}) + "\n")
        return super().micro_step(batch, models, step, backward)


class KeyRecordingTokenizerTask(RecordsKeys, TokenizerTask):
    pass


def train_every_backend(root: str, shards: str, max_steps: int) -> Dict[str, Any]:
    """One launch: every backend resumes its newest checkpoint (if any) and trains up to `max_steps`."""
    out = {}
    for backend, overrides in BACKENDS.items():
        run_dir = Path(root) / backend
        trainer = build_trainer([f"run_dir={run_dir}", f"data.train_shards={shards}", "task=tests.test_elastic_train:KeyRecordingTokenizerTask",
                                 "engine.device=cpu", "logging.wandb_mode=disabled", "stages.media.every=0", "train.log_every=2",
                                 f"data.batch_size={GLOBAL_BATCH}", "checkpoint.every_steps=2", "checkpoint.keep_last=2",
                                 f"train.max_steps={max_steps}", *overrides], resume="auto", config_path=TINY)
        result = trainer.train()
        resumed_from = read_train_state(trainer.resume_from)["world_size"] if trainer.resume_from else None
        out[backend] = {"step": result.step, "world_size": trainer.backend.world_size, "resumed_from_world_size": resumed_from}
    return out


@pytest.fixture(scope="module")
def launches(tiny_shards, tmp_path_factory) -> List[Dict[str, Any]]:
    root = tmp_path_factory.mktemp("elastic")
    return [run_distributed(train_every_backend, world, str(root), tiny_shards["train"], max_steps,
                            timeout_s=900, init_process_group=False, env=extensions_env())[0]
            for world, max_steps in LAUNCHES] + [{"root": root}]


def _keys_by_step(run_dir: Path) -> Dict[int, list]:
    by_step = defaultdict(list)
    for path in (run_dir / "keys").glob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            by_step[record["step"]].extend(record["keys"])
    return dict(by_step)


@pytest.mark.parametrize("backend", BACKENDS)
def test_2_then_1_then_3_processes_train_every_sample_of_the_epoch_exactly_once(launches, tiny_shards, backend):
    previous_world = None
    for (world, max_steps), launch in zip(LAUNCHES, launches):
        assert launch[backend] == {"step": max_steps, "world_size": world, "resumed_from_world_size": previous_world}, launch[backend]
        previous_world = world
    run_dir = launches[-1]["root"] / backend
    assert committed_checkpoints(run_dir)[-1][0] == LAUNCHES[-1][1]

    steps = _keys_by_step(run_dir)
    assert sorted(steps) == list(range(8)), f"trained steps {sorted(steps)}"
    for step, keys in steps.items():
        assert len(keys) == GLOBAL_BATCH, f"step {step} trained on {len(keys)} samples, expected {GLOBAL_BATCH}"
    seen = [key for step in sorted(steps) for key in steps[step]]
    repeated = sorted({k for k in seen if seen.count(k) > 1})
    assert not repeated, f"samples trained twice in one epoch: {repeated}"
    assert len(seen) == tiny_shards["manifests"]["train"]["num_samples"], f"{len(seen)} distinct samples in the epoch"
