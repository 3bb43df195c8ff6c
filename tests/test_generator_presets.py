"""The families' sizes: configs at the trunk presets, equal parameter counts, and the table in
docs/generators.md is what `python -m mars_dist.bench.presets` computes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mars_dist.bench.presets import family_markdown, family_rows
from mars_dist.config import load_config
from mars_dist.models.generators.family import TokenGeometry, builtin_names, family
from mars_dist.models.generators.presets import TRUNK_PRESETS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "generators.md"


def test_the_docs_family_table_is_what_the_code_computes():
    block = re.search(r"<!-- families:begin -->\n(.*?)\n<!-- families:end -->", DOC.read_text(), re.S)
    assert block, f"{DOC}: no families:begin/end block"
    assert block.group(1).strip() == family_markdown(family_rows()), "regenerate it with python -m mars_dist.bench.presets"


@pytest.mark.parametrize("task", ["next_token", "maskgit"])
@pytest.mark.parametrize("name", list(TRUNK_PRESETS))
def test_preset_yaml_matches_the_shared_preset(task, name):
    cfg = load_config(REPO / "configs" / task / f"{name}.yaml")
    assert cfg.task == task
    assert {k: getattr(getattr(cfg, task), k) for k in ("depth", "width", "heads")} == TRUNK_PRESETS[name]


def test_every_family_has_the_same_parameter_count_at_every_preset():
    geometry = TokenGeometry(((1, 1), (2, 2), (3, 3), (4, 4)), 1024, 16)
    names = builtin_names()
    assert set(names) >= {"next_scale", "next_token", "maskgit"}, names
    for name in TRUNK_PRESETS:
        counts = {}
        for key in names:
            spec = family(key)
            with torch.device("meta"):
                model = spec.build(spec.preset(name), geometry)
            counts[key] = sum(p.numel() for p in model.parameters())
        assert len(set(counts.values())) == 1, f"{name}: {counts}"
