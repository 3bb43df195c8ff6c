"""Zero-shot editing: masks through the real CMX transform onto every scale's grid, the baselines,
the region metrics, and every family's edit keeping what it must keep."""
from __future__ import annotations

import pytest
import torch

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.generation import editing
from mars_dist.generation.editing import BandwidthExtension, TimeInpaint, keep_cmx, token_keep_masks
from mars_dist.generation.loaders import load_generator, load_tokenizer
from tests.ar_exports import tokenizer_export
from tests.generator_exports import FAMILIES, generator_export

PAPER_SCALES = [(1, 1), (2, 2), (3, 3), (4, 4), (6, 6), (8, 8), (10, 10), (13, 13), (16, 16)]


def frontend(layout: str = "interleaved") -> AudioFrontend:
    cfg = AudioConfig()
    cfg.cmx.layout = layout
    return AudioFrontend(cfg)


def test_bandwidth_mask_is_image_rows_only_for_the_interleaved_layout():
    fe = frontend()  # 512 bins x 256 frames -> 2 x 256 x 256, bin f = 2 i + k in channel k
    keep_CHW = keep_cmx(fe, BandwidthExtension(4000.0).keep_FT(fe))  # bins >= 256 regenerated
    assert BandwidthExtension(4000.0).cutoff_bin(fe) == 256
    assert keep_CHW.all(0)[:128].all() and not keep_CHW.any(0)[128:].any()
    # a cutoff between bins: bin 192 is kept, 193 not, so row 96 (bins 192, 193) is not kept as a whole
    keep_CHW = keep_cmx(fe, BandwidthExtension(3010.0).keep_FT(fe))
    assert keep_CHW[0, 96].all() and not keep_CHW[1, 96].any() and not keep_CHW.all(0)[96:].any()
    # contiguous: channel 1 is the upper half of the band: no image pixel keeps every channel
    fe_c = frontend("contiguous")
    keep_CHW = keep_cmx(fe_c, BandwidthExtension(4000.0).keep_FT(fe_c))
    assert keep_CHW[0].all() and not keep_CHW[1].any()
    assert not any(m.any() for m in token_keep_masks(keep_CHW, PAPER_SCALES, 1))


def test_a_token_is_kept_only_when_its_cell_lies_entirely_in_the_kept_area():
    fe = frontend()
    masks = token_keep_masks(keep_cmx(fe, BandwidthExtension(4000.0).keep_FT(fe)), PAPER_SCALES, 2)
    assert [tuple(m.shape) for m in masks] == [(2, h, w) for h, w in PAPER_SCALES]
    assert not masks[0].any(), "the 1 x 1 token summarises the whole note"
    assert masks[2][0].all(dim=1).tolist() == [True, False, False]  # 3 rows of ~85.3 image rows: [0, 86) < 128
    assert masks[8][0].all(dim=1).tolist() == [True] * 8 + [False] * 8 and not masks[8][0, 8:].any()
    span = TimeInpaint(1.0, 2.0)
    assert span.frames(fe) == range(63, 125)  # frame j is centred at j * 256 / 16000 s
    finest = token_keep_masks(keep_cmx(fe, span.keep_FT(fe)), PAPER_SCALES, 1)[8][0]
    assert finest.all(dim=0).tolist() == [True] * 3 + [False] * 5 + [True] * 8  # 16-frame columns 3..7 touch 63..124


def test_edits_inside_the_note_and_its_bins_pass_the_check_and_others_say_why_not():
    fe = frontend()  # 4 s notes; 512 bins, the top one centred at 511 * 16000 / 1024 = 7984.375 Hz
    TimeInpaint(3.0, 4.0).check(fe)
    BandwidthExtension(7984.375).check(fe)
    assert BandwidthExtension(7984.375).cutoff_bin(fe) == 511, "the top bin is the one regenerated"
    with pytest.raises(editing.EditError, match=r"the span runs past the end of the note, which is 4 s long "
                                                r"\(64000 samples at 16000 Hz\); choose an end <= 4 s"):
        TimeInpaint(3.5, 4.5).check(fe)
    with pytest.raises(editing.EditError, match=r"--cutoff-hz 7990: removes nothing: the spectrogram's highest bin is "
                                                r"centred at 7984.375 Hz \(1024-point STFT at 16000 Hz, the Nyquist bin"):
        BandwidthExtension(7990.0).check(fe)
    with pytest.raises(editing.EditError, match="removes the whole note"):
        BandwidthExtension(0.0).check(fe)
    with pytest.raises(editing.EditError, match=r"expected 0 <= start < end"):
        TimeInpaint(2.0, 1.0).check(fe)


def test_naive_fills():
    fe = frontend()
    ramp_FT = torch.linspace(-1, 1, 256).expand(512, 256).clone()
    span = TimeInpaint(1.0, 2.0)
    filled = span.naive_fill(ramp_FT.clone().masked_fill(~span.keep_FT(fe), 0.0), fe)
    torch.testing.assert_close(filled, ramp_FT, atol=1e-5, rtol=0)  # a linear ramp is interpolated exactly
    stop = TimeInpaint(0.0, 1.0).frames(fe).stop  # the span touches the start: the frame after it is copied
    filled = TimeInpaint(0.0, 1.0).naive_fill(ramp_FT, fe)
    assert torch.equal(filled[:, :stop], ramp_FT[:, stop:stop + 1].expand(512, stop))
    rows_FT = torch.arange(512.0).unsqueeze(1).expand(512, 256)
    copied = BandwidthExtension(4000.0).naive_fill(rows_FT, fe)
    assert torch.equal(copied[:256], rows_FT[:256])
    assert copied[256:, 0].tolist() == [128.0 + (f % 128) for f in range(256)]  # the top octave, repeated


def test_region_metrics_see_only_the_removed_region():
    fe = frontend()
    span = TimeInpaint(2.0, 3.0)
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 64000, generator=gen) * 0.1
    out = ref.clone()
    out[:, :2000] += 0.5  # frames near 0 s only: far from the span
    log_ref = fe.cmx_to_log(fe.wave_to_cmx(ref))
    log_out = log_ref.clone()
    log_out[..., :5] = 0.0
    region = span.mel_region(fe, 251)
    m = editing.region_metrics(ref, out, log_ref, log_out, span.keep_FT(fe), region, fe)
    assert m["mel_mse"] == [0.0, 0.0] and m["log_spec_mse"] == [0.0, 0.0] and m["spectral_convergence"] == [0.0, 0.0]
    out[:, 40000:41000] += 0.5  # inside the span (2.5 s)
    m = editing.region_metrics(ref, out, log_ref, log_out, span.keep_FT(fe), region, fe)
    assert min(m["mel_mse"]) > 0 and min(m["spectral_convergence"]) > 0
    bands = BandwidthExtension(4000.0).mel_region(fe, 251)[:, 0]
    assert 0 < int(bands.sum()) < 80 and bands[-1] and not bands[0]
    assert torch.equal(bands, torch.arange(80) >= int((~bands).sum())), "the regenerated bands are the top ones"


def fast_griffin_lim(tokenizer):
    """Two Griffin-Lim iterations: these tests check what is kept and measured, not phase recovery."""
    tokenizer.frontend.cfg.griffin_lim.n_iter = 2
    return tokenizer


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit_exports")
    tok = tokenizer_export(root / "tok")
    return tok, {family: generator_export(root / family, tok, family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_edits_keeping_the_kept_tokens_and_the_kept_input(exports, family):
    tok, models = exports
    gen = load_generator(models[family], fast_griffin_lim(load_tokenizer(tok)), torch.device("cpu"))
    fe = gen.frontend
    t = torch.arange(64000) / 16000
    waves = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) * torch.exp(-t) for f in (220.0, 440.0, 660.0)])
    edit = TimeInpaint(1.0, 2.0)
    options = gen.options(cfg_scale=2.0, **({"iterations": 4} if family == "maskgit" else {}))
    idx = gen.tokenizer.encode(fe.wave_to_cmx(waves).float())
    keep = token_keep_masks(keep_cmx(fe, edit.keep_FT(fe)), gen.tokenizer.quantizer.scales, 3)
    edited = gen.edit(idx, keep, {"pitch": torch.tensor([57, 69, 76])}, options, gen.rng(0))
    assert all(torch.equal(e[k], i[k]) for e, i, k in zip(edited, idx, keep))
    assert any(not torch.equal(e[~k], i[~k]) for e, i, k in zip(edited, idx, keep)), "nothing was regenerated"

    result = editing.edit_notes(gen, waves, edit, [{"pitch": 57}, {}, {"pitch": 76}], options, gen.rng(0), batch_size=2)
    keep_CHW = keep_cmx(fe, edit.keep_FT(fe))
    x = fe.wave_to_cmx(waves).float()
    for method in editing.METHODS:
        assert torch.equal(result.cmx[method][:, keep_CHW], x[:, keep_CHW]), f"{method} changed the kept input"
        assert result.waves[method].shape == (3, 64000)
        assert set(result.metrics[method]) >= {"mel_mse", "mel_mae", "spectral_convergence", "log_spec_mse"}
        assert len(result.metrics[method]["mel_mse"]) == 3
    empty_log = fe.cmx_to_log(result.cmx[editing.EMPTY])
    assert (empty_log[:, ~edit.keep_FT(fe)] == -1.0).all()
    means = result.mean_metrics()
    assert means[editing.GRIFFIN_LIM]["log_spec_mse"] == 0.0
    per = result.metrics[editing.EMPTY]
    pooled = (sum(per["spectral_error_energy"]) / sum(per["spectral_reference_energy"])) ** 0.5
    assert means[editing.EMPTY]["spectral_convergence"] == pytest.approx(pooled)


def test_an_edit_that_removes_nothing_is_refused(exports):
    tok, models = exports
    gen = load_generator(models["maskgit"], fast_griffin_lim(load_tokenizer(tok)), torch.device("cpu"))
    with pytest.raises(editing.EditError, match="removes nothing"):
        editing.edit_notes(gen, torch.zeros(1, 64000), BandwidthExtension(9000.0), [{}], gen.options(), gen.rng(0))
