"""Validate a shard set against its manifest, decoding every sample, and print a summary.

    mars-inspect runs/shards/train        # or s3://bucket/prefix; `python -m data_tools.inspect_shards` alike
    mars-inspect s3://bucket/prefix --storage-option endpoint_url=http://...

Checks, per shard: size and sha256 against the manifest; the index sidecar (keys, byte ranges)
against the tar's actual member layout; every sample's members decode — the CMX tensor with the
manifest's dtype, shape and value range, the labels as a complete NSynth entry, the optional FLAC
as the configured length; no key appears twice; the per-channel mean/std recomputed from the
stored tensors match the manifest. Exits 1 and names shard and problem if anything is off; a
location that does not exist or cannot be read (no such folder, bucket or endpoint) is the user's
mistake: one `mars-inspect: error:` line, exit 2.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass, field
from typing import Any, Counter, Dict, List, Mapping, Optional, Sequence, Set

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data_tools.nsynth import NoteError, NSynthEntry
from data_tools.shard_writer import AUDIO_MEMBER, CMX_MEMBER, LABELS_MEMBER, ChannelStats
from data_tools.storage import check_storage_options, storage_errors, storage_option_value
from mars_dist.cli import console_script
from mars_dist.data import fs
from mars_dist.data.manifest import ManifestError, read_manifest
from mars_dist.errors import UserFileNotFoundError

PROG = "mars-inspect"
HISTOGRAM_FIELDS = ("instrument_family_str", "instrument_source_str", "velocity")
STATS_TOLERANCE = 1e-6


class ShardProblem(ValueError):
    """One thing wrong with one shard; the message starts with the shard's name."""


@dataclass
class InspectReport:
    url: str
    manifest: Dict[str, Any]
    problems: List[str] = field(default_factory=list)
    samples: int = 0
    bytes: int = 0
    histograms: Dict[str, Counter] = field(default_factory=dict)
    pitches: Counter = field(default_factory=collections.Counter)
    stats: Optional[ChannelStats] = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _tar_samples(blob: bytes, where: str) -> List[Dict[str, Any]]:
    """The tar's samples in order: key, members {suffix: bytes}, byte range [first header, end of last block)."""
    samples: List[Dict[str, Any]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    raise ShardProblem(f"{where}: member {info.name!r} is not a regular file")
                key, dot, suffix = info.name.partition(".")
                if not dot:
                    raise ShardProblem(f"{where}: member {info.name!r} has no '.suffix' after its key")
                end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                if not samples or samples[-1]["key"] != key:
                    samples.append({"key": key, "members": {}, "range": [info.offset, end]})
                sample = samples[-1]
                if suffix in sample["members"]:
                    raise ShardProblem(f"{where}: member {info.name!r} appears twice")
                sample["members"][suffix] = tar.extractfile(info).read()
                sample["range"][1] = end
    except tarfile.TarError as exc:
        raise ShardProblem(f"{where}: not a readable tar ({exc})") from exc
    return samples


def _check_cmx(data: bytes, where: str, manifest: Mapping[str, Any]) -> np.ndarray:
    try:
        x_CHW = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ShardProblem(f"{where}: not a readable .npy ({exc})") from exc
    expected_dtype = np.dtype(manifest.get("cmx_dtype", "float16"))
    if x_CHW.dtype != expected_dtype or list(x_CHW.shape) != list(manifest["cmx_shape"]):
        raise ShardProblem(f"{where}: {x_CHW.dtype} {list(x_CHW.shape)}, expected {expected_dtype} "
                           f"{list(manifest['cmx_shape'])} (manifest cmx_shape)")
    if not np.all(np.isfinite(x_CHW)):
        raise ShardProblem(f"{where}: contains NaN or infinite values")
    low, high = manifest["audio"].get("log_scale", {}).get("range", [-np.inf, np.inf])
    if x_CHW.min() < low or x_CHW.max() > high:
        raise ShardProblem(f"{where}: values span [{x_CHW.min()}, {x_CHW.max()}], outside the log scale's "
                           f"range [{low}, {high}]")
    return x_CHW


def _check_labels(data: bytes, key: str, where: str, manifest: Mapping[str, Any]) -> NSynthEntry:
    """The labels as a valid NSynth entry for `key`, stating the stored sample rate."""
    try:
        return NSynthEntry.from_json(key, json.loads(data), sample_rate=manifest["audio"]["stft"]["sample_rate"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardProblem(f"{where}: not valid JSON ({exc})") from exc
    except NoteError as exc:
        raise ShardProblem(f"{where}: {exc.problem}") from exc


def _check_audio(data: bytes, where: str, manifest: Mapping[str, Any]) -> None:
    stft = manifest["audio"]["stft"]
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ShardProblem(f"{where}: not readable audio ({exc})") from exc
    if wave.shape != (stft["num_samples"], 1) or rate != stft["sample_rate"]:
        raise ShardProblem(f"{where}: {wave.shape[1]} channel(s) x {wave.shape[0]} samples at {rate} Hz, expected "
                           f"mono x {stft['num_samples']} at {stft['sample_rate']} Hz")


def _read_sidecar(url: str, storage_options: Optional[Mapping[str, Any]], where: str) -> Dict[str, Any]:
    if not fs.exists(url, storage_options):
        raise ShardProblem(f"{where}: index sidecar {url} is missing")
    try:
        sidecar = json.loads(fs.read_bytes(url, storage_options))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardProblem(f"{where}: index sidecar is not valid JSON ({exc})") from exc
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("keys"), list) \
            or not isinstance(sidecar.get("ranges"), list):
        raise ShardProblem(f"{where}: index sidecar lacks 'keys' and 'ranges' lists")
    return sidecar


def inspect_shard(report: InspectReport, shard: Mapping[str, Any], storage_options: Optional[Mapping[str, Any]],
                  seen_keys: Set[str]) -> None:
    """Check one shard completely; add its samples to the report or raise ShardProblem."""
    manifest, name = report.manifest, shard["name"]
    tar_url = fs.join(report.url, name)
    if not fs.exists(tar_url, storage_options):
        raise ShardProblem(f"{name}: missing ({tar_url})")
    blob = fs.read_bytes(tar_url, storage_options)
    if len(blob) != shard["bytes"]:
        raise ShardProblem(f"{name}: {len(blob)} bytes, manifest says {shard['bytes']}")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != shard["sha256"]:
        raise ShardProblem(f"{name}: sha256 {digest}, manifest says {shard['sha256']}")
    sidecar = _read_sidecar(fs.join(report.url, shard["index"]), storage_options, name)
    samples = _tar_samples(blob, name)
    keys = [s["key"] for s in samples]
    if len(samples) != shard["num_samples"]:
        raise ShardProblem(f"{name}: {len(samples)} samples in the tar, manifest says {shard['num_samples']}")
    if sidecar["keys"] != keys:
        raise ShardProblem(f"{name}: index sidecar keys differ from the tar's samples (first differing at "
                           f"position {next(i for i, (a, b) in enumerate(zip(sidecar['keys'] + [None], keys + [None])) if a != b)})")
    for sample, recorded in zip(samples, sidecar["ranges"]):
        if list(recorded) != sample["range"]:
            raise ShardProblem(f"{name}: index sidecar gives sample {sample['key']!r} bytes {list(recorded)}, "
                               f"the tar has it at {sample['range']}")
    expected_members = set(manifest.get("members", [CMX_MEMBER, LABELS_MEMBER]))
    stats = ChannelStats.empty(manifest["cmx_shape"][0])
    for sample in samples:
        key = sample["key"]
        where = f"{name}: sample {key!r}"
        if key in seen_keys:
            raise ShardProblem(f"{where}: key appears in an earlier shard too")
        seen_keys.add(key)
        members = sample["members"]
        if not {CMX_MEMBER, LABELS_MEMBER} <= set(members) or set(members) - expected_members:
            raise ShardProblem(f"{where}: members {sorted(members)}, expected {sorted(expected_members)}")
        stats = stats.merge(ChannelStats.of_sample(_check_cmx(members[CMX_MEMBER], f"{where} {CMX_MEMBER}", manifest)))
        entry = _check_labels(members[LABELS_MEMBER], key, f"{where} {LABELS_MEMBER}", manifest)
        if AUDIO_MEMBER in expected_members:
            if AUDIO_MEMBER not in members:
                raise ShardProblem(f"{where}: {AUDIO_MEMBER} missing (manifest lists it as a member)")
            _check_audio(members[AUDIO_MEMBER], f"{where} {AUDIO_MEMBER}", manifest)
        for label in HISTOGRAM_FIELDS:
            report.histograms.setdefault(label, collections.Counter())[getattr(entry, label)] += 1
        report.pitches[entry.pitch] += 1
    report.samples += len(samples)
    report.bytes += len(blob)
    report.stats = stats if report.stats is None else report.stats.merge(stats)


def _check_totals(report: InspectReport) -> None:
    manifest = report.manifest
    if report.samples != manifest["num_samples"]:
        report.problems.append(f"manifest: num_samples={manifest['num_samples']}, shards hold {report.samples}")
    if report.stats is None or report.problems:
        return  # statistics over a partial set would only repeat the problems above
    for key, ours in (("channel_mean", report.stats.mean_C), ("channel_std", report.stats.std_C())):
        theirs = np.asarray(manifest[key], dtype=np.float64)
        if not np.allclose(ours, theirs, rtol=0, atol=STATS_TOLERANCE):
            report.problems.append(f"manifest: {key}={theirs.tolist()}, recomputed from the shards {ours.tolist()}")


def _check_location(url: str, storage_options: Optional[Mapping[str, Any]]) -> None:
    """UserFileNotFoundError unless `url` (or the folder of `url` naming a manifest) is a folder or an S3 prefix
    holding something: what is there is inspected, a location with nothing at it is a mistyped path."""
    location = (url.rpartition("/")[0] or ".") if url.endswith(".json") else url
    check_storage_options(url, storage_options)
    with storage_errors(url, storage_options):
        found = fs.exists(location, storage_options)
    if not found:
        raise UserFileNotFoundError(f"{url}: no such folder or S3 prefix (expected a shard set's folder or "
                                    "s3://bucket/prefix, holding manifest.json)")
    if not fs.is_s3(location) and not os.path.isdir(location):
        raise UserFileNotFoundError(f"{url}: is a file, not a folder (expected a shard set's folder holding "
                                    "manifest.json)")


def inspect_shards(url: str, storage_options: Optional[Mapping[str, Any]] = None,
                   progress: bool = False) -> InspectReport:
    """Check every shard of the set at `url` against its manifest; problems are collected, not raised.

    A location that does not exist raises UserFileNotFoundError; one that cannot be read (permissions,
    an unreachable S3 endpoint, no credentials) raises data_tools.storage.StorageError naming it.
    """
    _check_location(url, storage_options)
    with storage_errors(url, storage_options):
        try:
            manifest = read_manifest(url, storage_options)
        except ManifestError as exc:
            return InspectReport(url, {}, problems=[str(exc)])
        report = InspectReport(url, manifest)
        seen_keys: Set[str] = set()
        for shard in tqdm(manifest["shards"], desc="inspecting", unit="shard", disable=not progress):
            try:
                inspect_shard(report, shard, storage_options, seen_keys)
            except ShardProblem as exc:
                report.problems.append(str(exc))
    _check_totals(report)
    return report


def _histogram_line(counter: Counter) -> str:
    return ", ".join(f"{value}: {count}" for value, count in sorted(counter.items()))


def format_summary(report: InspectReport) -> str:
    manifest = report.manifest
    if not manifest:
        return f"{report.url}: no usable manifest"
    shards = manifest["shards"]
    sizes = [s["num_samples"] for s in shards]
    lines = [
        f"{report.url}: split {manifest['split']!r}, {manifest['num_samples']} samples in {len(shards)} shards "
        f"({min(sizes)}-{max(sizes)} per shard), {len(manifest['skipped'])} notes skipped at sharding",
        f"  cmx: {manifest.get('cmx_dtype', 'float16')} {manifest['cmx_shape']}, layout "
        f"{manifest['audio']['cmx']['layout']}, members {manifest.get('members')}",
        f"  bytes: {report.bytes} checked of {sum(s['bytes'] for s in shards)} "
        f"({sum(s['bytes'] for s in shards) / max(manifest['num_samples'], 1):.0f} bytes/note)",
    ]
    for label, counter in report.histograms.items():
        lines.append(f"  {label}: {_histogram_line(counter)}")
    if report.pitches:
        octaves = collections.Counter(f"{12 * (p // 12)}-{12 * (p // 12) + 11}" for p in report.pitches.elements())
        lines.append(f"  pitch: {min(report.pitches)}..{max(report.pitches)}, by octave: "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(octaves.items(), key=lambda kv: int(kv[0].split('-')[0])))}")
    lines.append(f"  channel mean: {[round(v, 4) for v in manifest['channel_mean']]}, "
                 f"std: {[round(v, 4) for v in manifest['channel_std']]}")
    for item in manifest["skipped"]:
        lines.append(f"  skipped at sharding: {item['note_str']}: {item['problem']}")
    return "\n".join(lines)


def _parse_storage_option(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE (an fsspec/s3fs option)")
    return key, storage_option_value(key, value)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """0: the set is sound; 1: it was inspected and has problems (listed on stderr); a user error propagates."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("url", help="shard folder or s3://bucket/prefix (holding manifest.json)")
    parser.add_argument("--storage-option", action="append", type=_parse_storage_option, default=[],
                        help="fsspec/s3fs option KEY=VALUE (default: AWS_* variables)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    report = inspect_shards(args.url, dict(args.storage_option), progress=not args.no_progress)
    print(format_summary(report))
    if not report.ok:
        for problem in report.problems:
            print(f"PROBLEM {problem}", file=sys.stderr)
        print(f"{args.url}: {len(report.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"OK: every sample of {report.samples} decoded and matches the manifest")
    return 0


entry = console_script(main, PROG)


if __name__ == "__main__":
    entry()
