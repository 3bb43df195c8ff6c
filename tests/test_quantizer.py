"""Properties of the shared-codebook multi-scale residual quantizer (mars_dist.models.tokenizer.quantizer)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer, check_scales

RECT = [[1, 2], [2, 4], [4, 8]]


def make_quantizer(scales=RECT, **kw) -> MultiScaleQuantizer:
    torch.manual_seed(0)
    return MultiScaleQuantizer(64, 8, scales, **kw)


def multiscale_latents(n: int, hw=(4, 8), dim: int = 8) -> torch.Tensor:
    """Latents with energy at every scale (coarse structure + finer detail), like an encoder's."""
    g = torch.Generator().manual_seed(1)
    coarse = F.interpolate(torch.randn(n, dim, 1, 2, generator=g), size=hw, mode="bicubic")
    mid = F.interpolate(torch.randn(n, dim, 2, 4, generator=g), size=hw, mode="bicubic")
    return coarse + 0.5 * mid + 0.25 * torch.randn(n, dim, *hw, generator=g)


def fit(q: MultiScaleQuantizer, f: torch.Tensor, steps: int = 60) -> None:
    opt = torch.optim.Adam(q.parameters(), lr=3e-2)
    for _ in range(steps):
        _, loss, _ = q(f)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_one_codebook_parameter_serves_every_scale():
    q = make_quantizer()
    embeddings = [m for m in q.modules() if isinstance(m, nn.Embedding)]
    assert embeddings == [q.codebook], "expected exactly one codebook (nn.Embedding) in the quantizer"
    idx_list = q.encode(multiscale_latents(2))
    for si in range(len(q.scales)):
        q.zero_grad()
        q.scale_contribution(si, idx_list[si]).sum().backward()
        used = torch.unique(idx_list[si])
        grad_rows = q.codebook.weight.grad.abs().sum(dim=1)
        assert (grad_rows[used] > 0).all(), f"scale {si}: its codes should receive gradient in the shared codebook"
        assert grad_rows.count_nonzero() == used.numel(), f"scale {si}: only its own codes should receive gradient"


def test_reconstruction_error_decreases_as_scales_are_added():
    q = make_quantizer()
    f = multiscale_latents(64)
    fit(q, f)
    with torch.no_grad():
        idx_list = q.encode(f)
        errors = [(f - q.decode(idx_list[:k])).pow(2).mean().item() for k in range(1, len(q.scales) + 1)]
    energy = f.pow(2).mean().item()
    assert all(a > b for a, b in zip(errors, errors[1:])), f"error per number of scales should strictly decrease: {errors}"
    assert errors[-1] < 0.2 * energy, f"all scales should explain most of the latent: error {errors[-1]:.3f} vs energy {energy:.3f}"


@pytest.mark.parametrize("scales", [RECT, [[2, 1], [3, 2], [5, 3]], [[1, 1], [3, 5], [4, 8]]])
def test_rectangular_schedules_give_maps_of_each_scale_shape(scales):
    q = make_quantizer(scales)
    H, W = scales[-1]
    f = torch.randn(3, 8, H, W)
    idx_list = q.encode(f)
    assert [tuple(i.shape) for i in idx_list] == [(3, h, w) for h, w in scales]
    assert q.decode(idx_list).shape == (3, 8, H, W)
    L = sum(h * w for h, w in scales[1:])
    assert q.teacher_forcing_inputs(idx_list).shape == (3, L, 8)


def test_stepwise_next_scale_input_reproduces_teacher_forcing_and_decode():
    q = make_quantizer()
    f = multiscale_latents(4)
    fit(q, f, steps=5)
    q.eval()
    idx_list = q.encode(f)
    fhat, inputs = None, []
    for si, idx in enumerate(idx_list):
        fhat, nxt = q.next_scale_input(si, fhat, idx)
        if si < len(idx_list) - 1:
            assert nxt.shape[-2:] == tuple(q.scales[si + 1])
            inputs.append(nxt.flatten(2).transpose(1, 2))
        else:
            assert nxt is None
    torch.testing.assert_close(torch.cat(inputs, dim=1), q.teacher_forcing_inputs(idx_list))
    torch.testing.assert_close(fhat, q.decode(idx_list))
    fhat_forward, _, _ = q(f)  # eval mode: no dropout, the same greedy path as encode
    torch.testing.assert_close(fhat_forward, fhat)


def test_straight_through_estimator_passes_gradient_to_the_input():
    q = make_quantizer()
    f = multiscale_latents(2).requires_grad_(True)
    fhat, vq_loss, _ = q(f)
    upstream = torch.randn_like(fhat)
    grad_f = torch.autograd.grad((fhat * upstream).sum(), f, retain_graph=True)[0]
    torch.testing.assert_close(grad_f, upstream, msg="STE: d fhat / d f should be the identity")
    commit_grad = torch.autograd.grad(vq_loss, f)[0]
    assert commit_grad.abs().sum() > 0, "the commitment term should pull the encoder output towards the codes"


def test_quantizer_dropout_keeps_a_prefix_of_scales_per_sample():
    q = make_quantizer(quant_dropout=1.0)
    f = multiscale_latents(32)
    q.train()
    torch.manual_seed(3)
    fhat, _, _ = q(f)
    q.eval()
    idx_list = q.encode(f)
    prefixes = torch.stack([q.decode(idx_list[:k]) for k in range(1, 4)])  # [K, B, C, h, w]
    dist_KB = (prefixes - fhat.detach().unsqueeze(0)).abs().flatten(2).amax(dim=2)
    assert (dist_KB.min(dim=0).values < 1e-5).all(), "every sample's fhat should equal the decode of a prefix of its scales"
    kept = dist_KB.argmin(dim=0) + 1
    assert len(set(kept.tolist())) >= 2, f"dropout should vary the prefix length over a batch, got {kept.tolist()}"
    fhat_eval, _, _ = q(f)
    torch.testing.assert_close(fhat_eval, prefixes[-1], msg="no dropout in eval mode")


def test_dead_code_restart_revives_unused_codes():
    q = make_quantizer(dead_code_steps=2, restart_buffer_size=256)
    f = multiscale_latents(16).abs() + 0.1  # every latent lies in the positive orthant
    with torch.no_grad():
        q.codebook.weight[:48] = -q.codebook.weight[:48].abs() - 0.1  # 48 codes point away from all data
    q.train()
    replaced = []
    for _ in range(3):
        q(f)
        replaced.append(q.restart_dead_codes())
    assert replaced[0] == 0, "no code is dead after one step of a 2-step threshold"
    assert sum(replaced) >= 48, f"the 48 unreachable codes should have been replaced, got {replaced}"
    assert (q.codebook.weight[:48] > 0).float().mean() > 0.9, "replacements should come from (positive) recent residuals"
    with torch.no_grad():
        hits = torch.bincount(torch.cat([i.flatten() for i in q.encode(f)]), minlength=64)
    assert hits[:48].count_nonzero() > 0, "revived codes should be picked by the lookup again"


def test_restart_is_off_by_default_and_counts_nothing():
    q = make_quantizer()
    q.train()
    q(multiscale_latents(4))
    assert q.restart_dead_codes() == 0
    assert int(q.recent_filled) == 0


def test_bad_schedules_and_inputs_are_named():
    with pytest.raises(ValueError, match=r"scales\[1\]"):
        check_scales([[1, 1], [0, 2], [4, 4]])
    with pytest.raises(ValueError, match="larger than the last"):
        check_scales([[1, 1], [8, 8], [4, 4]])
    q = make_quantizer()
    with pytest.raises(ValueError, match=r"expected \[B, 8, 4, 8\]"):
        q(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="token map of scale 1"):
        q.decode([torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 4, 2, dtype=torch.long)])


def _restart_on_rank_data():
    """Each rank sees different data; returns (replaced, codebook as nested lists) after one restart."""
    import torch.distributed as dist

    q = make_quantizer(dead_code_steps=1, restart_buffer_size=64)  # same init on every rank (seeded)
    torch.manual_seed(100 + dist.get_rank())
    q.train()
    q(multiscale_latents(4) + dist.get_rank())
    return q.restart_dead_codes(), q.codebook.weight.detach().tolist()


@pytest.mark.distributed
def test_dead_code_restart_edits_the_codebook_identically_on_every_rank():
    from tests.fixtures.dist import run_distributed

    (n0, w0), (n1, w1) = run_distributed(_restart_on_rank_data, 2)
    assert n0 == n1 > 0, f"ranks should agree on which codes are dead: {n0} vs {n1}"
    assert w0 == w1, "after a restart the replicas' codebooks must stay identical"
