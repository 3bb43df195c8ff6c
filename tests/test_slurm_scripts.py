"""The sbatch scripts themselves: valid bash, clean under shellcheck (Debian's), the directives the
preemption path relies on, and a one-line error when started outside sbatch."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.fixtures.slurm import REPO

ENTRY_SCRIPTS = ["slurm/train.sh", "slurm/tokenizer.sh", "slurm/ar.sh", "slurm/eval.sh"]
LAUNCH_SCRIPTS = ["launch/setup.sh", "launch/test.sh", "launch/quickstart.sh", "launch/relock.sh"]
SCRIPTS = [*ENTRY_SCRIPTS, "slurm/_common.sh", "slurm/_task.sh", ".ci/run", *LAUNCH_SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bash_parses_the_script(script):
    out = subprocess.run(["bash", "-n", script], cwd=REPO, capture_output=True, text=True)
    assert (out.returncode, out.stderr) == (0, ""), out.stderr


def test_shellcheck_finds_nothing():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed: apt-get install shellcheck (.ci/run does)")
    out = subprocess.run(["shellcheck", "-x", *SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert (out.returncode, out.stdout + out.stderr) == (0, ""), out.stdout


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_scripts_signal_the_steps_requeue_and_append(script):
    directives = [line.split(None, 1)[1] for line in (REPO / script).read_text().splitlines() if line.startswith("#SBATCH")]
    # no "B:" in --signal: Slurm must signal the training processes, not only the batch shell
    for wanted in ("--signal=USR1@90", "--requeue", "--open-mode=append"):
        assert wanted in directives, f"{script}: #SBATCH {wanted} missing from {directives}"


def test_outside_sbatch_a_script_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run(["bash", "slurm/ar.sh"], cwd=REPO, capture_output=True, text=True, env=env)
    assert (out.returncode, out.stderr) == (2, "error: this is an sbatch script (SLURM_JOB_ID is not set): sbatch slurm/ar.sh ...\n")
