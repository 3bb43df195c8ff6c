"""PatchGAN discriminator, hinge losses and the adaptive generator weight of VQGAN-style training.

GroupNorm instead of pix2pix's BatchNorm: a per-sample normalisation keeps the discriminator
independent of the micro-batch size and of other ranks (no SyncBN, no running statistics to
checkpoint), so real and fake can go through it as one concatenated batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.models.tokenizer.config import DiscriminatorConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class PatchGANDiscriminator(nn.Module):
    """C-channel image -> [B, 1, h', w'] realness logits, one per receptive-field patch."""

    def __init__(self, in_channels: int, cfg: DiscriminatorConfig):
        super().__init__()
        if cfg.num_layers < 1:
            raise ValueError(f"tokenizer.disc.num_layers={cfg.num_layers}: expected >= 1")
        ch = cfg.channels
        layers = [nn.Conv2d(in_channels, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, cfg.num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < cfg.num_layers else 1
            layers += [nn.Conv2d(ch * prev, ch * mult, 4, stride=stride, padding=1, bias=False), _norm(ch * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(ch * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(x_BCHW)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_output: torch.Tensor, max_weight: float) -> torch.Tensor:
    """|d rec / d out| / |d g / d out| at the decoder's last layer OUTPUT activation `out`, clamped to [0, max].

    VQGAN takes these norms at the last layer's weight. We take them at its output activation:
    autograd.grad w.r.t. an activation needs no parameter gradient, so the weight does not depend
    on how a backend holds the decoder's weights (DDP replica, FSDP2 DTensor, ZeRO-3 placeholder).
    The output of the final linear (pixel patches) and the reconstruction differ only by a
    permutation (unpatchify), so `last_output` may be the reconstruction itself: same norms.
    Returns a detached scalar (it is a loss weight, not a path for gradients).
    """
    rec_grad, g_grad = _output_grads(rec_loss, g_loss, last_output)
    return _weight_of(rec_grad, g_grad, max_weight)


def _output_grads(rec_loss: torch.Tensor, g_loss: torch.Tensor, out: torch.Tensor):
    rec_grad = torch.autograd.grad(rec_loss, out, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, out, retain_graph=True)[0]
    return rec_grad, g_grad


def _weight_of(rec_grad: torch.Tensor, g_grad: torch.Tensor, max_weight: float) -> torch.Tensor:
    weight = rec_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


@dataclass
class GeneratorAdversarial:
    """The generator's adversarial term, evaluated off the training graph (all detached)."""

    g_loss: torch.Tensor  # hinge_g of the reconstruction (scalar, for logging)
    weight: torch.Tensor  # the adaptive weight w (scalar)
    grad_out: torch.Tensor  # d(lambda_adv * w * g_loss) / d out, shaped like `out`


def generator_adversarial(
    disc: nn.Module, out: torch.Tensor, rec_loss_of: Callable[[torch.Tensor], torch.Tensor], lambda_adv: float, max_weight: float
) -> GeneratorAdversarial:
    """Hinge generator loss, adaptive weight and the gradient the generator must receive at `out`.

    Everything is computed on a detached copy y of the reconstruction, with `disc` a plain module
    that no backend wraps: the discriminator is not trained by the generator's loss, so the
    generator only needs d(g_loss)/dy, and autograd.grad here touches no parameter a backend owns
    (the reason: autograd.grad inside a ZeRO engine's graph fires DeepSpeed's gradient-reduction
    hooks and crashes; a ZeRO-3 or FSDP2 discriminator cannot even be called outside its wrapper).
    `rec_loss_of(y)` is the lambda-weighted reconstruction loss the adaptive weight balances against.
    Pass `grad_out` to `gradient_into` to add the term to the generator's loss.
    """
    y = out.detach().requires_grad_()
    g_loss = hinge_g_loss(disc(y).float())
    rec_grad, g_grad = _output_grads(rec_loss_of(y), g_loss, y)
    weight = _weight_of(rec_grad, g_grad, max_weight)
    return GeneratorAdversarial(g_loss.detach(), weight, (lambda_adv * weight * g_grad.float()).detach())


def gradient_into(out: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """A scalar whose value is exactly 0 and whose gradient w.r.t. `out` is `grad_out`.

    Added to a loss, it back-propagates `grad_out` from `out` into whatever produced it, as if the
    loss that `grad_out` came from had been computed on `out` itself.
    """
    return ((out.float() - out.detach().float()) * grad_out).sum()
