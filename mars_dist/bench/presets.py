"""The size presets of the generators as tables, computed from the code (nothing measured):

    mars-bench-presets

(1) The next-scale AR: parameters and forward GFLOPs per note (one branch, no CFG) with the paper
tokenizer (16,384 codes, 9 scales), and parameters with the tokenizer each preset is used with
(tiny and small: the tiny and small tokenizers). docs/ar.md prints it.
(2) The built-in families at each preset with the paper tokenizer: parameters (equal: one trunk),
sampling GFLOPs per note (one branch, no CFG; MaskGIT at its default 16 iterations) and the
forward passes that must run one after the other. docs/generators.md prints it.
Models are built on the meta device, so even d24 costs no memory; tests/test_presets.py and
tests/test_generator_presets.py keep the docs in step.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from mars_dist.bench.generators import TOKENIZER_OF_PRESET, tokenizer_config
from mars_dist.cli import make_parser, console_script
from mars_dist.models.generators.family import TokenGeometry, builtin_names, family
from mars_dist.models.generators.presets import TRUNK_PRESETS


def _model(family_name: str, preset: str, tokenizer_name: str) -> torch.nn.Module:
    tok = tokenizer_config(tokenizer_name)
    spec = family(family_name)
    with torch.device("meta"):
        return spec.build(spec.preset(preset), TokenGeometry.from_dict(
            {"scales": tok.scales, "codebook_size": tok.codebook_size, "codebook_dim": tok.codebook_dim}))


def preset_rows() -> List[Dict[str, object]]:
    rows = []
    for name, sizes in TRUNK_PRESETS.items():
        paper = _model("next_scale", name, "paper")
        own = _model("next_scale", name, TOKENIZER_OF_PRESET.get(name, "paper"))
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
    rows = []
    for name in TRUNK_PRESETS:
        for family_name in builtin_names():
            spec = family(family_name)
            model = _model(family_name, name, "paper")
            options = spec.default_options()
            rows.append({"preset": name, "family": family_name,
                         "params_paper_tokenizer": sum(p.numel() for p in model.parameters()),
                         "sampling_gflop_per_note": spec.flops_per_sample(model, training=False) / 1e9,
                         "sequential_passes": spec.sequential_steps(model, options)})
    return rows


def family_markdown(rows: List[Dict[str, object]]) -> str:
    lines = ["| preset | family | params (paper tokenizer) | sampling GFLOP/note | sequential passes/note |",
             "|--------|--------|--------------------------|---------------------|------------------------|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['family']} | {r['params_paper_tokenizer'] / 1e6:.1f}M | "
                     f"{r['sampling_gflop_per_note']:.1f} | {r['sequential_passes']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    make_parser("mars-bench-presets", __doc__).parse_args(argv)
    print(markdown(preset_rows()))
    print()
    print(family_markdown(family_rows()))
    return 0


entry = console_script(main, "mars-bench-presets")


if __name__ == "__main__":
    entry()
