"""mars-sample: labels in, token maps -> CMX -> Griffin-Lim -> 16 kHz wavs out."""
from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from mars_dist.errors import UserError
from mars_dist.generation.generator import FamilyGenerator
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.generation.notes import label_grid, labels_to_tensors, note_name, read_label_file
from mars_dist.models.generators.family import family
from mars_dist.sample import main
from tests.ar_exports import CMX_SHAPE, ar_export, tokenizer_export
from tests.fixtures.cli import user_error
from tests.generator_exports import generator_export


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    tok = tokenizer_export(root / "tokenizer")
    return tok, ar_export(root / "next_scale", tok)


def test_label_grid_is_every_combination_with_names_resolved():
    sets = label_grid({"pitch": ["48", "60"], "instrument_family": ["bass", "3"], "velocity": None}, per_label=2)
    assert len(sets) == 8
    assert sets[0] == {"pitch": 48, "instrument_family": 0} and sets[2] == {"pitch": 48, "instrument_family": 3}
    assert label_grid({}) == [{}]
    assert note_name(3, {"pitch": 60, "instrument_family": 4, "velocity": 100}) == "0003_pitch060_keyboard_any-source_vel100"
    tensors = labels_to_tensors([{"pitch": 60}, {"instrument_source": 2}], torch.device("cpu"))
    assert tensors["pitch"].tolist() == [60, -1] and tensors["instrument_source"].tolist() == [-1, 2]


def test_label_files_csv_and_json(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("pitch,instrument_family,velocity\n60,guitar,100\n72,,\n")
    assert read_label_file(str(csv_path)) == [{"pitch": 60, "instrument_family": 3, "velocity": 100}, {"pitch": 72}]
    json_path = tmp_path / "labels.json"
    json_path.write_text(json.dumps([{"pitch": 40, "instrument_source": "acoustic"}, {}]))
    assert read_label_file(str(json_path)) == [{"pitch": 40, "instrument_source": 0}, {}]


@pytest.mark.parametrize("text,message", [
    ("pitch\n200\n", r"labels.csv: row 1: pitch=200: expected an integer 0..127"),
    ("pitch,colour\n60,red\n", r"labels.csv: row 1: unknown label\(s\) \['colour'\]"),
    ("instrument_family\nkazoo\n", r"labels.csv: row 1: instrument_family='kazoo': expected an integer 0..10 or one of bass"),
])
def test_bad_label_files_name_file_row_and_key(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_label_file(str(path))


def test_round_trip_to_64000_sample_wavs_with_tokenizer_shapes(exports):
    tokenizer = load_tokenizer(exports[0])
    gen = load_generator(exports[1], tokenizer, torch.device("cpu"))
    assert isinstance(gen, FamilyGenerator) and gen.family is family("next_scale") and gen.name == "next_scale", \
        "the generator family comes from the export's builder"
    labels = labels_to_tensors([{"pitch": 60, "instrument_family": 0}, {}], gen.device)
    idx_list = gen.tokens(labels, 2, gen.options(cfg_scale=2.0), torch.Generator().manual_seed(0))
    assert [tuple(t.shape) for t in idx_list] == [(2, h, w) for h, w in tokenizer.module.quantizer.scales]
    cmx = gen.spectrogram(idx_list)
    assert tuple(cmx.shape) == (2, *CMX_SHAPE) and cmx.abs().max() <= 1.0
    wave = gen.audio(cmx)
    assert tuple(wave.shape) == (2, 64000) and torch.isfinite(wave).all()


def test_cli_writes_named_wavs_and_pngs_deterministically(exports, tmp_path):
    tok, ar = map(str, exports)
    args = ["--tokenizer", tok, "--model", ar, "--pitch", "60", "72", "--family", "bass", "--cfg", "2.0",
            "--top-k", "20", "--top-p", "0.9", "--batch-size", "2", "--device", "cpu"]
    for run, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main(args + ["--seed", seed, "--out", str(tmp_path / run)]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["0000_pitch060_bass_any-source_any-velocity.png", "0000_pitch060_bass_any-source_any-velocity.wav",
                     "0001_pitch072_bass_any-source_any-velocity.png", "0001_pitch072_bass_any-source_any-velocity.wav"]
    for name in names:
        if name.endswith(".wav"):
            a, rate = sf.read(tmp_path / "a" / name)
            assert a.shape == (64000,) and rate == 16000
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), "same seed, different audio"
    differs = any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names if n.endswith(".wav"))
    assert differs, "a different seed gave identical audio"


def test_maskgit_iterations_flag_reaches_the_sampler(exports, tmp_path):
    """--iterations is MaskGIT's own option: the export's 16 when left out (the same notes as an
    explicit --iterations 16), other notes with 2 passes."""
    tok = str(exports[0])
    maskgit = generator_export(tmp_path / "maskgit", exports[0], "maskgit")
    args = ["--tokenizer", tok, "--model", str(maskgit), "--pitch", "60", "--seed", "3", "--device", "cpu"]
    for run, extra in (("default", []), ("sixteen", ["--iterations", "16"]), ("two", ["--iterations", "2"])):
        assert main(args + extra + ["--out", str(tmp_path / run)]) == 0
    wav = "0000_pitch060_any-family_any-source_any-velocity.wav"
    default = (tmp_path / "default" / wav).read_bytes()
    assert (tmp_path / "sixteen" / wav).read_bytes() == default, "--iterations 16 is not the export's default"
    assert (tmp_path / "two" / wav).read_bytes() != default, "--iterations 2 did not reach MaskGIT's sampler"


def test_maskgit_flag_is_refused_for_a_next_scale_export(exports, tmp_path, capsys):
    out = tmp_path / "out"
    line = user_error(capsys, main, "mars-sample", ["--tokenizer", str(exports[0]), "--model", str(exports[1]),
                                                    "--out", str(out), "--device", "cpu", "--iterations", "4"])
    assert line == ("mars-sample: error: --iterations: not an option of the next_scale family "
                    "(its sampling flags: --cfg, --top-k, --top-p, --temperature)"), line
    assert not out.exists(), "a refused flag wrote output"


@pytest.mark.slow
def test_compile_flag_generates_the_same_notes(exports, tmp_path):
    """--compile runs the transformer's stages through torch.compile (tests/test_compiled_generation.py):
    same seed, same notes (fp32: the fused kernels' rounding does not flip a draw here)."""
    tok, ar = map(str, exports)
    args = ["--tokenizer", tok, "--model", ar, "--pitch", "60", "72", "--cfg", "2.0", "--top-p", "0.9", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--compile", "--out", str(tmp_path / "compiled")]) == 0
    names = sorted(p.name for p in (tmp_path / "plain").iterdir() if p.suffix == ".wav")
    assert len(names) == 2
    for name in names:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "compiled" / name).read_bytes(), name


def test_a_generator_that_does_not_fit_the_tokenizer_is_refused(exports, tmp_path):
    other_tok = load_tokenizer(tokenizer_export(tmp_path / "tok", overrides=["tokenizer.codebook_size=32"]))
    with pytest.raises(UserError, match=r"does not fit the tokenizer .*codebook 32 x 8"):
        load_generator(exports[1], other_tok, torch.device("cpu"))
    with pytest.raises(UserError, match=r"exports a tokenizer model \(tokenizer/tokenizer\), not a generator"):
        load_generator(exports[0], load_tokenizer(exports[0]), torch.device("cpu"))
