"""Training task of the next-scale AR: cross-entropy of each scale's token map given the coarser ones.

The tokenizer is frozen and loaded from an exported checkpoint (`ar.tokenizer_path`); it turns each
batch's CMX tensors into token maps (the targets) and teacher-forcing inputs (the AR's inputs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.engine import schedule as lr_schedule
from mars_dist.engine.task import Models, ModelSpec, Task
from mars_dist.models.generators.next_scale.model import NextScaleAR
from mars_dist.models.generators.conditioning import LABEL_CLASSES
from mars_dist.models.full_params import full_tensors


def adamw_factory(optim_cfg):
    """AdamW with weight decay on matrices only (biases, gains and per-head scales are not decayed)."""

    def build(params) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim_cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas))

    return build


def _check_tokenizer_path(path: str) -> Path:
    if not path:
        raise ValueError("ar.tokenizer_path is empty: point it at an exported tokenizer folder (python -m mars_dist.export)")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"ar.tokenizer_path={path!r}: no such folder (expected model.safetensors + config.json)")
    return Path(path)


def tokenizer_geometry(path: str) -> Tuple[List[Tuple[int, int]], int, int]:
    """(scales, codebook_size, codebook_dim) from an exported tokenizer's config.json, without its weights."""
    from mars_dist.export import CONFIG_JSON

    config_path = _check_tokenizer_path(path) / CONFIG_JSON
    if not config_path.is_file():
        raise FileNotFoundError(f"ar.tokenizer_path={path!r}: no {CONFIG_JSON}; not a finished export")
    tok = json.loads(config_path.read_text())["run_config"]["tokenizer"]
    return [tuple(s) for s in tok["scales"]], int(tok["codebook_size"]), int(tok["codebook_dim"])


def load_frozen_tokenizer(path: str, cmx_shape) -> nn.Module:
    """The exported tokenizer, checked against the data's CMX shape."""
    from mars_dist.export import load_exported

    tokenizer, _ = load_exported(_check_tokenizer_path(path))
    if not hasattr(tokenizer, "quantizer"):
        raise ValueError(f"ar.tokenizer_path={path!r} holds a {type(tokenizer).__name__}, not a SpectrogramTokenizer")
    if cmx_shape is not None and tuple(tokenizer.in_shape) != tuple(cmx_shape):
        raise ValueError(
            f"ar.tokenizer_path={path!r} was trained on CMX {tuple(tokenizer.in_shape)}, the shards hold {tuple(cmx_shape)}"
        )
    return tokenizer


def build_ar(ar_cfg, tokenizer: nn.Module) -> NextScaleAR:
    q = tokenizer.quantizer
    return NextScaleAR(ar_cfg, q.scales, q.codebook_size, q.codebook_dim)


class ARTask(Task):
    """models: "ar" (trained) and "tokenizer" (frozen)."""

    def __init__(self, cfg: Any, data_info: Dict[str, Any]):
        super().__init__(cfg, data_info)
        self._shape_model: Optional[NextScaleAR] = None

    def _geometry(self) -> NextScaleAR:
        """A weightless (meta-device) AR of the right shape: token counts and FLOPs before build_models."""
        if self._shape_model is None:
            scales, vocab, dim = tokenizer_geometry(self.cfg.ar.tokenizer_path)
            with torch.device("meta"):
                self._shape_model = NextScaleAR(self.cfg.ar, scales, vocab, dim)
        return self._shape_model

    def build_models(self) -> Dict[str, ModelSpec]:
        tokenizer = load_frozen_tokenizer(self.cfg.ar.tokenizer_path, self.data_info.get("cmx_shape"))
        ar = build_ar(self.cfg.ar, tokenizer)
        return {
            "ar": ModelSpec(ar, optimizer=adamw_factory(self.cfg.optim), lr_multiplier=lr_schedule.from_config(self.cfg)),
            "tokenizer": ModelSpec(tokenizer, optimizer=None),
        }

    @staticmethod
    def labels(batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        return {name: batch[name] for name in LABEL_CLASSES if name in batch}

    def micro_step(self, batch: Dict[str, Any], models: Models, step: int, backward) -> Dict[str, torch.Tensor]:
        tokenizer = models.unwrap("tokenizer")
        with torch.no_grad():
            idx_list = tokenizer.encode(batch["cmx"])
            x_BLC = tokenizer.quantizer.teacher_forcing_inputs(idx_list)
        target_BL = torch.cat([idx.flatten(1) for idx in idx_list], dim=1)
        logits_BLV = models["ar"](self.labels(batch), x_BLC)
        B, L, V = logits_BLV.shape
        ce_BL = F.cross_entropy(logits_BLV.float().view(B * L, V), target_BL.view(B * L), reduction="none").view(B, L)
        loss = ce_BL.mean()
        backward("ar", loss)
        with torch.no_grad():
            correct_BL = (logits_BLV.argmax(dim=-1) == target_BL).float()
            logs = {"loss": loss.detach(), "acc": correct_BL.mean()}
            geometry = self._geometry()
            for k, (s, n) in enumerate(zip(geometry.scale_starts, geometry.scale_lengths)):
                logs[f"loss/scale{k}"] = ce_BL[:, s:s + n].mean()
                logs[f"acc/scale{k}"] = correct_BL[:, s:s + n].mean()
        return logs

    def flops_per_sample(self) -> float:
        """The AR's forward + backward matmul FLOPs (the frozen tokenizer's encode is not counted)."""
        return self._geometry().flops_per_sample(training=True)

    def tokens_per_sample(self) -> int:
        return self._geometry().num_tokens

    @torch.no_grad()
    def log_media(self, step: int, models: Models, batch: Dict[str, Any], out_dir) -> Dict[str, Any]:
        """Generates notes for the first `ar.media_notes` label sets of `batch` (fixed seed) -> wav + PNG.

        The AR may be sharded (FSDP2, ZeRO-3): every rank gathers the full weights (collective),
        and rank 0 generates with a plain copy.
        """
        from mars_dist.sample import NoteGenerator, SamplingSettings, generate_notes

        ar = models.unwrap("ar")
        named = list(ar.named_parameters())
        with full_tensors([p for _, p in named]) as full:
            state = {name: t.detach().clone() for (name, _), t in zip(named, full)}
        if out_dir is None:
            return {}
        tokenizer = models.unwrap("tokenizer")
        sampler = build_ar(self.cfg.ar, tokenizer)
        sampler.load_state_dict(state)
        n = min(self.cfg.ar.media_notes, len(batch["cmx"]))
        label_sets = [{name: int(batch[name][i]) for name in LABEL_CLASSES if name in batch} for i in range(n)]
        device = next(tokenizer.parameters()).device
        gen = NoteGenerator(sampler, tokenizer, AudioFrontend(self.cfg.audio), device)
        settings = SamplingSettings(cfg_scale=self.cfg.ar.media_cfg_scale, top_p=self.cfg.ar.media_top_p)
        wavs = generate_notes(gen, label_sets, Path(out_dir) / f"ar-step{step:08d}", settings, seed=self.cfg.seed, batch_size=n)
        import wandb

        sample_rate = self.cfg.audio.stft.sample_rate
        items: Dict[str, Any] = {}
        for i, wav in enumerate(wavs):
            items[f"media/generated_{i}"] = wandb.Audio(str(wav), sample_rate=sample_rate, caption=f"{wav.stem} (step {step})")
            items[f"media/generated_{i}_spectrogram"] = wandb.Image(str(wav.with_suffix(".png")), caption=wav.stem)
        return items
