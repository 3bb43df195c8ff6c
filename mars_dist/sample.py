"""Generate NSynth-style notes from an exported tokenizer + AR: labels -> token maps -> CMX tensor ->
inverse CMX -> inverse log scale -> Griffin-Lim -> 16 kHz wav files, plus spectrogram PNGs.

    python -m mars_dist.sample --tokenizer runs/tok/export --ar runs/ar/export --out samples \\
        --pitch 48 60 72 --family bass keyboard --cfg 3.0 --top-p 0.95 --seed 0

One note per combination of the given label values (a label not given is null: "any"), repeated
--per-label times; or one note per row of --labels FILE (.csv with a header naming some of pitch,
instrument_family, instrument_source, velocity, empty cell = any; or .json: a list of such objects).
Files are named by their labels, e.g. 0003_pitch060_keyboard_any-source_vel100.wav.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from data_tools.nsynth import FAMILIES, SOURCES
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.conditioning import LABEL_CLASSES, NULL, check_labels
from mars_dist.io.media import write_spectrogram_grid, write_wav

LabelSet = Dict[str, int]  # label name -> raw value; a missing name means null
_NAMED = {"instrument_family": FAMILIES, "instrument_source": SOURCES}


# --------------------------------------------------------------------------- labels
def parse_label_value(name: str, value, where: str) -> int:
    """An int, a family/source name ('bass', 'synthetic'), or ''/None/'any' for null."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "any", "null", "none")):
        return NULL
    if isinstance(value, str) and name in _NAMED and value.strip() in _NAMED[name]:
        return _NAMED[name].index(value.strip())
    try:
        number = int(value)
    except (TypeError, ValueError):
        names = f" or one of {', '.join(_NAMED[name])}" if name in _NAMED else ""
        raise ValueError(f"{where}: {name}={value!r} is not an integer{names}") from None
    try:
        check_labels({name: torch.tensor([number])}, 1)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return number


def read_label_file(path: str) -> List[LabelSet]:
    """Label sets from a .csv (header row of label names) or a .json list of objects."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--labels {path}: no such file")
    if p.suffix.lower() == ".json":
        rows = json.loads(p.read_text())
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected a JSON list of objects like {{\"pitch\": 60, \"instrument_family\": 0}}")
    elif p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"--labels {path}: expected a .csv or .json file")
    sets = []
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - set(LABEL_CLASSES))
        if unknown:
            raise ValueError(f"{path}: row {i}: unknown label(s) {unknown}; expected some of {', '.join(LABEL_CLASSES)}")
        parsed = {k: parse_label_value(k, v, f"{path}: row {i}") for k, v in row.items()}
        sets.append({k: v for k, v in parsed.items() if v != NULL})
    if not sets:
        raise ValueError(f"{path}: no label rows")
    return sets


def label_grid(values: Mapping[str, Optional[Sequence]], per_label: int = 1) -> List[LabelSet]:
    """Every combination of the given values (None or empty = that label stays null), `per_label` times each."""
    names = [n for n in LABEL_CLASSES if values.get(n)]
    choices = [[parse_label_value(n, v, "command line") for v in values[n]] for n in names]
    combos = [dict(zip(names, combo)) for combo in itertools.product(*choices)] if names else [{}]
    return [c for c in combos for _ in range(per_label)]


def labels_to_tensors(label_sets: Sequence[LabelSet], device: torch.device) -> Dict[str, torch.Tensor]:
    """[{pitch: 60}, {}] -> {"pitch": tensor([60, -1]), ...} (only labels that some set gives)."""
    names = [n for n in LABEL_CLASSES if any(n in s for s in label_sets)]
    return {n: torch.tensor([s.get(n, NULL) for s in label_sets], dtype=torch.long, device=device) for n in names}


def note_name(index: int, labels: LabelSet) -> str:
    def part(name: str, fmt) -> str:
        return fmt(labels[name]) if name in labels else f"any-{name.split('_')[-1]}"

    return "_".join([
        f"{index:04d}",
        part("pitch", lambda v: f"pitch{v:03d}"),
        part("instrument_family", lambda v: FAMILIES[v]),
        part("instrument_source", lambda v: SOURCES[v]),
        part("velocity", lambda v: f"vel{v:03d}"),
    ])


# --------------------------------------------------------------------------- generation
@dataclass
class SamplingSettings:
    cfg_scale: float = 3.0
    top_k: int = 0
    top_p: float = 0.95
    temperature: float = 1.0


class NoteGenerator:
    """Tokenizer + AR + audio front-end on one device; the three stages are separate so they can be timed.

    `dtype=torch.bfloat16` casts the AR's weights (at batch 1 generation is bound by reading
    weights, so half the bytes is most of the gain) and runs the tokenizer's decoder under bf16
    autocast; the quantizer's code lookups and Griffin-Lim stay in float32.
    """

    def __init__(self, ar: NextScaleAR, tokenizer: torch.nn.Module, frontend: AudioFrontend,
                 device: torch.device, dtype: torch.dtype = torch.float32):
        if tuple(tokenizer.in_shape) != tuple(frontend.cmx_shape):
            raise ValueError(f"tokenizer expects CMX {tuple(tokenizer.in_shape)}, the audio config gives {frontend.cmx_shape}")
        self.ar = ar.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer.to(device).eval()
        self.frontend = frontend
        self.device, self.dtype = device, dtype

    def tokens(self, labels: Mapping[str, torch.Tensor], batch: int, settings: SamplingSettings,
               generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        return self.ar.generate(
            self.tokenizer.quantizer, labels, batch, cfg_scale=settings.cfg_scale, top_k=settings.top_k,
            top_p=settings.top_p, temperature=settings.temperature, generator=generator,
        )

    @torch.no_grad()
    def spectrogram(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token maps -> CMX tensor [B, C, H, W] (float32, clamped to the log scale's [-1, 1])."""
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with autocast:
            return self.tokenizer.decode_indices(idx_list).float().clamp(-1.0, 1.0)

    def audio(self, cmx_BCHW: torch.Tensor) -> torch.Tensor:
        """CMX -> waveform [B, num_samples] by Griffin-Lim (audio.griffin_lim settings)."""
        return self.frontend.cmx_to_wave(cmx_BCHW)


def generate_notes(gen: NoteGenerator, label_sets: Sequence[LabelSet], out_dir: Path, settings: SamplingSettings,
                   seed: int, batch_size: int) -> List[Path]:
    """Generates and writes one wav + PNG per label set; returns the wav paths."""
    generator = torch.Generator(gen.device).manual_seed(seed)
    sample_rate = gen.frontend.cfg.stft.sample_rate
    written = []
    for start in range(0, len(label_sets), batch_size):
        chunk = label_sets[start:start + batch_size]
        t0 = time.perf_counter()
        idx_list = gen.tokens(labels_to_tensors(chunk, gen.device), len(chunk), settings, generator)
        cmx_BCHW = gen.spectrogram(idx_list)
        wave_BN = gen.audio(cmx_BCHW)
        log_BFT = gen.frontend.cmx_to_log(cmx_BCHW)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, labels in enumerate(chunk):
            name = note_name(start + i, labels)
            write_wav(wave_BN[i].cpu().clamp(-1.0, 1.0), sample_rate, str(out_dir / f"{name}.wav"))
            write_spectrogram_grid({name: log_BFT[i:i + 1].cpu()}, str(out_dir / f"{name}.png"))
            written.append(out_dir / f"{name}.wav")
        print(f"generated notes {start}..{start + len(chunk) - 1} in {time.perf_counter() - t0:.2f} s", flush=True)
    return written


# --------------------------------------------------------------------------- loading
def load_models(tokenizer_dir: str, ar_dir: str):
    """(tokenizer, AR, audio front-end) from two export folders, checked against each other.

    The AR is rebuilt around the GIVEN tokenizer (not the path it was trained with), so exports can
    be moved; its weights' shapes must fit that tokenizer's scale schedule and codebook.
    """
    from mars_dist.export import load_exported, read_exported, run_config_from_dict
    from mars_dist.tasks.ar import build_ar

    tokenizer, tok_config = load_exported(Path(tokenizer_dir))
    if not hasattr(tokenizer, "quantizer"):
        raise ValueError(f"--tokenizer {tokenizer_dir}: holds a {type(tokenizer).__name__} ({tok_config.get('task')} task), not a tokenizer")
    weights, ar_config = read_exported(Path(ar_dir))
    if ar_config.get("task") != "ar":
        raise ValueError(f"--ar {ar_dir}: exported from the {ar_config.get('task')!r} task, expected an 'ar' export")
    ar = build_ar(run_config_from_dict(ar_config["run_config"]).ar, tokenizer)
    expected = {k: tuple(v.shape) for k, v in ar.state_dict().items()}
    mismatched = {k: (tuple(v.shape), expected.get(k)) for k, v in weights.items() if tuple(v.shape) != expected.get(k)}
    if mismatched or set(weights) != set(expected):
        raise ValueError(
            f"--ar {ar_dir} does not fit --tokenizer {tokenizer_dir} (scales {tokenizer.quantizer.scales}, "
            f"codebook {tokenizer.quantizer.codebook_size} x {tokenizer.quantizer.codebook_dim}): "
            f"mismatched (saved, expected) shapes {dict(list(mismatched.items())[:4])}, "
            f"missing {sorted(set(expected) - set(weights))[:4]}, unexpected {sorted(set(weights) - set(expected))[:4]}"
        )
    ar.load_state_dict(weights)
    audio_cfg = run_config_from_dict(tok_config["run_config"]).audio
    return tokenizer, ar.eval(), AudioFrontend(audio_cfg)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


# --------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mars-sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="exported tokenizer folder (python -m mars_dist.export)")
    p.add_argument("--ar", required=True, help="exported AR folder")
    p.add_argument("--out", required=True, help="output folder for the wav and PNG files")
    p.add_argument("--labels", help="CSV or JSON file of label sets (instead of the label flags)")
    p.add_argument("--pitch", nargs="+", help="MIDI pitch(es) 0..127")
    p.add_argument("--family", nargs="+", help=f"instrument family: 0..10 or a name ({', '.join(FAMILIES)})")
    p.add_argument("--source", nargs="+", help=f"instrument source: 0..2 or a name ({', '.join(SOURCES)})")
    p.add_argument("--velocity", nargs="+", help="MIDI velocity (mapped to the nearest of 25, 50, 75, 100, 127)")
    p.add_argument("--per-label", type=int, default=1, help="notes per label set")
    p.add_argument("--cfg", type=float, default=3.0, help="guidance at the finest scale (ramped linearly from 1; 1 = none)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely codes (0 = all)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus mass (0 or 1 = off)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0 = greedy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="notes generated together")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"), help="AR weights / decoder precision (auto: bf16 on GPU)")
    p.add_argument("--gl-iters", type=int, default=None, help="Griffin-Lim iterations (default: the tokenizer run's audio.griffin_lim.n_iter)")
    args = p.parse_args(argv)
    if args.per_label < 1 or args.batch < 1:
        p.error("--per-label and --batch must be >= 1")
    if args.labels and any((args.pitch, args.family, args.source, args.velocity)):
        p.error("give either --labels FILE or the label flags, not both")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.labels:
        label_sets = [s for s in read_label_file(args.labels) for _ in range(args.per_label)]
    else:
        label_sets = label_grid({"pitch": args.pitch, "instrument_family": args.family,
                                 "instrument_source": args.source, "velocity": args.velocity}, args.per_label)
    tokenizer, ar, frontend = load_models(args.tokenizer, args.ar)
    if args.gl_iters is not None:
        frontend.cfg.griffin_lim.n_iter = args.gl_iters
    device = resolve_device(args.device)
    gen = NoteGenerator(ar, tokenizer, frontend, device, resolve_dtype(args.dtype, device))
    settings = SamplingSettings(cfg_scale=args.cfg, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature)
    written = generate_notes(gen, label_sets, Path(args.out), settings, args.seed, args.batch)
    print(f"wrote {len(written)} notes (wav + png) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
