"""The Generator: what sampling, editing, evaluation and benchmarks need from any generator family.

A generator produces the tokenizer's token maps (one LongTensor [B, h_k, w_k] per scale of the
tokenizer's schedule) for a batch of label sets; the tokenizer turns them into a CMX tensor and the
audio front-end into a waveform. How the token maps are drawn is the family's (its spec,
mars_dist/models/generators/family.py, with its own sampling options); the last two stages are the
same for every family and live here, each on its own so they can be timed apart.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional, Sequence

import torch
from torch import nn

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.errors import UserValueError
from mars_dist.generation.notes import LabelSet, labels_to_tensors
from mars_dist.models.generators.family import GeneratorFamily
from mars_dist.models.generators.options import SamplingOptions
from mars_dist.models.int8 import quantize_linears


@dataclass
class GeneratedBatch:
    label_sets: List[LabelSet]
    idx_list: List[torch.Tensor]  # token maps per scale, [B, h_k, w_k]
    cmx_BCHW: torch.Tensor        # float32, clamped to the log scale's [-1, 1]
    wave_BN: torch.Tensor         # Griffin-Lim audio


class Generator(ABC):
    """Anything that draws the tokenizer's token maps for label sets, on one device: a family's
    trained model (FamilyGenerator), or a deliberately bad generator of the evaluation benchmark.

    `dtype=torch.bfloat16` is for the model's weights (at batch 1 generation is bound by reading
    weights, so half the bytes is most of the gain); the tokenizer's decoder then runs under bf16
    autocast, while code lookups and Griffin-Lim stay in float32.
    """

    name: str = "generator"

    def __init__(self, tokenizer: nn.Module, frontend: AudioFrontend, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        if tuple(tokenizer.in_shape) != tuple(frontend.cmx_shape):
            raise UserValueError(f"the tokenizer expects CMX {tuple(tokenizer.in_shape)}, the audio config gives "
                                 f"{tuple(frontend.cmx_shape)}")
        self.tokenizer = tokenizer.to(device).eval()
        self.frontend = frontend
        self.device, self.dtype = device, dtype

    def options(self, **values: Any) -> SamplingOptions:
        """The sampling options this generator takes (`values` overriding the defaults)."""
        return SamplingOptions(**values)

    @abstractmethod
    def tokens(self, labels: Mapping[str, torch.Tensor], batch: int, options: SamplingOptions,
               generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        """Token maps for `batch` notes with these labels (dict of LongTensors [batch]; missing = any)."""

    def edit(self, idx_list: Sequence[torch.Tensor], keep_masks: Sequence[torch.Tensor],
             labels: Mapping[str, torch.Tensor], options: SamplingOptions,
             generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        """Regenerates the tokens where `keep_masks` (bool, one [B, h_k, w_k] per scale) is False and
        keeps the others; a generator that cannot condition on kept tokens says so."""
        raise UserValueError(f"the {self.name} generator cannot edit notes")

    def sequential_steps(self, options: SamplingOptions) -> int:
        """Forward passes per note that must run one after the other (0 = it does not say)."""
        return 0

    def int8(self) -> "Generator":
        """Int8 matmuls (models/int8.py) in the decode stage, in place, for CPU inference. The decoder
        quantized is the generator's own copy (sharing the encoder and quantizer, which are not
        changed): whoever else holds the tokenizer, such as the evaluation's reconstructions, keeps
        decoding in float."""
        if self.device.type != "cpu":
            raise UserValueError(f"--int8: int8 matmuls are for CPUs (device {self.device}); on a GPU use bf16")
        check_cpp_compiler("--int8")
        shared = {id(self.tokenizer.encoder): self.tokenizer.encoder, id(self.tokenizer.quantizer): self.tokenizer.quantizer}
        tokenizer = copy.deepcopy(self.tokenizer, memo=shared)
        quantize_linears(tokenizer.decoder)
        self.tokenizer = tokenizer
        return self

    @torch.no_grad()
    def spectrogram(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token maps -> CMX tensor [B, C, H, W] (float32, clamped to the log scale's [-1, 1])."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.tokenizer.decode_indices(idx_list).float().clamp(-1.0, 1.0)

    def audio(self, cmx_BCHW: torch.Tensor) -> torch.Tensor:
        """CMX -> waveform [B, num_samples] by Griffin-Lim (audio.griffin_lim settings)."""
        return self.frontend.cmx_to_wave(cmx_BCHW)

    def rng(self, seed: int) -> torch.Generator:
        """The seeded random stream `generate` draws from (one per run makes a run reproducible)."""
        return torch.Generator(self.device).manual_seed(seed)

    def generate(self, label_sets: Sequence[LabelSet], options: SamplingOptions, generator: torch.Generator,
                 batch_size: int) -> Iterator[GeneratedBatch]:
        """Notes for `label_sets`, `batch_size` at a time, drawing from `generator` (see `rng`)."""
        if batch_size < 1:
            raise UserValueError(f"batch size {batch_size}: must be >= 1")
        for start in range(0, len(label_sets), batch_size):
            chunk = list(label_sets[start:start + batch_size])
            idx_list = self.tokens(labels_to_tensors(chunk, self.device), len(chunk), options, generator)
            cmx_BCHW = self.spectrogram(idx_list)
            yield GeneratedBatch(chunk, idx_list, cmx_BCHW, self.audio(cmx_BCHW))


class FamilyGenerator(Generator):
    """A generator family's trained model: sampling, editing, accounting and speed-ups as its spec says."""

    def __init__(self, family: GeneratorFamily, model: nn.Module, tokenizer: nn.Module, frontend: AudioFrontend,
                 device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(tokenizer, frontend, device, dtype)
        self.family = family
        self.model = model.to(device=device, dtype=dtype).eval()

    @property
    def name(self) -> str:
        """The family's name as configs and exports write it."""
        return self.family.key

    def options(self, **values: Any) -> SamplingOptions:
        return self.family.default_options(**values)

    def tokens(self, labels: Mapping[str, torch.Tensor], batch: int, options: SamplingOptions,
               generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        return self.family.sample(self.model, self.tokenizer.quantizer, labels, batch, options, generator)

    def edit(self, idx_list: Sequence[torch.Tensor], keep_masks: Sequence[torch.Tensor],
             labels: Mapping[str, torch.Tensor], options: SamplingOptions,
             generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        if not self.family.can_edit:
            return super().edit(idx_list, keep_masks, labels, options, generator)
        scales = self.tokenizer.quantizer.scales
        shapes = [tuple(t.shape[1:]) for t in idx_list]
        if shapes != [tuple(s) for s in scales] or [tuple(m.shape) for m in keep_masks] != [tuple(t.shape) for t in idx_list]:
            raise UserValueError(f"edit: token maps {[tuple(t.shape) for t in idx_list]} and keep masks "
                                 f"{[tuple(m.shape) for m in keep_masks]} must both be [B, h, w] for the scales {scales}")
        return self.family.sample(self.model, self.tokenizer.quantizer, labels, idx_list[0].shape[0], options, generator,
                                  known=[t.to(self.device) for t in idx_list],
                                  keep=[m.to(self.device, torch.bool) for m in keep_masks])

    def sequential_steps(self, options: SamplingOptions) -> int:
        return self.family.sequential_steps(self.model, options)

    def compile(self) -> "FamilyGenerator":
        """Runs the model's tensor code through torch.compile from the next call on (the first call
        compiles). Same distribution; tokens equal up to float rounding."""
        if self.device.type == "cpu":
            check_cpp_compiler("--compile")
        self.family.compile(self.model)
        return self

    def int8(self) -> "FamilyGenerator":
        super().int8()
        self.family.quantize_int8(self.model)
        return self


def check_cpp_compiler(flag: str) -> None:
    """On a CPU, torch.compile builds C++: without a compiler it would fail at the first batch, deep
    inside inductor. Asks inductor's own compiler lookup now and says what to do."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # inductor's InvalidCxxCompiler, or whatever its lookup raises
        raise UserValueError(f"{flag} on a CPU needs a C++ compiler (g++ or clang++ on PATH, or set CXX): "
                             f"{type(exc).__name__}: {exc}; or leave {flag} out") from exc
