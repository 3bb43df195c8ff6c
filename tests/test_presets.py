"""The preset table in docs/ar.md is the output of `python -m mars_dist.bench.presets` (figures from code)."""
from __future__ import annotations

import re
from pathlib import Path

from mars_dist.bench.presets import markdown, preset_rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "ar.md"


def test_the_docs_preset_table_is_what_the_code_computes():
    block = re.search(r"<!-- presets:begin -->\n(.*?)\n<!-- presets:end -->", DOC.read_text(), re.S)
    assert block, f"{DOC}: no presets:begin/end block"
    assert block.group(1).strip() == markdown(preset_rows()), "regenerate it with python -m mars_dist.bench.presets"
