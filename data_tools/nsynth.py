"""Read and validate the NSynth layout: `ROOT/nsynth-{split}/examples.json` + `audio/<note_str>.wav`.

Everything here is a plain function of (root, split, entry) over picklable values, so a sharder can
hand single notes to worker processes. Any problem with one note is a `NoteError` naming the note,
the file and what was expected, so `--on-error skip` can log it and go on. The expected sample rate
and length come from the audio config (`audio.stft`), NSynth's 16 kHz x 64000 being the default.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch

from mars_dist.audio.config import STFTConfig
from mars_dist.errors import UserValueError
from mars_dist.labels import FAMILIES, QUALITIES, SOURCES

SAMPLE_RATE = 16000  # NSynth's; other sets state theirs per entry and in audio.stft.sample_rate
NUM_SAMPLES = 64000  # 4 s at 16 kHz


class NoteError(UserValueError):
    """One note is unusable; `note_str` names it and `problem` says what is wrong."""

    def __init__(self, note_str: str, problem: str):
        super().__init__(f"note {note_str!r}: {problem}")
        self.note_str = note_str
        self.problem = problem

    def __reduce__(self):  # keep it picklable across worker processes
        return (type(self), (self.note_str, self.problem))


class LayoutError(UserValueError):
    """The split as a whole is unreadable (no examples.json, not JSON, not a dict)."""


@dataclass(frozen=True)
class NSynthEntry:
    """One examples.json entry with every NSynth label field, validated."""

    note: int
    note_str: str
    instrument: int
    instrument_str: str
    pitch: int
    velocity: int
    sample_rate: int
    qualities: Tuple[int, ...]
    qualities_str: Tuple[str, ...]
    instrument_family: int
    instrument_family_str: str
    instrument_source: int
    instrument_source_str: str

    def to_json(self) -> Dict[str, Any]:
        """The entry as NSynth writes it (lists, not tuples)."""
        d = asdict(self)
        d["qualities"] = list(self.qualities)
        d["qualities_str"] = list(self.qualities_str)
        return d

    @staticmethod
    def from_json(key: str, raw: Any, sample_rate: Optional[int] = SAMPLE_RATE) -> "NSynthEntry":
        """Validate one entry stored under `key` stating `sample_rate` (None: any positive rate); raise
        NoteError on any defect."""
        return _parse_entry(key, raw, sample_rate, "entry")


_INT_FIELDS = ("note", "instrument", "pitch", "velocity", "sample_rate", "instrument_family", "instrument_source")
_STR_FIELDS = ("note_str", "instrument_str", "instrument_family_str", "instrument_source_str")


def _parse_entry(key: str, raw: Any, sample_rate: Optional[int], where: str) -> NSynthEntry:
    def bad(problem: str) -> NoteError:
        return NoteError(key, f"{where}: {problem}")

    if not isinstance(raw, dict):
        raise bad(f"expected a JSON object, got {type(raw).__name__}")
    expected = set(_INT_FIELDS) | set(_STR_FIELDS) | {"qualities", "qualities_str"}
    missing = sorted(expected - raw.keys())
    if missing:
        raise bad(f"missing field(s) {', '.join(missing)}")
    for name in _INT_FIELDS:
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"field {name!r}={value!r}: expected an integer")
    for name in _STR_FIELDS:
        if not isinstance(raw[name], str):
            raise bad(f"field {name!r}={raw[name]!r}: expected a string")
    qualities, qualities_str = raw["qualities"], raw["qualities_str"]
    if (not isinstance(qualities, list) or len(qualities) != len(QUALITIES)
            or any(isinstance(q, bool) or q not in (0, 1) for q in qualities)):
        raise bad(f"field 'qualities'={qualities!r}: expected a list of {len(QUALITIES)} ints, each 0 or 1")
    implied = [name for name, q in zip(QUALITIES, qualities) if q]
    if not isinstance(qualities_str, list) or sorted(qualities_str) != sorted(implied):
        raise bad(f"field 'qualities_str'={qualities_str!r}: expected {implied!r} (the names set in 'qualities')")

    if raw["note_str"] != key:
        raise bad(f"note_str={raw['note_str']!r} differs from its key")
    if not 0 <= raw["pitch"] <= 127:
        raise bad(f"pitch={raw['pitch']}: expected 0..127")
    if not 0 <= raw["velocity"] <= 127:
        raise bad(f"velocity={raw['velocity']}: expected 0..127")
    if sample_rate is not None and raw["sample_rate"] != sample_rate:
        raise bad(f"sample_rate={raw['sample_rate']}: expected {sample_rate} (audio.stft.sample_rate)")
    if raw["sample_rate"] < 1:
        raise bad(f"sample_rate={raw['sample_rate']}: expected a positive rate in Hz")
    family, source = raw["instrument_family"], raw["instrument_source"]
    if not 0 <= family < len(FAMILIES):
        raise bad(f"instrument_family={family}: expected 0..{len(FAMILIES) - 1}")
    if raw["instrument_family_str"] != FAMILIES[family]:
        raise bad(f"instrument_family_str={raw['instrument_family_str']!r}: expected {FAMILIES[family]!r} "
                  f"for instrument_family={family}")
    if not 0 <= source < len(SOURCES):
        raise bad(f"instrument_source={source}: expected 0..{len(SOURCES) - 1}")
    if raw["instrument_source_str"] != SOURCES[source]:
        raise bad(f"instrument_source_str={raw['instrument_source_str']!r}: expected {SOURCES[source]!r} "
                  f"for instrument_source={source}")
    prefix = f"{FAMILIES[family]}_{SOURCES[source]}_"
    number = raw["instrument_str"][len(prefix):]
    if not raw["instrument_str"].startswith(prefix) or not (len(number) == 3 and number.isdigit()):
        raise bad(f"instrument_str={raw['instrument_str']!r}: expected '{prefix}NNN'")
    expected_note_str = f"{raw['instrument_str']}-{raw['pitch']:03d}-{raw['velocity']:03d}"
    if key != expected_note_str:
        raise bad(f"note_str {key!r} does not match instrument_str/pitch/velocity ({expected_note_str!r})")

    fields = {name: raw[name] for name in _INT_FIELDS + _STR_FIELDS}
    return NSynthEntry(qualities=tuple(qualities), qualities_str=tuple(qualities_str), **fields)


def split_dir(root: str, split: str) -> str:
    return os.path.join(root, f"nsynth-{split}")


def examples_path(root: str, split: str) -> str:
    return os.path.join(split_dir(root, split), "examples.json")


def audio_path(root: str, split: str, note_str: str) -> str:
    return os.path.join(split_dir(root, split), "audio", f"{note_str}.wav")


def read_examples(root: str, split: str, errors: Optional[List[NoteError]] = None,
                  sample_rate: Optional[int] = SAMPLE_RATE) -> List[NSynthEntry]:
    """All entries of `ROOT/nsynth-{split}/examples.json`, validated, sorted by note_str.

    A malformed entry raises NoteError; if `errors` is a list, it is appended there and left out
    instead (the sharder's `--on-error skip`). Entries must state `sample_rate` (None: any rate,
    for a sharder that resamples). Sorting makes the order independent of the JSON's.
    """
    path = examples_path(root, split)
    if not os.path.isfile(path):
        raise LayoutError(f"{path}: not found (expected NSynth layout ROOT/nsynth-{split}/examples.json)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise LayoutError(f"{path}: unreadable ({exc.strerror})") from exc
    if not isinstance(raw, dict):
        raise LayoutError(f"{path}: expected a JSON object keyed by note_str, got {type(raw).__name__}")
    entries = []
    for key in sorted(raw):
        try:
            entries.append(_parse_entry(key, raw[key], sample_rate, f"{path} entry"))
        except NoteError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return entries


def _resampled_length(frames: int, rate: int, target_rate: int) -> int:
    """Samples torchaudio.functional.resample returns for `frames` samples at `rate` (ceil, as it does)."""
    return -(-frames * target_rate // rate)


def _resample(wave: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    # imported here: torchaudio costs every worker a third of a second, and only resampling runs need it
    from torchaudio.functional import resample

    return resample(torch.from_numpy(wave), rate, target_rate).numpy()


def load_note(root: str, split: str, entry: NSynthEntry, stft_cfg: Optional[STFTConfig] = None,
              resample: bool = False) -> np.ndarray:
    """The note's audio as float32 [stft_cfg.num_samples] at stft_cfg.sample_rate (default: NSynth's 4 s at 16 kHz).

    NoteError unless the file is mono and has exactly that rate and length; with `resample`, a file at
    another rate is resampled first and must then have that length. Nothing is padded or cut: a note
    of another length is a bad note, for the caller's on-error policy to decide.
    """
    stft_cfg = stft_cfg or STFTConfig()
    rate, length = stft_cfg.sample_rate, stft_cfg.num_samples
    path = audio_path(root, split, entry.note_str)
    if not os.path.isfile(path):
        raise NoteError(entry.note_str, f"{path}: audio file does not exist")
    try:
        info = sf.info(path)
        if info.samplerate != rate and not resample:
            raise NoteError(entry.note_str, f"{path}: sample rate {info.samplerate} Hz, expected {rate} "
                                            "(audio.stft.sample_rate; resampling is off)")
        if info.channels != 1:
            raise NoteError(entry.note_str, f"{path}: {info.channels} channels, expected 1 (mono)")
        resampled = _resampled_length(info.frames, info.samplerate, rate)
        if resampled != length:
            found = (f"{info.frames} samples" if info.samplerate == rate
                     else f"{info.frames} samples at {info.samplerate} Hz = {resampled} at {rate} Hz")
            raise NoteError(entry.note_str, f"{path}: {found}, expected {length} (audio.stft.num_samples)")
        wave, _ = sf.read(path, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise NoteError(entry.note_str, f"{path}: unreadable audio ({exc})") from exc
    if wave.shape != (info.frames,):
        raise NoteError(entry.note_str, f"{path}: decoded shape {wave.shape}, expected ({info.frames},)")
    return wave if info.samplerate == rate else _resample(wave, info.samplerate, rate)
