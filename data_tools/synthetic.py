"""A synthetic set in exactly NSynth's layout and field set: the embedded default for runs and tests.

Each synthetic instrument (family, source, NNN) draws fixed timbre parameters from the seed:
harmonic partials under a family-dependent spectral envelope (tilt, odd/even balance, formants),
stiffness inharmonicity (keyboard, guitar, bass) or free-bar mode ratios (mallets), attack/decay
envelopes (plucked and struck families decay, higher partials faster; the others sustain until
note-off at 3 s), breath noise (flute, reed, brass, vocal), a strike transient, vibrato, tremolo,
drive and reverb. Pitch sets f0 exactly (MIDI -> Hz); velocity sets loudness and brightness. The
qualities labels are derived from those parameters, so they mean what they say.

A note is a pure function of (seed, instrument, pitch, velocity): the same note is bit-identical
whichever splits and sizes it is generated with.

    mars-synthetic --out ROOT --split train:200 --split valid:40 --seed 0   # or python -m data_tools.synthetic
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf

from data_tools.nsynth import NUM_SAMPLES, SAMPLE_RATE, NSynthEntry, audio_path, examples_path
from data_tools.storage import storage_errors
from mars_dist.cli import console_script
from mars_dist.errors import UserValueError
from mars_dist.io.atomic import atomic_write
from mars_dist.labels import FAMILIES, QUALITIES, SOURCES, VELOCITY_LEVELS

PROG = "mars-synthetic"
NOTE_OFF_S = 3.0  # NSynth notes are held 3 s and released for the last second
MAX_PARTIALS = 40
MAX_PARTIAL_HZ = 7200.0  # keep partials clear of Nyquist (8 kHz)

# Sources each family appears with (as in NSynth) and its MIDI pitch range (inclusive).
FAMILY_SOURCES: Dict[str, Tuple[str, ...]] = {
    "bass": ("electronic", "synthetic"),
    "brass": ("acoustic", "electronic"),
    "flute": ("acoustic", "electronic", "synthetic"),
    "guitar": ("acoustic", "electronic", "synthetic"),
    "keyboard": ("acoustic", "electronic", "synthetic"),
    "mallet": ("acoustic", "electronic", "synthetic"),
    "organ": ("electronic",),
    "reed": ("acoustic", "electronic", "synthetic"),
    "string": ("acoustic", "electronic"),
    "synth_lead": ("synthetic",),
    "vocal": ("acoustic", "electronic", "synthetic"),
}
PITCH_RANGE: Dict[str, Tuple[int, int]] = {
    "bass": (28, 60), "brass": (40, 82), "flute": (60, 96), "guitar": (40, 84),
    "keyboard": (21, 108), "mallet": (53, 96), "organ": (36, 96), "reed": (45, 84),
    "string": (28, 96), "synth_lead": (36, 96), "vocal": (48, 84),
}
PERCUSSIVE = {"bass", "guitar", "keyboard", "mallet"}
BREATHY = {"flute", "reed", "brass", "vocal"}
# Free-bar bending modes (mallets): strongly inharmonic overtones.
BAR_MODE_RATIOS = np.array([1.0, 2.756, 5.404, 8.933, 13.344, 18.64])

# Per family: (spectral tilt range, even-harmonic gain range, vibrato depth range).
_TILT = {
    "bass": (1.3, 2.2), "brass": (0.7, 1.3), "flute": (2.0, 3.2), "guitar": (1.0, 1.6),
    "keyboard": (1.2, 1.9), "mallet": (1.0, 1.6), "organ": (0.6, 1.4), "reed": (0.7, 1.2),
    "string": (0.8, 1.2), "synth_lead": (0.9, 1.1), "vocal": (1.0, 1.6),
}
_EVEN_GAIN = {"reed": (0.05, 0.3), "flute": (0.4, 0.8), "synth_lead": (0.0, 1.0)}
_VIBRATO = {"string": (0.002, 0.006), "vocal": (0.004, 0.01), "flute": (0.001, 0.004)}


@dataclass(frozen=True)
class Instrument:
    """Fixed timbre of one synthetic instrument; identity fields follow NSynth's naming."""

    family: str
    source: str
    number: int  # the NNN of instrument_str
    instrument_id: int
    tilt: float  # partial amplitude ~ n ** -tilt (at velocity 75)
    even_gain: float  # amplitude factor of even harmonics (clarinet-like reeds: low)
    formants: Tuple[Tuple[float, float, float], ...]  # (centre Hz, width in octaves, gain)
    stiffness: float  # B in f_n = n f0 sqrt(1 + B n^2)
    decay_s: float  # fundamental's decay time constant (percussive families)
    decay_tilt: float  # partial n decays (1 + decay_tilt (n-1)) times faster
    attack_s: float
    release_s: float
    vibrato_hz: float
    vibrato_depth: float  # relative f0 deviation
    tremolo_depth: float
    breath: float  # breath-noise level relative to the harmonic part
    breath_hz: float
    transient: float  # strike/pluck noise burst level
    drive: float  # tanh saturation gain (0 = clean)
    reverb_mix: float
    reverb_t60_s: float

    @property
    def instrument_str(self) -> str:
        return f"{self.family}_{self.source}_{self.number:03d}"

    @property
    def percussive(self) -> bool:
        return self.family in PERCUSSIVE

    def qualities(self) -> Tuple[int, ...]:
        """NSynth's 10 quality flags, derived from the parameters that produce them."""
        flags = {
            "bright": self.tilt < 0.95,
            "dark": self.tilt > 2.0,
            "distortion": self.drive > 0,
            "fast_decay": self.percussive and self.decay_s < 0.6,
            "long_release": self.release_s > 0.45,
            "multiphonic": False,
            "nonlinear_env": self.tremolo_depth > 0,
            "percussive": self.transient > 0,
            "reverb": self.reverb_mix > 0,
            "tempo-synced": False,
        }
        return tuple(int(flags[name]) for name in QUALITIES)


def make_instrument(seed: int, family: str, source: str, number: int, instrument_id: int) -> Instrument:
    """Draw one instrument's timbre; a pure function of (seed, family, source, number)."""
    rng = np.random.default_rng([seed, FAMILIES.index(family), SOURCES.index(source), number, 0x1257])
    u = rng.uniform
    percussive = family in PERCUSSIVE
    n_formants = 3 if family == "vocal" else int(rng.integers(0, 3))
    gain_range = (2.0, 6.0) if family == "vocal" else (0.5, 2.0)  # vowels: strong formants
    formants = tuple(
        (float(np.exp(u(np.log(250.0), np.log(4000.0)))), float(u(0.2, 0.6)), float(u(*gain_range)))
        for _ in range(n_formants)
    )
    if family == "synth_lead":
        even = float(rng.choice([0.0, 1.0]))  # square-like or saw-like
    else:
        even = float(u(*_EVEN_GAIN.get(family, (0.6, 1.0))))
    stiffness = {"keyboard": u(5e-5, 4e-4), "guitar": u(1e-5, 8e-5), "bass": u(1e-5, 6e-5)}.get(family, 0.0)
    vib_lo, vib_hi = _VIBRATO.get(family, (0.0, 0.0))
    breath_range = (0.02, 0.12) if family == "flute" else (0.01, 0.05)
    return Instrument(
        family=family, source=source, number=number, instrument_id=instrument_id,
        tilt=float(u(*_TILT[family])),
        even_gain=even,
        formants=formants,
        stiffness=float(stiffness),
        decay_s=float(u(0.3, 1.2) if family == "mallet" else u(0.5, 3.0)) if percussive else 0.0,
        decay_tilt=float(u(0.05, 0.4)) if percussive else 0.0,
        attack_s=float(u(0.001, 0.005) if percussive else u(0.01, 0.15 if family in ("string", "vocal") else 0.06)),
        release_s=float(u(0.05, 0.3) if percussive else u(0.08, 0.8)),
        vibrato_hz=float(u(4.5, 6.5)),
        vibrato_depth=float(u(vib_lo, vib_hi)),
        tremolo_depth=float(u(0.1, 0.4)) if source == "electronic" and rng.random() < 0.3 else 0.0,
        breath=float(u(*breath_range)) if family in BREATHY and source != "synthetic" else 0.0,
        breath_hz=float(u(1200.0, 4000.0)),
        transient=float(u(0.2, 0.8)) if percussive else 0.0,
        drive=float(u(1.5, 4.0)) if source == "synthetic" and rng.random() < 0.3 else 0.0,
        reverb_mix=float(u(0.1, 0.35)) if source == "acoustic" and rng.random() < 0.5 else 0.0,
        reverb_t60_s=float(u(0.4, 1.5)),
    )


def midi_to_hz(pitch: int) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


def _shaped_noise(rng: np.random.Generator, n: int, sample_rate: int, centre_hz: float, octaves: float) -> np.ndarray:
    """Unit-RMS noise whose spectrum is a Gaussian bump (in log frequency) around centre_hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec *= np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre_hz) / octaves) ** 2)
    noise = np.fft.irfft(spec, n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def render_note(instrument: Instrument, pitch: int, velocity: int, seed: int,
                sample_rate: int = SAMPLE_RATE, num_samples: int = NUM_SAMPLES) -> np.ndarray:
    """One note as float32 [num_samples] in [-1, 1]; a pure function of its arguments."""
    rng = np.random.default_rng([seed, instrument.instrument_id, pitch, velocity, 0x9071])
    t = np.arange(num_samples) / sample_rate
    f0 = midi_to_hz(pitch)
    vel = velocity / 127.0

    if instrument.family == "mallet":
        ratios = BAR_MODE_RATIOS
    else:
        n = np.arange(1, MAX_PARTIALS + 1, dtype=np.float64)
        ratios = n * np.sqrt(1.0 + instrument.stiffness * n ** 2)
    freqs = f0 * ratios
    keep = freqs < min(MAX_PARTIAL_HZ, 0.45 * sample_rate)
    keep[0] = True  # always the fundamental
    freqs, ratios = freqs[keep], ratios[keep]
    index = np.arange(1, len(freqs) + 1, dtype=np.float64)

    # Velocity -> brightness: a harder note tilts the spectrum less.
    tilt = instrument.tilt * (1.25 - 0.5 * vel)
    amp = index ** -tilt
    if instrument.family != "mallet":
        amp[1::2] *= instrument.even_gain
    log_f = np.log2(freqs)
    for centre, width, gain in instrument.formants:
        amp *= 1.0 + gain * np.exp(-0.5 * ((log_f - np.log2(centre)) / width) ** 2)
    if instrument.source == "acoustic":
        amp *= rng.uniform(0.7, 1.3, size=amp.shape)  # no two acoustic notes quite alike
    amp /= np.sqrt(0.5 * np.sum(amp ** 2))  # unit RMS for the sum of partials

    # Vibrato enters through the integral of the instantaneous frequency f_n (1 + d sin(2 pi r t)).
    if instrument.vibrato_depth > 0:
        r = instrument.vibrato_hz
        warped_t = t + instrument.vibrato_depth * (1.0 - np.cos(2 * np.pi * r * t)) / (2 * np.pi * r)
    else:
        warped_t = t
    cycles = freqs[:, None] * warped_t[None, :] + rng.uniform(0.0, 1.0, size=(len(freqs), 1))
    partials_KT = np.sin((2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32))

    attack = np.minimum(t / instrument.attack_s, 1.0)
    release = np.where(t < NOTE_OFF_S, 1.0, np.exp(-(t - NOTE_OFF_S) / instrument.release_s))
    common_T = (attack * release).astype(np.float32)
    if instrument.tremolo_depth > 0:
        common_T *= (1.0 + instrument.tremolo_depth * np.sin(2 * np.pi * 5.0 * t)).astype(np.float32)
    if instrument.percussive:
        rates = (1.0 + instrument.decay_tilt * (index - 1)) / instrument.decay_s
        decay_KT = np.exp(-(rates[:, None] * t[None, :]).astype(np.float32))
        harmonic = (amp.astype(np.float32)[:, None] * decay_KT * partials_KT).sum(axis=0)
    else:
        harmonic = amp.astype(np.float32) @ partials_KT
    wave = harmonic.astype(np.float64) * common_T

    if instrument.breath > 0:
        chiff = 1.0 + 3.0 * np.exp(-t / 0.03)  # breath is loudest at the onset
        noise = _shaped_noise(rng, num_samples, sample_rate, instrument.breath_hz, 1.0)
        wave += instrument.breath * chiff * common_T * noise
    if instrument.transient > 0:
        burst = np.exp(-t / 0.008) * _shaped_noise(rng, num_samples, sample_rate, 3000.0 + 2.0 * f0, 1.5)
        wave += instrument.transient * vel * burst
    if instrument.drive > 0:
        wave = np.tanh(instrument.drive * wave) / np.tanh(instrument.drive)
    if instrument.reverb_mix > 0:
        ir_len = int(min(instrument.reverb_t60_s, 1.0) * sample_rate)
        ir_t = np.arange(ir_len) / sample_rate
        ir = rng.standard_normal(ir_len) * np.exp(-6.9 * ir_t / instrument.reverb_t60_s)
        ir /= np.sqrt(np.sum(ir ** 2))
        size = 1 << int(np.ceil(np.log2(num_samples + ir_len)))
        wet = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(ir, size), size)[:num_samples]
        wave = wave + instrument.reverb_mix * wet

    # Velocity -> loudness (about 28 dB from 25 to 127); a limiter only for the rare hot note.
    wave *= 0.2 * vel ** 2
    peak = np.max(np.abs(wave))
    if peak > 0.98:
        wave *= 0.98 / peak
    return wave.astype(np.float32)


def instrument_pool(seed: int, per_group: int) -> List[Instrument]:
    """`per_group` instruments for every (family, source) NSynth uses; ids in a fixed order."""
    pool = []
    for family, sources in FAMILY_SOURCES.items():
        for source in sources:
            for number in range(per_group):
                pool.append(make_instrument(seed, family, source, number, len(pool)))
    return pool


@dataclass(frozen=True)
class PlannedNote:
    instrument: Instrument
    pitch: int
    velocity: int
    note_id: int

    def entry(self) -> NSynthEntry:
        inst = self.instrument
        qualities = inst.qualities()
        return NSynthEntry(
            note=self.note_id,
            note_str=f"{inst.instrument_str}-{self.pitch:03d}-{self.velocity:03d}",
            instrument=inst.instrument_id,
            instrument_str=inst.instrument_str,
            pitch=self.pitch,
            velocity=self.velocity,
            sample_rate=SAMPLE_RATE,
            qualities=qualities,
            qualities_str=tuple(name for name, q in zip(QUALITIES, qualities) if q),
            instrument_family=FAMILIES.index(inst.family),
            instrument_family_str=inst.family,
            instrument_source=SOURCES.index(inst.source),
            instrument_source_str=inst.source,
        )


def plan_splits(splits: Sequence[Tuple[str, int]], seed: int, per_group: int) -> Dict[str, List[PlannedNote]]:
    """Assign distinct (instrument, pitch, velocity) notes to splits, in the order given.

    All possible notes are shuffled once by the seed and the splits take consecutive blocks, so no
    note is in two splits and a split's notes do not depend on the sizes of the splits after it.
    """
    names = [name for name, _ in splits]
    for name, n in splits:
        if n < 0:
            raise UserValueError(f"split {name!r}: note count {n} must be >= 0")
    if len(set(names)) != len(names):
        raise UserValueError(f"split names must be distinct, got {names}")
    if seed < 0:
        raise UserValueError(f"seed={seed}: expected an integer >= 0")
    if per_group < 1:
        raise UserValueError(f"instruments per group={per_group}: expected an integer >= 1 (--instruments-per-group)")
    pool = instrument_pool(seed, per_group)
    inst_idx, pitches = [], []
    for i, inst in enumerate(pool):
        lo, hi = PITCH_RANGE[inst.family]
        inst_idx.append(np.full(hi - lo + 1, i))
        pitches.append(np.arange(lo, hi + 1))
    inst_n = np.repeat(np.concatenate(inst_idx), len(VELOCITY_LEVELS))
    pitch_n = np.repeat(np.concatenate(pitches), len(VELOCITY_LEVELS))
    vel_n = np.tile(np.array(VELOCITY_LEVELS), len(inst_n) // len(VELOCITY_LEVELS))
    total = sum(n for _, n in splits)
    if total > len(inst_n):
        raise UserValueError(f"{total} notes requested but {per_group} instruments per (family, source) give "
                             f"only {len(inst_n)} distinct notes; raise --instruments-per-group")
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(inst_n))[:total]
    plan, start = {}, 0
    for name, n in splits:
        block = order[start:start + n]
        plan[name] = [PlannedNote(pool[inst_n[j]], int(pitch_n[j]), int(vel_n[j]), int(j)) for j in block]
        start += n
    return plan


def write_split(root: str, split: str, notes: Sequence[PlannedNote], seed: int) -> List[NSynthEntry]:
    """Write `ROOT/nsynth-{split}/audio/*.wav` (16-bit PCM) and then examples.json, each atomically."""
    os.makedirs(os.path.dirname(audio_path(root, split, "x")), exist_ok=True)
    entries = []
    for note in notes:
        entry = note.entry()
        wave = render_note(note.instrument, note.pitch, note.velocity, seed)
        atomic_write(
            audio_path(root, split, entry.note_str),
            lambda tmp: sf.write(tmp, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV"),
        )
        entries.append(entry)

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({e.note_str: e.to_json() for e in entries}, f, indent=1, sort_keys=True)

    atomic_write(examples_path(root, split), write_json)
    return entries


def write_synthetic_nsynth(root: str, splits: Sequence[Tuple[str, int]], seed: int = 0,
                           per_group: int = 4) -> Dict[str, List[NSynthEntry]]:
    """Write a synthetic NSynth-format set under `root`; returns the entries per split."""
    plan = plan_splits(splits, seed, per_group)
    return {name: write_split(root, name, notes, seed) for name, notes in plan.items()}


def _parse_split(text: str) -> Tuple[str, int]:
    name, sep, count = text.rpartition(":")
    if not sep or not name or not count.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:COUNT, e.g. train:200")
    return name, int(count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="root folder; writes OUT/nsynth-{split}/...")
    parser.add_argument("--split", action="append", type=_parse_split, required=True,
                        help="NAME:COUNT, repeatable (e.g. --split train:200 --split valid:40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--instruments-per-group", type=int, default=4,
                        help="instruments per (family, source) pair (default 4)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with storage_errors(args.out):  # an --out that cannot be written: one line naming it (a bad plan writes nothing)
        written = write_synthetic_nsynth(args.out, args.split, args.seed, args.instruments_per_group)
    total = sum(len(v) for v in written.values())
    elapsed = time.perf_counter() - start
    print(f"wrote {total} notes ({', '.join(f'{k}: {len(v)}' for k, v in written.items())}) "
          f"to {args.out} in {elapsed:.1f} s")
    return 0


entry = console_script(main, PROG)


if __name__ == "__main__":
    entry()
