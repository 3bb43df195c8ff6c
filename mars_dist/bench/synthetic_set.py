"""The benchmarks' data: a synthetic NSynth-format set turned into shards, made the way a user makes it.

It runs the data tools' command lines (`python -m data_tools.synthetic`, `python -m data_tools.shard`)
as subprocesses: the library never imports the tools folder, and a benchmark then reads exactly
what training reads. Idempotent: complete shards are reused.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

from mars_dist.data.manifest import MANIFEST_NAME


def run_tool(args: Sequence[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-3000:]}")


def synthetic_shards(work: Path, splits: Dict[str, int], shard_size: int = 64, seed: int = 0,
                     with_audio: Sequence[str] = ()) -> Dict[str, Path]:
    """{split: shard folder} of a synthetic set with `splits` = {"train": N, "valid": M} notes."""
    work = Path(work)
    nsynth, shards = work / "nsynth", work / "shards"
    if not all((shards / split / MANIFEST_NAME).is_file() for split in splits):
        run_tool(["data_tools.synthetic", "--out", str(nsynth), "--seed", str(seed),
                  *[arg for split, n in splits.items() for arg in ("--split", f"{split}:{n}")]])
        for split in splits:
            run_tool(["data_tools.shard", "--nsynth-root", str(nsynth), "--split", split, "--out", str(shards / split),
                      "--shard-size", str(shard_size), "--workers", "1", *(["--with-audio"] if split in with_audio else [])])
    return {split: shards / split for split in splits}
