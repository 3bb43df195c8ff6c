"""What an evaluation leaves in `--out` (rank 0): metrics.json, table.md, features.npz, spectrogram PNGs,
and optionally the same figures in a wandb run. Every file is written atomically."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from mars_dist.io.atomic import atomic_write_bytes, atomic_write_text
from mars_dist.io.media import SpectrogramAxes, write_spectrogram_grid

METRICS_FILE = "metrics.json"
TABLE_FILE = "table.md"
FEATURES_FILE = "features.npz"


def check_finite(tree: Any, where: str) -> None:
    """A NaN in results (JSON-ready dicts and lists) is a bug upstream (a diverged model, an empty set):
    say where (`where` names the root) instead of writing it. The quick report uses it too."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            check_finite(value, f"{where}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_finite(value, f"{where}[{i}]")
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise RuntimeError(f"{where} is {tree}; the model or the data produced non-finite values")


def write_metrics(out_dir: Path, report: Dict[str, Any]) -> Path:
    check_finite(report, METRICS_FILE)
    path = Path(out_dir) / METRICS_FILE
    atomic_write_text(path, json.dumps(report, indent=1))
    return path


def write_table(out_dir: Path, table: str) -> Path:
    path = Path(out_dir) / TABLE_FILE
    atomic_write_text(path, table)
    return path


def write_features(out_dir: Path, features: Mapping[str, np.ndarray]) -> Path:
    """features.npz: every array a metric was computed from (np.load(..., allow_pickle=False) reads it)."""
    path = Path(out_dir) / FEATURES_FILE
    buffer = io.BytesIO()
    np.savez(buffer, **features)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_previews(out_dir: Path, previews: Mapping[str, np.ndarray], axes: SpectrogramAxes,
                   pairs: Mapping[str, str]) -> List[Path]:
    """spectrograms_<set>.png per set (time in s, frequency in Hz, dB colour bar); a set in `pairs`
    (reconstruction -> reference) is drawn under the notes it reconstructs."""
    paths = []
    for name, log_KFT in previews.items():
        rows = {pairs[name]: torch.from_numpy(previews[pairs[name]])} if name in pairs else {}
        rows[name] = torch.from_numpy(log_KFT)
        k = min(len(v) for v in rows.values())
        path = Path(out_dir) / f"spectrograms_{name}.png"
        write_spectrogram_grid({n: v[:k] for n, v in rows.items()}, str(path), axes)
        paths.append(path)
    return paths


def log_to_wandb(run_id: str, project: str, mode: str, out_dir: Path, table_cells: Dict[str, Dict[str, Optional[float]]],
                 images: List[Path]) -> str:
    """Logs every table cell as eval/<set>/<column>, the table and the PNGs to the wandb run `run_id`
    (resumed if it exists, e.g. the generator's training run); returns the run's folder."""
    import wandb

    run = wandb.init(project=project, id=run_id, resume="allow", mode=mode, dir=str(out_dir), name=run_id)
    columns = sorted({c for values in table_cells.values() for c in values})
    run.log({**{f"eval/{name}/{c}": v for name, values in table_cells.items() for c, v in values.items() if v is not None},
             "eval/table": wandb.Table(columns=["set"] + columns,
                                       data=[[name] + [values.get(c) for c in columns] for name, values in table_cells.items()]),
             **{f"eval/{p.stem}": wandb.Image(str(p)) for p in images}})
    folder = run.dir
    run.finish()
    return folder
