"""Train a task (tokenizer, a generator family such as next_scale, classifier) with the backend the
run config names; when it finishes, the task's model is exported to RUN_DIR/export/ (stages.export).

One process, no launcher (debug backend; the GPU if there is one, else the CPU):
    mars-train --config configs/tokenizer/tiny.yaml [--resume auto|none|PATH] [key=value ...]
    python mars_dist/train.py ...   (the same; also python -m mars_dist.train)
Several processes on one machine (add --nnodes MIN:MAX --rdzv-backend c10d --rdzv-endpoint HOST:PORT
--max-restarts N for elastic multi-node runs that survive a dead rank):
    torchrun --nproc-per-node 4 -m mars_dist.train --config X.yaml engine.backend=accelerate
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml mars_dist/train.py --config X.yaml engine.backend=accelerate
    mars-torchrun ...same arguments as torchrun...   # exits 75 itself when preempted
Exit status: 0 finished, 75 preempted (requeue the job; the newest committed checkpoint resumes), 2 a user's
mistake (one `mars-train: error:` line: a bad key, value or path), 1 anything else (a bug: its traceback).
"""
from __future__ import annotations

import argparse
import gc
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

# Only the standard library at import time: the preemption handlers are installed before the
# seconds of importing torch, DeepSpeed and Accelerate (see main).
from mars_dist.cli import make_parser, console_script
from mars_dist.engine.preemption import REQUEUE_EXIT_CODE, PreemptionWatcher

if TYPE_CHECKING:
    from mars_dist.engine.backend import Backend


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = make_parser("mars-train", __doc__)
    parser.add_argument("--config", required=True, help="run config YAML (configs/...)")
    parser.add_argument("--resume", default=None, help="auto | none | a checkpoint folder (default: checkpoint.resume)")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's; LOCAL_RANK is read instead
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=100")
    return parser.parse_args(argv)


def build_stream(cfg, backend: "Backend", cursor):
    from mars_dist.data.stream import ElasticStream

    return ElasticStream.from_config(cfg.data, cfg.audio, cfg.data.train_shards, backend.rank, backend.world_size, cursor)


def fixed_validation_batch(cfg, micro_batch: int):
    """The first micro-batch of the validation shards (the training shards if none), read as the
    run's data settings say (order, cache, retries, storage): the same on every rank and every resume."""
    from mars_dist.data.stream import ElasticStream

    url = cfg.data.valid_shards or cfg.data.train_shards
    one_batch = replace(cfg.data, batch_size=micro_batch, micro_batch_size=0, num_workers=0)
    stream = ElasticStream.from_config(one_batch, cfg.audio, url, rank=0, world_size=1)
    try:
        return next(iter(stream))[0]
    finally:
        stream.close()  # its read-ahead and cache pins go now, before training forks its workers


def main(argv: Optional[List[str]] = None) -> int:
    """Runs one training job. Installs the SIGUSR1/SIGTERM handlers first, for the rest of the
    process's life: a preemption during imports, data set-up or checkpoint loading then exits 75
    like one during training, and a worker that torchrun signals after its last step still exits
    with its own status. (An in-process caller keeps the handlers: signals only set a flag then.)"""
    preemption = PreemptionWatcher().install()
    status = _train(parse_args(argv), preemption)
    # The run's DDP wrappers and process groups go now, while Python is fully alive: left to the
    # interpreter's shutdown, their C++ threads can abort the process ("terminate called without an
    # active exception"; measured in 5 of 20 two-process gloo exits soon after a collective).
    gc.collect()
    return status


def _train(args: argparse.Namespace, preemption: PreemptionWatcher) -> int:
    """The run itself; its heavy imports come after main installed the preemption handlers."""
    from mars_dist.config import load_config
    from mars_dist.engine.backends import build_backend
    from mars_dist.engine.checkpoint import read_train_state, resolve_resume
    from mars_dist.tasks.registry import task_class
    from mars_dist.engine.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    backend = build_backend(cfg)
    try:
        # Every rank validates the choice (a bad path fails everywhere); rank 0's pick of "auto" wins.
        resume_from = backend.broadcast_object(resolve_resume(Path(cfg.run_dir), args.resume or cfg.checkpoint.resume))
        cursor = read_train_state(resume_from)["cursor"] if resume_from else None
        stream = build_stream(cfg, backend, cursor)
        task = task_class(cfg.task)(cfg, stream.manifest)
        valid_batch = fixed_validation_batch(cfg, stream.geometry.micro_batch) if cfg.stages.media.every > 0 else None
        result = Trainer(cfg, backend, task, stream, resume_from=resume_from, valid_batch=valid_batch, preemption=preemption).train()
    finally:
        backend.shutdown()
    return REQUEUE_EXIT_CODE if result.preempted else 0


entry = console_script(main, "mars-train")


if __name__ == "__main__":
    entry()
