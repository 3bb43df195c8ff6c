"""The environment is exactly launch/requirements.lock, and set-up run again installs nothing.

Why a test: a reused venv drifts (someone pip-installs a newer torchaudio, a half-finished set-up
leaves an old wheel behind) and the failure then surfaces far away, as an undefined symbol in a
compiled extension. CI runs launch/setup.sh right before pytest, so these also prove on every
fresh clone that set-up converged.
"""
from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "launch" / "requirements.lock"


@functools.lru_cache(maxsize=None)
def _envcheck():
    spec = importlib.util.spec_from_file_location("envcheck", REPO / "launch" / "envcheck.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["envcheck"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_installed_distributions_equal_the_lock():
    envcheck = _envcheck()
    entries = envcheck.applicable(LOCK)
    assert {"torch", "torchaudio", "deepspeed", "accelerate", "webdataset", "s3fs"} <= {e.name for e in entries}
    assert envcheck.drift(LOCK) == [], "this interpreter's packages differ from launch/requirements.lock"


def test_vendored_copies_later_on_sys_path_are_not_drift(tmp_path, monkeypatch):
    """setuptools appends its _vendor folder (older packaging, platformdirs) to sys.path when imported:
    what counts is the copy an import finds, the first on sys.path."""
    vendored = tmp_path / "_vendor" / "packaging-1.0.dist-info"
    vendored.mkdir(parents=True)
    (vendored / "METADATA").write_text("Metadata-Version: 2.1\nName: packaging\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", sys.path + [str(tmp_path / "_vendor")])  # restored after the test
    envcheck = _envcheck()
    assert envcheck.installed_versions()["packaging"] != "1.0"
    assert envcheck.drift(LOCK) == []
    monkeypatch.setattr(sys, "path", [str(tmp_path / "_vendor")] + sys.path)
    assert envcheck.installed_versions()["packaging"] == "1.0", "the check must still see what an import would load"
    assert any(line.startswith("packaging: installed 1.0, lock ") for line in envcheck.drift(LOCK))


def test_the_lock_pins_torch_and_torchaudio_as_one_exact_pair():
    versions = {e.name: e.version for e in _envcheck().applicable(LOCK)}
    assert versions["torch"] == versions["torchaudio"] == "2.11.0"
    assert all("--hash=sha256:" in e.text for e in _envcheck().read_lock(LOCK)), "every lock entry carries wheel hashes"


def test_drift_names_the_package_and_both_versions(tmp_path):
    envcheck = _envcheck()
    torch_entry = next(e for e in envcheck.read_lock(LOCK) if e.name == "torch")
    lock = tmp_path / "requirements.lock"
    lock.write_text(torch_entry.text.replace("torch==2.11.0", "torch==2.10.0") + "\nnot-a-real-dist-xyz==1.0 \\\n"
                    "    --hash=sha256:00\n")
    problems = envcheck.drift(lock)
    assert any(p.startswith("torch: installed 2.11.0") and "lock 2.10.0" in p for p in problems), problems
    assert "not-a-real-dist-xyz: not installed (lock: 1.0)" in problems


def test_an_unpinned_lock_entry_is_refused_with_its_text(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch>=2.11\n")
    with pytest.raises(ValueError, match=r"'torch>=2.11' is not pinned"):
        _envcheck().read_lock(lock)


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="set-up idempotence is checked in the repository's own .venv (launch/setup.sh)")
def test_setup_run_again_installs_nothing():
    result = subprocess.run(["bash", "launch/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already matches launch/requirements.lock: nothing to install" in result.stdout, result.stdout
    assert "smoke check passed: " in result.stdout and "torchaudio 2.11.0" in result.stdout, result.stdout
