"""The size presets of the generators as tables, computed from the code (nothing measured):

    python -m mars_dist.bench.presets

(1) The next-scale AR: parameters and forward GFLOPs per note (one branch, no CFG) with the paper
tokenizer (16,384 codes, 9 scales), and parameters with the tokenizer each preset is used with
(tiny and small: the tiny and small tokenizers). docs/ar.md prints it.
(2) The three families at each preset with the paper tokenizer: parameters (equal: one trunk),
sampling GFLOPs per note (one branch, no CFG; MaskGIT at its default 16 iterations) and the
forward passes that must run one after the other. docs/generators.md prints it.
Models are built on the meta device, so even d24 costs no memory; tests/test_presets.py and
tests/test_generator_presets.py keep the docs in step.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

import torch

from mars_dist.bench.families import FAMILIES, TOKENIZER_OF_PRESET, tokenizer_config
from mars_dist.models.generators.next_scale.config import AR_PRESETS, ar_preset, preset
from mars_dist.models.generators.next_scale.model import NextScaleAR


def _ar(preset: str, tokenizer_name: str) -> NextScaleAR:
    tok = tokenizer_config(tokenizer_name)
    with torch.device("meta"):
        return NextScaleAR(ar_preset(preset), tok.scales, tok.codebook_size, tok.codebook_dim)


def preset_rows() -> List[Dict[str, object]]:
    rows = []
    for name, sizes in AR_PRESETS.items():
        paper = _ar(name, "paper")
        own = _ar(name, TOKENIZER_OF_PRESET.get(name, "paper"))
        rows.append({"preset": name, **sizes,
                     "params_paper_tokenizer": sum(p.numel() for p in paper.parameters()),
                     "fwd_gflop_per_note": paper.flops_per_sample(training=False) / 1e9,
                     "tokenizer": TOKENIZER_OF_PRESET.get(name, "paper"),
                     "params_own_tokenizer": sum(p.numel() for p in own.parameters())})
    return rows


def markdown(rows: List[Dict[str, object]]) -> str:
    lines = ["| preset | depth | width | heads | params (paper tokenizer) | fwd GFLOP/note | used with | params there |",
             "|--------|-------|-------|-------|--------------------------|----------------|-----------|--------------|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['depth']} | {r['width']} | {r['heads']} | "
                     f"{r['params_paper_tokenizer'] / 1e6:.1f}M | {r['fwd_gflop_per_note']:.1f} | "
                     f"{r['tokenizer']} tokenizer | {r['params_own_tokenizer'] / 1e6:.1f}M |")
    return "\n".join(lines)


def family_rows() -> List[Dict[str, object]]:
    tok = tokenizer_config("paper")
    rows = []
    for name in AR_PRESETS:
        for family, (model_class, config_class, _, _) in FAMILIES.items():
            with torch.device("meta"):
                model = model_class(preset(config_class, name), tok.scales, tok.codebook_size, tok.codebook_dim)
            rows.append({"preset": name, "family": family, "params_paper_tokenizer": sum(p.numel() for p in model.parameters()),
                         "sampling_gflop_per_note": model.flops_per_sample(training=False) / 1e9,
                         "sequential_passes": model.sequential_steps()})
    return rows


def family_markdown(rows: List[Dict[str, object]]) -> str:
    lines = ["| preset | family | params (paper tokenizer) | sampling GFLOP/note | sequential passes/note |",
             "|--------|--------|--------------------------|---------------------|------------------------|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['family']} | {r['params_paper_tokenizer'] / 1e6:.1f}M | "
                     f"{r['sampling_gflop_per_note']:.1f} | {r['sequential_passes']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argparse.ArgumentParser(prog="mars_dist.bench.presets", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(markdown(preset_rows()))
    print()
    print(family_markdown(family_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
