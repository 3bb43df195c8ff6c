"""More of a user's mistakes than the table of tests/test_user_mistakes.py holds: label files, family
names, a tokenizer the generator does not fit, decoding with another tokenizer, the real entry points
started as processes, the sampling flags checked alike by every sampling command, --compile/--int8
without a C++ compiler; and what the commands write is readable by the group (file modes follow the umask)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mars_dist.cli import run_cli
from mars_dist.encode import main as encode_main
from mars_dist.eval.report import main as report_main
from mars_dist.evaluate import main as evaluate_main
from mars_dist.sample import main as sample_main
from tests.ar_exports import ar_export, tokenizer_export
from tests.fixtures.cli import user_error

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_exports")
    tok = tokenizer_export(root / "tokenizer")
    return {"tok": tok, "ar": ar_export(root / "ar", tok),
            "other_tok": tokenizer_export(root / "other", overrides=["tokenizer.codebook_size=32"])}


def test_sample_mistakes(exports, capsys, tmp_path):
    base = ["--tokenizer", str(exports["tok"]), "--model", str(exports["ar"]), "--out", str(tmp_path / "out"),
            "--device", "cpu"]
    assert "instrument_family='trumpet': expected an integer 0..10 or one of bass" in user_error(
        capsys, sample_main, "mars-sample", base + ["--family", "trumpet"])
    labels = tmp_path / "labels.csv"
    labels.write_text("pitch,instrument_family\n60,keyboard\n61,kazoo\n")
    assert "labels.csv: row 2: instrument_family='kazoo'" in user_error(
        capsys, sample_main, "mars-sample", base + ["--labels", str(labels)])
    unfit = ["--tokenizer", str(exports["other_tok"])] + base[2:]
    assert "does not fit the tokenizer (scales" in user_error(capsys, sample_main, "mars-sample", unfit)
    assert not (tmp_path / "out").exists(), "nothing is written when the input is wrong"


def test_encode_decode_with_another_tokenizer(exports, tiny_shards, capsys, tmp_path):
    tokens = tmp_path / "tokens"
    assert encode_main(["encode", "--tokenizer", str(exports["tok"]), "--shards", tiny_shards["valid"],
                        "--out", str(tokens), "--device", "cpu"]) == 0
    line = user_error(capsys, encode_main, "mars-encode", ["decode", "--tokenizer", str(exports["other_tok"]),
                                                           "--tokens", str(tokens), "--out", str(tmp_path / "d")])
    assert "decode with the tokenizer that encoded them" in line and "over 64 codes" in line and "over 32 codes" in line


@pytest.mark.parametrize("argv,expected", [
    (["mars_dist/train.py", "--config", "configs/tokenizer/tiny.yaml", "train.max_step=5"],
     "mars-train: error: command-line override 'train.max_step=5': unknown config key "
     "'train.max_step' (closest valid key: train.max_steps)"),
    (["-m", "mars_dist.sample", "--tokenizer", "nowhere", "--model", "nowhere", "--out", "x"],
     "mars-sample: error: nowhere: no such export folder"),
])
def test_the_entry_points_themselves_print_one_line_and_exit_2(argv, expected):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if ": error:" in line] == [expected + result.stderr.split(expected)[1].splitlines()[0]]


@pytest.mark.parametrize("flags, message", [(["--top-p", "1.5"], r"--top-p 1\.5: must be in \[0, 1\]"),
                                           (["--top-k", "-1"], r"--top-k -1: must be >= 0"),
                                           (["--temperature", "-0.5"], r"--temperature -0\.5: must be >= 0"),
                                           (["--iterations", "0"], r"--iterations 0: must be >= 1")])
@pytest.mark.parametrize("prog, main, required", [
    ("mars-sample", sample_main, ["--tokenizer", "t", "--model", "m", "--out", "o"]),
    ("mars-evaluate", evaluate_main, ["--tokenizer", "t", "--classifier", "c", "--reference", "r"]),
    ("mars-report", report_main, ["--tokenizer", "t", "--shards", "s", "--out", "o"]),
])
def test_every_command_that_samples_checks_the_sampling_flags_alike(prog, main, required, flags, message, capsys):
    """The sampling flags are one definition (generation.generator.add_sampling_arguments): same names,
    defaults and checks in every command, refused before anything is loaded."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, prog, [*required, *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and __import__("re").search(rf"{prog}: error: {message}", err), err


@pytest.mark.parametrize("flag", ["--compile", "--int8"])
def test_compile_without_a_cpp_compiler_is_one_error_line(flag, exports, capsys, tmp_path, monkeypatch):
    from torch._inductor import cpp_builder

    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ to be found
    monkeypatch.delenv("CXX", raising=False)
    cpp_builder.cpp_compiler_search.cache_clear()  # inductor caches a compiler found earlier in this process
    line = user_error(capsys, sample_main, "mars-sample", ["--tokenizer", str(exports["tok"]), "--model", str(exports["ar"]),
                                                           "--out", str(tmp_path / "o"), "--device", "cpu", flag])
    assert f"{flag} on a CPU needs a C++ compiler" in line and not (tmp_path / "o").exists(), line


def test_written_files_follow_the_umask(exports, tmp_path):
    old = os.umask(0o022)
    try:
        assert sample_main(["--tokenizer", str(exports["tok"]), "--model", str(exports["ar"]), "--out", str(tmp_path / "s"),
                            "--pitch", "60", "--device", "cpu", "--gl-iters", "2"]) == 0
        ours = tokenizer_export(tmp_path / "t")
    finally:
        os.umask(old)
    written = list((tmp_path / "s").iterdir()) + list(ours.iterdir())
    assert written and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in written), \
        {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
