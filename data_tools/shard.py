"""NSynth (real or synthetic) -> WebDataset tar shards of CMX tensors + labels, in a folder or on S3.

    mars-shard --nsynth-root ROOT --split train --out runs/shards/train \\
        [--shard-size 256] [--workers N] [--seed 0] [--on-error fail|skip] [--with-audio] \\
        [--resample] [--verify-content] [--config run.yaml] [audio.cmx.layout=contiguous ...]

Notes are shuffled globally with the seed, cut into shards of `--shard-size`, and written by
worker processes (each writes whole shards; see shard_writer.py). A run first checks which
shards an earlier run already completed from the same notes, settings and unchanged audio files,
and reuses them; `manifest.json` is removed before any shard is (re)written and written again,
atomically, only after every shard is complete — so a manifest never points at a partial or stale
shard, however the run ends — and then the files it does not list are removed. Layout and
manifest fields: docs/data.md, "Shards". `python -m data_tools.shard` is the same command.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from data_tools.nsynth import LayoutError, NoteError, NSynthEntry, read_examples
from data_tools.shard_writer import (
    AUDIO_MEMBER, CMX_MEMBER, LABELS_MEMBER, ChannelStats, ShardJob, ShardTask, completed_record,
    frontend_for, plan_fingerprint, write_shard,
)
from data_tools.storage import prepare_output, remove_temporaries, remove_unlisted, storage_errors
from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.cli import console_script
from mars_dist.config import ConfigError, load_config
from mars_dist.data import fs
from mars_dist.data.manifest import FORMAT, MANIFEST_NAME
from mars_dist.errors import UserValueError

log = logging.getLogger("data_tools.shard")

PROG = "mars-shard"
ON_ERROR = ("fail", "skip")


class ShardingError(UserValueError):
    """The run as a whole cannot proceed (bad arguments, unreadable split, nothing left to write)."""


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan_shards(entries: Sequence[NSynthEntry], seed: int, shard_size: int) -> List[List[NSynthEntry]]:
    """Shuffle all notes with `seed` (one global permutation), then cut them into shards in order.

    `entries` come sorted by note_str from read_examples, so the plan is a pure function of
    (the split's valid notes, seed, shard_size): a re-run plans the same shards.
    """
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(entries))
    shuffled = [entries[i] for i in order]
    return [shuffled[i:i + shard_size] for i in range(0, len(shuffled), shard_size)]


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per worker process; the pool provides the parallelism


def _indexed(fn: Callable[[ShardJob, ShardTask], Any], job: ShardJob, task: ShardTask) -> Tuple[int, Any]:
    # converted where raised: botocore's exceptions do not survive the trip back from a worker
    with storage_errors(job.out_url, job.storage_options):
        return task.index, fn(job, task)


def worker_context() -> multiprocessing.context.BaseContext:
    """The fork-server context shard workers come from; the server starts on first use (see ShardExecutor)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["data_tools.shard_writer"])
    return ctx


class ShardExecutor:
    """Runs per-shard functions in this process (workers == 1) or in a pool of worker processes.

    Workers come from a fork server, not from forking this process: s3fs clients and torch thread
    pools do not survive a fork, while the server is a clean process that has only imported the
    shard writer (so each worker starts in milliseconds instead of re-importing torch as a spawned
    one would). One pool serves both the completeness check and the writing. An exception in a
    worker propagates to the caller; leaving the `with` block terminates the pool.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None

    def __enter__(self) -> "ShardExecutor":
        if self.workers > 1:
            self._pool = worker_context().Pool(self.workers, initializer=_init_worker)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def map_unordered(self, fn: Callable[[ShardJob, ShardTask], Any], job: ShardJob,
                      tasks: Sequence[ShardTask]) -> Iterator[Tuple[ShardTask, Any]]:
        """(task, fn(job, task)) for every task, in completion order."""
        by_index = {task.index: task for task in tasks}
        if self._pool is None:
            results: Iterable[Tuple[int, Any]] = (_indexed(fn, job, task) for task in tasks)
        else:
            results = self._pool.imap_unordered(functools.partial(_indexed, fn, job), tasks)
        for index, result in results:
            yield by_index[index], result


def _check_arguments(shard_size: int, workers: Optional[int], seed: int, on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ShardingError(f"on_error={on_error!r}: expected one of {', '.join(ON_ERROR)}")
    for name, value, minimum in (("shard_size", shard_size, 1), ("workers", workers, 1), ("seed", seed, 0)):
        if value is not None and value < minimum:
            raise ShardingError(f"{name}={value}: expected an integer >= {minimum}")


def _frontend(audio_cfg: AudioConfig) -> AudioFrontend:
    """The run's AudioFrontend; audio numbers it cannot work with are the user's error, named."""
    try:
        return frontend_for(audio_cfg)
    except ValueError as exc:
        raise ShardingError(f"audio config: {exc}") from exc


def _read_entries(nsynth_root: str, split: str, on_error: str, sample_rate: Optional[int]) -> tuple:
    problems: List[NoteError] = []
    try:
        entries = read_examples(nsynth_root, split, errors=problems if on_error == "skip" else None,
                                sample_rate=sample_rate)
    except LayoutError as exc:
        raise ShardingError(str(exc)) from exc
    for problem in problems:
        log.warning("skipping %s", problem)
    return entries, [{"note_str": p.note_str, "problem": p.problem} for p in problems]


def plan_tasks(entries: Sequence[NSynthEntry], seed: int, shard_size: int, description: Mapping[str, Any],
               with_audio: bool, resample: bool) -> List[ShardTask]:
    """The shards to have, each with the fingerprint of its plan (see plan_fingerprint)."""
    return [ShardTask(i, tuple(notes), plan_fingerprint(notes, description, with_audio, resample))
            for i, notes in enumerate(plan_shards(entries, seed, shard_size))]


def _complete_shards(job: ShardJob, tasks: Sequence[ShardTask], workers: int, progress: bool) -> Dict[int, Dict[str, Any]]:
    """Every planned shard's completion record: reused where an earlier run completed it, else written now."""
    manifest_url = fs.join(job.out_url, MANIFEST_NAME)
    records: Dict[int, Dict[str, Any]] = {}
    with ShardExecutor(min(workers, len(tasks))) as executor:
        with tqdm(total=len(tasks), desc=f"checking {job.split} shards", unit="shard", disable=not progress) as bar:
            for task, record in executor.map_unordered(completed_record, job, tasks):
                if record is not None:
                    records[task.index] = record
                bar.update(1)
        todo = [task for task in tasks if task.index not in records]
        log.info("%s: %d notes in %d shards; %d already complete, %d to write", job.split,
                 sum(len(t.entries) for t in tasks), len(tasks), len(records), len(todo))
        if todo:
            with storage_errors(job.out_url, job.storage_options):
                fs.remove(manifest_url, job.storage_options)  # from here on shards change: the old manifest would lie
        with tqdm(total=sum(len(t.entries) for t in todo), desc=f"sharding {job.split}", unit="note",
                  disable=not progress) as bar:
            for task, record in executor.map_unordered(write_shard, job, todo):
                records[task.index] = record
                bar.update(len(task.entries))
    return records


def shard_nsynth(
    nsynth_root: str,
    split: str,
    out_url: str,
    audio_cfg: AudioConfig,
    *,
    shard_size: int = 256,
    workers: Optional[int] = None,
    seed: int = 0,
    on_error: str = "fail",
    with_audio: bool = False,
    resample: bool = False,
    verify_content: bool = False,
    storage_options: Optional[Mapping[str, Any]] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Shard `ROOT/nsynth-{split}` into `out_url` (folder or s3:// prefix); return the manifest written.

    Notes must have audio_cfg.stft's sample rate and length (`resample`: other rates are resampled).
    `workers` processes (default: all cores; 1 means this process) each write whole shards.
    With on_error="fail" the first bad note raises its NoteError (shards finished before it stay
    complete and are reused by the next run; no manifest is written); with "skip" bad notes are
    logged and listed in the manifest's "skipped". A shard is reused only if its notes' audio files
    are unchanged (size + mtime, or with `verify_content` size + sha256). Once the manifest is
    written, the sharder's files it does not list (another plan's shards, temporaries) are removed.
    File-system and S3 problems raise a StorageError naming the URL.
    """
    _check_arguments(shard_size, workers, seed, on_error)
    workers = default_workers() if workers is None else workers
    options = dict(storage_options or {})
    frontend = _frontend(audio_cfg)
    description = frontend.describe()
    entries, skipped = _read_entries(nsynth_root, split, on_error, None if resample else audio_cfg.stft.sample_rate)
    if not entries:
        raise ShardingError(f"{nsynth_root}: split {split!r} has no usable notes")
    prepare_output(out_url, options)  # only once the input is known to be usable: a refused run writes nothing
    tasks = plan_tasks(entries, seed, shard_size, description, with_audio, resample)
    staging_dir = tempfile.mkdtemp(prefix="mars_dist-shard-") if fs.is_s3(out_url) else None
    job = ShardJob(nsynth_root, split, out_url, audio_cfg, with_audio, on_error, options, resample=resample,
                   verify_content=verify_content, staging_dir=staging_dir)
    try:
        remove_temporaries(out_url, options)
        records = _complete_shards(job, tasks, workers, progress)
    finally:  # the workers are gone by now (a failed run terminates them mid-write): drop what they staged
        remove_temporaries(out_url, options)
        if staging_dir is not None:
            shutil.rmtree(staging_dir, ignore_errors=True)

    manifest = build_manifest(job, tasks, records, skipped, description, list(frontend.cmx_shape), seed, shard_size)
    with storage_errors(out_url, options):
        fs.write_bytes_atomic(fs.join(out_url, MANIFEST_NAME), json.dumps(manifest, indent=1).encode(), options)
    listed = [MANIFEST_NAME] + [name for s in manifest["shards"] for name in (s["name"], s["index"])]
    removed = remove_unlisted(out_url, listed, options)
    if removed:
        log.info("%s: removed %d files the manifest does not list (%s, ...)", out_url, len(removed), removed[0])
    log.info("%s: wrote %d samples in %d shards (%d skipped) to %s", split, manifest["num_samples"],
             len(tasks), len(manifest["skipped"]), out_url)
    return manifest


def build_manifest(job: ShardJob, tasks: Sequence[ShardTask], records: Mapping[int, Dict[str, Any]],
                   skipped_entries: List[Dict[str, str]], description: Dict[str, Any], cmx_shape: List[int],
                   seed: int, shard_size: int) -> Dict[str, Any]:
    """The manifest (docs/data.md) from every shard's completion record."""
    stats = ChannelStats.empty(cmx_shape[0])
    shards, skipped = [], list(skipped_entries)
    for task in tasks:
        record = records[task.index]
        shards.append({"name": task.name, "index": task.index_name, "num_samples": len(record["keys"]),
                       "bytes": record["bytes"], "sha256": record["sha256"]})
        skipped.extend(record["skipped"])
        stats = stats.merge(ChannelStats.from_json(record["stats"]))
    num_samples = sum(s["num_samples"] for s in shards)
    if num_samples == 0:
        raise ShardingError(f"split {job.split!r}: every note was skipped ({len(skipped)} problems), nothing to train on")
    members = [CMX_MEMBER, LABELS_MEMBER] + ([AUDIO_MEMBER] if job.with_audio else [])
    return {
        "format": FORMAT,
        "split": job.split,
        "audio": description,
        "cmx_shape": cmx_shape,
        "cmx_dtype": "float16",
        "members": members,
        "num_samples": num_samples,
        "shard_size": shard_size,
        "shards": shards,
        "channel_mean": stats.mean_C.tolist(),
        "channel_std": stats.std_C().tolist(),
        "skipped": sorted(skipped, key=lambda s: s["note_str"]),
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


_OVERRIDE_SCOPES = ("audio.", "data.storage_options")


def _audio_and_storage(config: Optional[str], overrides: Iterable[str]) -> tuple:
    overrides = list(overrides)
    for item in overrides:
        if not item.startswith(_OVERRIDE_SCOPES):
            raise ConfigError(f"override '{item}': {PROG} only uses audio.* and data.storage_options.* settings")
    cfg = load_config(config, overrides)
    return cfg.audio, dict(cfg.data.storage_options)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, else the flag's error names the value and the bound."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {minimum}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--nsynth-root", required=True, help="folder holding nsynth-{split}/")
    parser.add_argument("--split", required=True, help="train, valid, test, ...")
    parser.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    parser.add_argument("--shard-size", type=_int_at_least(1), default=256, help="notes per shard (default 256)")
    parser.add_argument("--workers", type=_int_at_least(1), default=None,
                        help="processes (default: all cores; 1 = in-process)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the global shuffle (default 0)")
    parser.add_argument("--on-error", choices=ON_ERROR, default="fail",
                        help="a bad note stops the run (fail, default) or is logged and listed in the manifest (skip)")
    parser.add_argument("--with-audio", action="store_true", help="also store each note's audio as {key}.flac")
    parser.add_argument("--resample", action="store_true",
                        help="resample notes whose rate is not audio.stft.sample_rate (default: they are bad notes)")
    parser.add_argument("--verify-content", action="store_true",
                        help="reuse a finished shard only if its audio files hash the same (default: same size "
                             "and mtime)")
    parser.add_argument("--config", default=None, help="run config YAML whose audio.* (and data.storage_options) apply")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. audio.cmx.layout=contiguous")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI: 0 on success. A user error (bad note, setting, path, bucket: a UserError) propagates, for
    run_cli to print as one `mars-shard: error:` line with exit status 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    audio_cfg, storage_options = _audio_and_storage(args.config, args.overrides)
    manifest = shard_nsynth(args.nsynth_root, args.split, args.out, audio_cfg, shard_size=args.shard_size,
                            workers=args.workers, seed=args.seed, on_error=args.on_error, with_audio=args.with_audio,
                            resample=args.resample, verify_content=args.verify_content,
                            storage_options=storage_options, progress=not args.no_progress)
    print(f"{args.out}: {manifest['num_samples']} samples in {len(manifest['shards'])} shards, "
          f"{len(manifest['skipped'])} skipped")
    return 0


entry = console_script(main, PROG)


if __name__ == "__main__":
    entry()
