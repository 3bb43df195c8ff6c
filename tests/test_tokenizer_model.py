"""The tokenizer model, PatchGAN, adaptive weight and EMA (mars_dist.models)."""
import pytest
import torch
import torch.nn.functional as F

from mars_dist.models.ema import ema_decay_at, ema_update, frozen_copy
from mars_dist.models.tokenizer.patchgan import PatchGANDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss
from mars_dist.models.tokenizer.model import SpectrogramTokenizer
from mars_dist.models.tokenizer.config import DiscriminatorConfig, TokenizerConfig


def tiny_cfg(**kw) -> TokenizerConfig:
    base = dict(patch_size=8, enc_width=32, enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2,
                codebook_size=64, codebook_dim=8, scales=[[1, 2], [2, 4], [4, 8]], quant_dropout=0.0)
    base.update(kw)
    return TokenizerConfig(**base)


def make_tokenizer(shape=(2, 32, 64), **kw) -> SpectrogramTokenizer:
    torch.manual_seed(0)
    return SpectrogramTokenizer(tiny_cfg(**kw), shape)


@pytest.mark.parametrize("shape", [(2, 32, 64), (1, 64, 32), (4, 16, 16)])
def test_encode_decode_round_trip_shapes(shape):
    model = make_tokenizer(shape)
    x = torch.randn(3, *shape)
    idx_list = model.encode(x)
    assert [tuple(i.shape) for i in idx_list] == [(3, 1, 2), (3, 2, 4), (3, 4, 8)]
    assert all(i.dtype == torch.long and int(i.max()) < 64 for i in idx_list)
    assert model.decode_indices(idx_list).shape == (3, *shape)
    assert model.decode_indices(idx_list[:1]).shape == (3, *shape), "a coarse prefix of token maps decodes too"
    out = model(x)
    assert out["recon"].shape == (3, *shape) and out["vq_loss"].dim() == 0
    assert out["stats"]["usage"].shape == (3,) and out["stats"]["perplexity"].shape == (3,)


def test_decode_of_encode_equals_the_forward_reconstruction_in_eval_mode():
    model = make_tokenizer().eval()
    x = torch.randn(2, 2, 32, 64)
    torch.testing.assert_close(model.decode_indices(model.encode(x)), model(x)["recon"])


def test_reconstruction_gradient_reaches_the_encoder_through_the_ste():
    model = make_tokenizer()
    x = torch.randn(2, 2, 32, 64)
    F.mse_loss(model(x)["recon"], x).backward()  # reconstruction only: no commitment path to the encoder
    for name in ("patch_embed.weight", "latent_tokens", "encoder.blocks.0.attn.qkv.weight", "to_latent.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, f"{name} should get gradient from the reconstruction loss"


def test_bad_input_shape_is_named():
    model = make_tokenizer()
    with pytest.raises(ValueError, match=r"expected \[B, 2, 32, 64\]"):
        model(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="not divisible by tokenizer.patch_size=8"):
        SpectrogramTokenizer(tiny_cfg(), (2, 30, 64))


def test_patchgan_gives_one_logit_per_patch():
    disc = PatchGANDiscriminator(2, DiscriminatorConfig(channels=8, num_layers=3))
    assert disc(torch.randn(2, 2, 256, 256)).shape == (2, 1, 30, 30), "pix2pix's 70x70 PatchGAN maps 256x256 to 30x30"
    disc2 = PatchGANDiscriminator(1, DiscriminatorConfig(channels=8, num_layers=2))
    assert disc2(torch.randn(3, 1, 64, 32)).shape == (3, 1, 14, 6)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_adaptive_weight_is_the_gradient_norm_ratio_and_clamped():
    out = torch.randn(4, 8, requires_grad=True)
    target = torch.randn(4, 8)
    rec = (out - target).pow(2).mean()
    g = -(3.0 * out).mean()
    expected = (2 * (out - target) / out.numel()).norm() / ((torch.full_like(out, 3.0 / out.numel())).norm() + 1e-4)
    w = adaptive_weight(rec, g, out, max_weight=1e4)
    assert w.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not w.requires_grad
    assert adaptive_weight(rec, g, out, max_weight=0.01).item() == pytest.approx(0.01)
    flat_g = (out * 0).sum()  # a discriminator with zero gradient must not give inf/nan
    w_flat = adaptive_weight(rec, flat_g, out, max_weight=1e4)
    assert torch.isfinite(w_flat) and w_flat.item() <= 1e4


def test_ema_follows_the_live_model_and_copies_buffers():
    live = make_tokenizer(dead_code_steps=1)
    ema = frozen_copy(live)
    assert all(not p.requires_grad for p in ema.parameters()) and not ema.training
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    live.quantizer.steps_unused.fill_(7)
    before = ema.patch_embed.weight.clone()
    ema_update(ema, live, decay=0.75)
    torch.testing.assert_close(ema.patch_embed.weight, before + 0.25)
    assert int(ema.quantizer.steps_unused[0]) == 7
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999


@pytest.mark.parametrize("patch_size, grid", [([4, 16], (8, 4)), ([16, 4], (2, 16)), (8, (4, 8))])
def test_rectangular_patches_round_trip(patch_size, grid):
    from mars_dist.models.tokenizer.vit import patchify, unpatchify

    model = make_tokenizer((2, 32, 64), patch_size=patch_size)
    assert model.grid_hw == grid
    x = torch.randn(3, 2, 32, 64)
    assert model(x)["recon"].shape == x.shape
    torch.testing.assert_close(unpatchify(patchify(x, patch_size), 2, grid, patch_size), x, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [[4], [4, 0], "16", [4.0, 8], True])
def test_bad_patch_size_is_named(bad):
    with pytest.raises(ValueError, match="tokenizer.patch_size"):
        make_tokenizer((2, 32, 64), patch_size=bad)


def test_sincos_positions_put_patch_and_latent_grids_in_one_frame():
    from mars_dist.models.tokenizer.vit import sincos_2d

    code = sincos_2d((4, 8), 32)
    assert code.shape == (32, 32)
    torch.testing.assert_close(code, sincos_2d((4, 8), 32))
    coarse, fine = sincos_2d((2, 4), 32), sincos_2d((4, 8), 32).view(4, 8, 32)
    # a coarse cell's code is nearest to the fine cells it covers
    for i in range(2):
        for j in range(4):
            dist_ij = (fine - coarse[i * 4 + j]).norm(dim=-1)
            r, c = divmod(int(dist_ij.argmin()), 8)
            assert (r // 2, c // 2) == (i, j)
    # patch grid 4x8 and latent grid 4x8 (last scale) get the same code in the encoder and decoder
    model = make_tokenizer((2, 32, 64), scales=[[1, 2], [2, 4], [4, 8]])
    # equal up to the N(0, 0.02) noise each starts with (difference std ~0.028; the code's is ~0.7)
    assert (model.enc_pos[0] - model.latent_tokens[0]).std() < 0.05 < model.enc_pos.std()
    assert (model.dec_pos[0] - model.dec_latent_pos[0]).std() < 0.05 < model.dec_pos.std()
    random = make_tokenizer((2, 32, 64), pos_init="random")
    assert random.enc_pos.std() < 0.05
    with pytest.raises(ValueError, match="tokenizer.pos_init='learned'"):
        make_tokenizer((2, 32, 64), pos_init="learned")


def test_regrid_averages_when_shrinking_copies_when_growing():
    from mars_dist.models.tokenizer.model import regrid

    tokens_BLD = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid, row-major
    torch.testing.assert_close(regrid(tokens_BLD, (4, 4), (4, 4)), tokens_BLD)
    down = regrid(tokens_BLD, (4, 4), (2, 2)).flatten()
    torch.testing.assert_close(down, torch.tensor([2.5, 4.5, 10.5, 12.5]))
    up = regrid(down.view(1, 4, 1), (2, 2), (4, 4)).view(4, 4)
    torch.testing.assert_close(up[:2, :2], torch.full((2, 2), 2.5))
    torch.testing.assert_close(up[2:, 2:], torch.full((2, 2), 12.5))
    mixed = regrid(tokens_BLD, (4, 4), (8, 2)).view(8, 2)  # grow along rows, shrink along columns
    torch.testing.assert_close(mixed[0], torch.tensor([0.5, 2.5]))
    torch.testing.assert_close(mixed[1], mixed[0])


@pytest.mark.parametrize("spatial_prior", [True, False])
def test_spatial_prior_makes_a_latent_cell_drive_the_patch_under_it_from_init(spatial_prior):
    """With the prior, changing one latent cell changes the output patch under it far more than the
    others before any training; without it, attention spreads the change evenly."""
    model = make_tokenizer((2, 32, 64), scales=[[1, 2], [2, 4], [4, 8]], spatial_prior=spatial_prior)
    fhat = torch.randn(1, 8, 4, 8)
    bumped = fhat.clone()
    bumped[0, :, 1, 2] += 3.0
    with torch.no_grad():
        diff_BCHW = (model.decode_fhat(bumped) - model.decode_fhat(fhat)).abs()
    per_patch = diff_BCHW.view(1, 2, 4, 8, 8, 8).permute(0, 2, 4, 1, 3, 5).reshape(4, 8, -1).mean(-1)
    ratio = float(per_patch[1, 2] / per_patch.median())
    if spatial_prior:
        assert ratio > 3.0, f"the patch under the changed latent should change most (ratio {ratio:.2f})"
    else:
        assert ratio < 3.0, f"without the prior no patch is singled out at init (ratio {ratio:.2f})"
