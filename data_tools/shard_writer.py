"""Write one WebDataset shard of NSynth notes, and recognise a shard that an earlier run completed.

A shard task is a pure function of its planned notes: it is written to a temporary file, hashed,
moved into place (rename locally, upload on S3), and only then is its index sidecar written. The
sidecar therefore doubles as the shard's completion record: it holds the sample keys and byte
ranges the loader needs for random access, plus the tar's size and sha256, the plan it was made
for, the fingerprint of every input file (fingerprints.py), the notes skipped inside it and its
per-channel statistics, so a re-run can reuse the shard (after checking the inputs and the tar's
size + sha256) without decoding it again.

Tars are byte-deterministic (fixed member order, mtime, owner and mode), so the same notes and
settings always give the same sha256.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

from data_tools.fingerprints import check, fingerprint
from data_tools.nsynth import NoteError, NSynthEntry, audio_path, load_note
from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.data import fs
from mars_dist.data.manifest import index_name, shard_name

log = logging.getLogger(__name__)

CMX_MEMBER = "cmx.npy"
LABELS_MEMBER = "json"
AUDIO_MEMBER = "flac"
CMX_DTYPE = np.float16
_FLAC_SUBTYPES = ("PCM_S8", "PCM_16", "PCM_24")  # what FLAC stores losslessly; other sources go to PCM_24


@dataclass
class ChannelStats:
    """Per-channel count / mean / sum of squared deviations, mergeable across samples and shards.

    Merging uses Chan et al.'s pairwise update, which stays accurate over billions of values where
    sum / sum-of-squares would cancel catastrophically.
    """

    count: int
    mean_C: np.ndarray
    m2_C: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> "ChannelStats":
        return cls(0, np.zeros(channels), np.zeros(channels))

    @classmethod
    def of_sample(cls, x_CHW: np.ndarray) -> "ChannelStats":
        x_CN = np.asarray(x_CHW, dtype=np.float64).reshape(x_CHW.shape[0], -1)
        mean_C = x_CN.mean(axis=1)
        return cls(x_CN.shape[1], mean_C, ((x_CN - mean_C[:, None]) ** 2).sum(axis=1))

    def merge(self, other: "ChannelStats") -> "ChannelStats":
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        total = self.count + other.count
        delta_C = other.mean_C - self.mean_C
        mean_C = self.mean_C + delta_C * (other.count / total)
        m2_C = self.m2_C + other.m2_C + delta_C ** 2 * (self.count * other.count / total)
        return ChannelStats(total, mean_C, m2_C)

    def std_C(self) -> np.ndarray:
        """Population standard deviation per channel."""
        return np.sqrt(self.m2_C / max(self.count, 1))

    def to_json(self) -> Dict[str, Any]:
        return {"count": self.count, "mean": self.mean_C.tolist(), "m2": self.m2_C.tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ChannelStats":
        return cls(int(d["count"]), np.asarray(d["mean"], dtype=np.float64), np.asarray(d["m2"], dtype=np.float64))


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one sharding run shares (picklable: it travels to spawned workers)."""

    nsynth_root: str
    split: str
    out_url: str
    audio_cfg: AudioConfig
    with_audio: bool
    on_error: str  # fail | skip
    storage_options: Dict[str, Any]
    resample: bool = False  # notes at another rate than audio.stft.sample_rate are resampled, not bad
    verify_content: bool = False  # completeness checks hash every input file instead of stat'ing it
    staging_dir: Optional[str] = None  # local folder for temporary tars when out_url is on S3


@dataclass(frozen=True)
class ShardTask:
    """Shard number `index` holds these notes, in this order; `plan` fingerprints that promise."""

    index: int
    entries: Tuple[NSynthEntry, ...]
    plan: str

    @property
    def name(self) -> str:
        return shard_name(self.index)

    @property
    def index_name(self) -> str:
        return index_name(self.index)


def plan_fingerprint(entries: Sequence[NSynthEntry], audio_description: Mapping[str, Any], with_audio: bool,
                     resample: bool) -> str:
    """Changes whenever a shard's content would, audio files aside (their fingerprints are checked
    one by one): its notes with their labels, their order, the audio numbers, resampling, the members."""
    # repr: every field of every note, in order, ten times faster than to_json (1.5 s for NSynth's 289k notes)
    identity = {"notes": repr(tuple(entries)), "audio": audio_description, "with_audio": with_audio,
                "resample": resample}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


_frontends: Dict[str, AudioFrontend] = {}


def frontend_for(audio_cfg: AudioConfig) -> AudioFrontend:
    """One AudioFrontend per process and config (workers build it once, not once per shard)."""
    key = json.dumps(dataclasses.asdict(audio_cfg), sort_keys=True)
    if key not in _frontends:
        _frontends[key] = AudioFrontend(audio_cfg)
    return _frontends[key]


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def _flac(path: str, wave: np.ndarray, sample_rate: int) -> bytes:
    """The note's audio as FLAC at the stored rate: the file's own samples when it is at that rate
    (sample-exact for 8/16/24-bit PCM; float sources become PCM_24), else the resampled `wave` as PCM_24."""
    info = sf.info(path)
    if info.samplerate == sample_rate:
        samples, _ = sf.read(path, dtype="int32")
        subtype = info.subtype if info.subtype in _FLAC_SUBTYPES else "PCM_24"
    else:
        samples, subtype = np.clip(wave, -1.0, 1.0), "PCM_24"  # resampling can overshoot; PCM would wrap
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="FLAC", subtype=subtype)
    return buf.getvalue()


def encode_note(job: ShardJob, entry: NSynthEntry) -> Tuple[List[Tuple[str, bytes]], ChannelStats]:
    """The tar members of one note (name, bytes) and the statistics of its stored CMX tensor.

    Raises NoteError for anything wrong with the note (unreadable, another rate or length than
    audio.stft says, non-finite audio). The labels state the stored rate, which differs from the
    examples.json entry's only when the note was resampled.
    """
    stft = job.audio_cfg.stft
    path = audio_path(job.nsynth_root, job.split, entry.note_str)
    wave = load_note(job.nsynth_root, job.split, entry, stft, job.resample)
    if not np.all(np.isfinite(wave)):
        raise NoteError(entry.note_str, f"{path}: audio contains NaN or infinite samples")
    with torch.no_grad():
        x_CHW = frontend_for(job.audio_cfg).wave_to_cmx(wave).numpy().astype(CMX_DTYPE)
    key = entry.note_str
    labels = dataclasses.replace(entry, sample_rate=stft.sample_rate).to_json()
    members = [
        (f"{key}.{CMX_MEMBER}", _npy_bytes(x_CHW)),
        (f"{key}.{LABELS_MEMBER}", json.dumps(labels, sort_keys=True).encode()),
    ]
    if job.with_audio:
        members.append((f"{key}.{AUDIO_MEMBER}", _flac(path, wave, stft.sample_rate)))
    return members, ChannelStats.of_sample(x_CHW)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _staging_path(job: ShardJob, task: ShardTask) -> str:
    """A temporary file for the tar: in the output folder (so the final rename is atomic) or, for S3, in
    the run's local staging folder (which the run removes, even when a worker is killed mid-write)."""
    folder = job.staging_dir if fs.is_s3(job.out_url) else job.out_url
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{task.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def write_shard(job: ShardJob, task: ShardTask) -> Dict[str, Any]:
    """Write shard `task` (tar, then its index sidecar) and return the sidecar's content.

    Notes that fail follow `job.on_error`: "fail" raises their NoteError before anything of this
    shard becomes visible; "skip" logs them and records them in the sidecar. Every note's input
    file is fingerprinted before it is read, skipped ones included, so fixing one rewrites the shard.
    """
    sidecar_url = fs.join(job.out_url, task.index_name)
    fs.remove(sidecar_url, job.storage_options)  # a stale record must never vouch for the new tar
    keys: List[str] = []
    ranges: List[List[int]] = []
    skipped: List[Dict[str, str]] = []
    inputs: Dict[str, Any] = {}
    stats = ChannelStats.empty(frontend_for(job.audio_cfg).cmx_shape[0])
    tmp = _staging_path(job, task)
    try:
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for entry in task.entries:
                    inputs[entry.note_str] = fingerprint(audio_path(job.nsynth_root, job.split, entry.note_str))
                    try:
                        members, note_stats = encode_note(job, entry)
                    except NoteError as exc:
                        if job.on_error == "fail":
                            raise
                        log.warning("skipping %s", exc)
                        skipped.append({"note_str": exc.note_str, "problem": exc.problem})
                        continue
                    start = tar.offset
                    for name, data in members:
                        _add_member(tar, name, data)
                    keys.append(entry.note_str)
                    ranges.append([start, tar.offset])
                    stats = stats.merge(note_stats)
            f.flush()
            os.fsync(f.fileno())
        record = {
            "keys": keys,
            "ranges": ranges,
            "shard": task.name,
            "bytes": os.path.getsize(tmp),
            "sha256": fs.sha256_of(tmp),
            "plan": task.plan,
            "inputs": inputs,
            "skipped": skipped,
            "stats": stats.to_json(),
        }
        fs.commit_file(tmp, fs.join(job.out_url, task.name), job.storage_options)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fs.write_bytes_atomic(sidecar_url, json.dumps(record).encode(), job.storage_options)
    return record


def check_inputs(job: ShardJob, task: ShardTask, inputs: Any) -> Tuple[Optional[str], Dict[str, Any]]:
    """The first audio file of shard `task` that is not the one its record's `inputs` fingerprinted
    (None if all are), and the inputs to record from now on (see fingerprints.check)."""
    inputs = inputs if isinstance(inputs, dict) else {}
    current: Dict[str, Any] = {}
    for entry in task.entries:
        path = audio_path(job.nsynth_root, job.split, entry.note_str)
        if entry.note_str not in inputs:
            return path, inputs
        same, current[entry.note_str] = check(inputs[entry.note_str], path, job.verify_content)
        if not same:
            return path, inputs
    return None, current


def completed_record(job: ShardJob, task: ShardTask) -> Optional[Dict[str, Any]]:
    """The sidecar of shard `task` if an earlier run completed exactly this shard, else None.

    Complete means: the sidecar exists and was made for the same plan, every input file is the one
    it fingerprinted, its tar exists with the recorded size and sha256, and (under on_error=fail)
    no note was skipped in it.
    """
    sidecar_url = fs.join(job.out_url, task.index_name)
    tar_url = fs.join(job.out_url, task.name)
    try:
        record = json.loads(fs.read_bytes(sidecar_url, job.storage_options))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s: unreadable completion record; rewriting shard %s", sidecar_url, task.name)
        return None
    if not isinstance(record, dict) or record.get("plan") != task.plan:
        log.info("%s was made for other notes or settings; rewriting it", task.name)
        return None
    if record.get("skipped") and job.on_error == "fail":
        return None
    changed, inputs = check_inputs(job, task, record.get("inputs"))
    if changed is not None:
        log.info("%s: input %s changed since the shard was written; rewriting it", task.name, changed)
        return None
    if not fs.exists(tar_url, job.storage_options) or fs.size(tar_url, job.storage_options) != record.get("bytes"):
        log.warning("%s: missing or of another size than its completion record; rewriting it", tar_url)
        return None
    if fs.sha256_of(tar_url, job.storage_options) != record.get("sha256"):
        log.warning("%s: sha256 differs from its completion record; rewriting it", tar_url)
        return None
    if inputs != record.get("inputs"):  # same content under new mtimes (verify_content): keep them on record
        record = {**record, "inputs": inputs}
        fs.write_bytes_atomic(sidecar_url, json.dumps(record).encode(), job.storage_options)
    return record
