"""--int8: dynamically quantized int8 matmuls for CPU inference (mars_dist/models/int8.py), in the
generators' trunk and the tokenizer's decoder (Generator.int8), and the bench that measures what
they change (mars_dist.bench.int8)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.errors import UserValueError
from mars_dist.generation.loaders import load_generator, load_tokenizer
from mars_dist.models.int8 import Int8Linear, int8_linear, quantize_linears
from tests.ar_exports import ar_export, tokenizer_export


def reference_int8(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """The same arithmetic written out independently, in float64: symmetric per-row int8 codes of the
    activations and per-output-channel codes of the weights, their exact integer product, rescaled."""
    x64, w64 = x.reshape(-1, x.shape[-1]).double(), linear.weight.detach().double()
    sx = x64.abs().max(dim=1, keepdim=True).values / 127
    sw = w64.abs().max(dim=1, keepdim=True).values / 127
    xq, wq = (x64 / sx).round().clamp(-127, 127), (w64 / sw).round().clamp(-127, 127)
    y = (xq @ wq.T) * sx * sw.T + linear.bias.detach().double()
    return y.reshape(*x.shape[:-1], -1)


def test_int8_linear_is_the_quantized_arithmetic_and_close_to_the_float_layer():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(3, 7, 96) * torch.linspace(0.1, 10, 7)[None, :, None]  # tokens of very different scales
    q = Int8Linear.from_linear(linear, compiled=False)
    with torch.no_grad():
        y, exact = q(x), linear(x)
    assert y.shape == (3, 7, 40) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), reference_int8(x, linear), rtol=1e-5, atol=1e-5)
    rel = float((y - exact).norm() / exact.norm())
    assert 1e-4 < rel < 0.02, rel  # quantized (not the float layer itself), and within ~1%
    per_token = (y - exact).norm(dim=-1) / exact.norm(dim=-1)
    assert float(per_token.max()) < 0.05, "per-token scales: a quiet token keeps its precision next to a loud one"
    assert q.weight_NK.dtype == torch.int8 and q.bias_N.dtype == torch.float32


def test_int8_linear_keeps_the_input_dtype_and_works_without_bias():
    torch.manual_seed(1)
    linear = nn.Linear(32, 16, bias=False)
    q = Int8Linear.from_linear(linear, compiled=False)
    x = torch.randn(5, 32)
    y = q(x.bfloat16())
    assert y.dtype == torch.bfloat16 and y.shape == (5, 16)
    torch.testing.assert_close(int8_linear(x, q.weight_NK, q.weight_scale_N, None), y.float(), rtol=0.02, atol=0.02)


def test_quantize_linears_replaces_every_linear_inside_nested_modules():
    module = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4)))
    assert quantize_linears(module, compiled=False) == 2
    assert isinstance(module[0], Int8Linear) and isinstance(module[2][0], Int8Linear)
    assert isinstance(module[1], nn.GELU) and not module[0].gelu, "only the tanh GELU the layer can fuse moves"
    assert isinstance(module[2][1], nn.LayerNorm)
    assert module(torch.randn(2, 8)).shape == (2, 4)


def test_a_tanh_gelu_after_a_linear_moves_into_it():
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(approximate="tanh"), nn.Linear(64, 16))
    x = torch.randn(4, 16)
    with torch.no_grad():
        exact = mlp(x)
        assert quantize_linears(mlp, compiled=False) == 2
        fused = mlp(x)
    assert mlp[0].gelu and isinstance(mlp[1], nn.Identity) and not mlp[2].gelu
    assert float((fused - exact).norm() / exact.norm()) < 0.03


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8_exports")
    tok = tokenizer_export(root / "tokenizer")
    return tok, ar_export(root / "next_scale", tok)


def test_generator_int8_quantizes_its_trunk_and_its_own_copy_of_the_decoder(exports):
    tok_dir, ar_dir = exports
    tokenizer = load_tokenizer(tok_dir)
    gen = load_generator(ar_dir, tokenizer, torch.device("cpu"), int8=True)
    model = gen.model
    for block in model.blocks:
        assert all(isinstance(m, Int8Linear) for m in (block.attn.qkv, block.attn.proj, block.ffn.fc1, block.ffn.fc2))
        assert block.ffn.fc1.gelu and isinstance(block.ffn.act, nn.Identity)
        assert type(block.ada) is nn.Linear, "the once-per-batch modulation stays float"
    assert isinstance(model.head.out, Int8Linear) and type(model.head.ada) is nn.Linear
    assert gen.tokenizer is not tokenizer.module
    assert any(isinstance(m, Int8Linear) for m in gen.tokenizer.decoder.modules())
    assert not any(isinstance(m, Int8Linear) for m in tokenizer.module.modules()), \
        "the caller's tokenizer (e.g. the evaluation's reconstructions) decodes in float"
    assert gen.tokenizer.encoder is tokenizer.module.encoder and gen.tokenizer.quantizer is tokenizer.module.quantizer


def test_int8_generator_logits_and_decode_stay_close_to_float(exports):
    tok_dir, ar_dir = exports
    tokenizer = load_tokenizer(tok_dir)
    plain = load_generator(ar_dir, tokenizer, torch.device("cpu"))
    quant = load_generator(ar_dir, tokenizer, torch.device("cpu"), int8=True)
    q = tokenizer.module.quantizer
    torch.manual_seed(0)
    idx = [torch.randint(0, q.codebook_size, (2, h, w)) for h, w in q.scales]
    labels = {"pitch": torch.tensor([60, 72])}
    with torch.no_grad():
        x = q.teacher_forcing_inputs(idx)
        a, b = plain.model(labels, x), quant.model(labels, x)
        rel = float((a - b).norm() / a.norm())
        cmx_a, cmx_b = plain.spectrogram(idx), quant.spectrogram(idx)
    assert 0 < rel < 0.05, rel
    assert 0 < float((cmx_a - cmx_b).abs().max()) < 0.05


def test_int8_is_refused_off_the_cpu(exports):
    tok_dir, ar_dir = exports
    gen = load_generator(ar_dir, load_tokenizer(tok_dir), torch.device("cpu"))
    gen.device = torch.device("cuda")  # what a GPU generator holds; int8 must refuse before touching anything
    with pytest.raises(UserValueError, match=r"--int8: int8 matmuls are for CPUs \(device cuda\)"):
        gen.int8()
    assert not any(isinstance(m, Int8Linear) for m in gen.model.modules())


@pytest.mark.slow
def test_sample_int8_writes_notes_and_the_bench_measures_the_change(exports, tiny_shards, tmp_path, capsys):
    """The --int8 command line end to end (compiled int8 kernels), and bench.int8's figures: the
    teacher-forced distributions of int8 and float agree, and its sampling part runs every arm."""
    from mars_dist.bench.int8 import main as bench_main
    from mars_dist.sample import main as sample_main

    tok, ar = map(str, exports)
    args = ["--tokenizer", tok, "--model", ar, "--pitch", "60", "72", "--device", "cpu", "--gl-iters", "2"]
    assert sample_main(args + ["--int8", "--out", str(tmp_path / "int8")]) == 0
    assert len(list((tmp_path / "int8").glob("*.wav"))) == 2
    out = tmp_path / "bench.json"
    assert bench_main(["--tokenizer", tok, "--model", ar, "--shards", tiny_shards["valid"], "--limit", "4",
                       "--pitches", "60", "72", "--per-pitch", "2", "--batch-size", "4", "--gl-iters", "2",
                       "--json", str(out)]) == 0
    result = __import__("json").loads(out.read_text())
    tf = result["teacher_forced"]
    assert abs(tf["ce_float"] - tf["ce_int8"]) < 0.01 * tf["ce_float"] and 0 <= tf["kl"] < 0.01, tf
    assert result["decode"]["mse_int8_vs_float_decode"] < result["decode"]["mse_float_decode_vs_input"]
    assert result["family"] == "next_scale", "the result names the export's generator family"
    assert result["sampling"]["notes"] == 4 and "teacher-forced: cross-entropy" in capsys.readouterr().out


@pytest.mark.slow
def test_int8_kernels_compile_once_for_every_batch_size_stage_and_autocast(exports):
    """The compiled int8 layer is entered with 2-D, non-view inputs and autocast off, so after one
    note the AR's and the decoder's layers at any batch size reuse the same few graphs (past dynamo's
    recompile limit of 8 it would quietly run op by op: 1.8x slower decode measured at d12)."""
    from torch._dynamo.utils import counters

    tok_dir, ar_dir = exports
    gen = load_generator(ar_dir, load_tokenizer(tok_dir), torch.device("cpu"), torch.bfloat16, int8=True)
    options = gen.options(cfg_scale=2.0)
    graphs_before = counters["stats"]["unique_graphs"]
    list(gen.generate([{"pitch": 60}], options, gen.rng(0), 1))  # bf16 AR, decoder under bf16 autocast
    first = counters["stats"]["unique_graphs"] - graphs_before
    for batch in (2, 3, 5):
        notes = list(gen.generate([{"pitch": 60}] * batch, options, gen.rng(batch), batch))
        assert notes[0].wave_BN.shape[0] == batch
    assert counters["stats"]["unique_graphs"] - graphs_before == first <= 4, (first, counters["stats"]["unique_graphs"])


def test_bench_int8_answers_a_missing_export_with_one_line(tmp_path, capsys):
    from mars_dist.bench.int8 import main as bench_main
    from mars_dist.cli import run_cli

    missing = str(tmp_path / "nope")
    assert run_cli(bench_main, "mars-bench-int8", ["--tokenizer", missing, "--model", missing,
                                                   "--shards", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mars-bench-int8: error:") and "no such export folder" in err[0], err
