"""Which notes to generate (label sets from flags or a file) and how a generated note is written.

A label set maps label names to raw NSynth values; a label that is not given is "any" (null), the
condition a generator sees for it. A note is written as `NNNN_<labels>.wav` (16-bit PCM) and
`NNNN_<labels>.png` (its spectrogram with labelled axes), e.g. 0003_pitch060_keyboard_any-source_vel100.
"""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from mars_dist import labels
from mars_dist.errors import UserFileNotFoundError, UserValueError
from mars_dist.io.media import SpectrogramAxes, write_spectrogram_grid, write_wav

LabelSet = Dict[str, int]  # label name -> raw value; a missing name means any


def label_grid(values: Mapping[str, Optional[Sequence]], per_label: int = 1) -> List[LabelSet]:
    """Every combination of the given values (None or empty = that label stays any), `per_label` times each."""
    names = [n for n in labels.CONDITION_CLASSES if values.get(n)]
    choices = [[labels.parse_value(n, v, "command line") for v in values[n]] for n in names]
    combos = [dict(zip(names, combo)) for combo in itertools.product(*choices)] if names else [{}]
    return [{k: v for k, v in c.items() if v != labels.NULL} for c in combos for _ in range(per_label)]


def read_label_file(path: str) -> List[LabelSet]:
    """Label sets from a .csv (a header row of label names, an empty cell = any) or a .json list of objects."""
    p = Path(path)
    if not p.is_file():
        raise UserFileNotFoundError(f"--labels {path}: no such file")
    if p.suffix.lower() == ".json":
        try:
            rows = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise UserValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserValueError(f"{path}: expected a JSON list of objects like {{\"pitch\": 60, \"instrument_family\": 0}}")
    elif p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise UserValueError(f"--labels {path}: expected a .csv or .json file")
    sets = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 1}"
        unknown = sorted(str(k) for k in set(row) - set(labels.CONDITION_CLASSES))
        if unknown:
            raise labels.LabelError(f"{where}: unknown label(s) {unknown}; expected some of "
                                    f"{', '.join(labels.CONDITION_CLASSES)}")
        parsed = {k: labels.parse_value(k, v, where) for k, v in row.items()}
        sets.append({k: v for k, v in parsed.items() if v != labels.NULL})
    if not sets:
        raise UserValueError(f"{path}: no label rows")
    return sets


def labels_to_tensors(label_sets: Sequence[LabelSet], device: torch.device) -> Dict[str, torch.Tensor]:
    """[{pitch: 60}, {}] -> {"pitch": tensor([60, -1])} (only labels that some set gives)."""
    names = [n for n in labels.CONDITION_CLASSES if any(n in s for s in label_sets)]
    return {n: torch.tensor([s.get(n, labels.NULL) for s in label_sets], dtype=torch.long, device=device) for n in names}


def note_name(index: int, label_set: Mapping[str, int]) -> str:
    return f"{index:04d}_{labels.describe(label_set)}"


def write_note(out_dir: Path, name: str, wave_N: torch.Tensor, log_FT: torch.Tensor, axes: SpectrogramAxes) -> Path:
    """`name`.wav (clamped to [-1, 1], 16-bit) and `name`.png beside it; returns the wav path."""
    out_dir = Path(out_dir)
    wav = out_dir / f"{name}.wav"
    write_wav(wave_N.cpu().clamp(-1.0, 1.0), axes.sample_rate, str(wav))
    write_spectrogram_grid({name: log_FT.unsqueeze(0).cpu()}, str(out_dir / f"{name}.png"), axes)
    return wav


def write_notes(batch, out_dir: Path, first_index: int, frontend) -> List[Path]:
    """Every note of a GeneratedBatch, numbered from `first_index`; returns the wav paths."""
    axes = SpectrogramAxes.from_audio(frontend.cfg)
    log_BFT = frontend.cmx_to_log(batch.cmx_BCHW)
    return [write_note(out_dir, note_name(first_index + i, label_set), batch.wave_BN[i], log_BFT[i], axes)
            for i, label_set in enumerate(batch.label_sets)]
