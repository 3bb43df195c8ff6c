"""The Generator interface: what sampling, evaluation and benchmarks need from any generator family.

A generator produces the tokenizer's token maps (one LongTensor [B, h_k, w_k] per scale of the
tokenizer's schedule) for a batch of label sets; the tokenizer turns them into a CMX tensor and the
audio front-end into a waveform. Those last two stages are the same for every family and live
here, each on its own so they can be timed apart.
"""
from __future__ import annotations

import argparse
import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional, Sequence

import torch

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.errors import UserValueError
from mars_dist.generation.notes import LabelSet, labels_to_tensors
from mars_dist.models.int8 import quantize_linears


@dataclass
class SamplingSettings:
    cfg_scale: float = 3.0   # guidance at the last step/scale (ramped linearly from 1; 1 = none)
    top_k: int = 0           # keep the k most likely codes (0 = all)
    top_p: float = 0.95      # nucleus mass (0 or 1 = off)
    temperature: float = 1.0  # 0 = greedy
    iterations: Optional[int] = None  # iterative decoders (MaskGIT): passes per note (None = the export's)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling flags every command that generates notes takes (mars_dist.sample, mars_dist.evaluate,
    the quick report), with SamplingSettings' defaults; read them back with `sampling_settings(args)`."""
    d = SamplingSettings()
    group = parser.add_argument_group("sampling")
    group.add_argument("--cfg", type=float, default=d.cfg_scale,
                       help="guidance at the last step/scale (ramped linearly from 1; 1 = none)")
    group.add_argument("--top-k", type=int, default=d.top_k, help="keep the k most likely codes (0 = all)")
    group.add_argument("--top-p", type=float, default=d.top_p, help="nucleus mass (0 or 1 = off)")
    group.add_argument("--temperature", type=float, default=d.temperature, help="softmax temperature (0 = greedy)")
    group.add_argument("--iterations", type=int, default=d.iterations,
                       help="iterative decoders (MaskGIT): passes per note (default: the export's, 16)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the transformer (the first batch compiles, tens of seconds on a CPU; "
                            "pays off from a few dozen notes)")
    group.add_argument("--int8", action="store_true",
                       help="CPU: int8 weights and activations in the transformer's and the tokenizer decoder's "
                            "matmuls (~2x the bf16 GEMM rate; a measured, small change of the notes: docs/ar.md); "
                            "needs a C++ compiler, like --compile")


def sampling_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SamplingSettings:
    """SamplingSettings from the flags of `add_sampling_arguments`; a bad value is the parser's error (exit 2)."""
    problems = [(args.top_k < 0, f"--top-k {args.top_k}: must be >= 0"),
                (not 0.0 <= args.top_p <= 1.0, f"--top-p {args.top_p}: must be in [0, 1]"),
                (args.temperature < 0, f"--temperature {args.temperature}: must be >= 0"),
                (args.iterations is not None and args.iterations < 1, f"--iterations {args.iterations}: must be >= 1")]
    for bad, message in problems:
        if bad:
            parser.error(message)
    return SamplingSettings(cfg_scale=args.cfg, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                            iterations=args.iterations)


@dataclass
class GeneratedBatch:
    label_sets: List[LabelSet]
    idx_list: List[torch.Tensor]  # token maps per scale, [B, h_k, w_k]
    cmx_BCHW: torch.Tensor        # float32, clamped to the log scale's [-1, 1]
    wave_BN: torch.Tensor         # Griffin-Lim audio


class Generator(ABC):
    """A trained generator over one tokenizer's token maps, on one device.

    `dtype=torch.bfloat16` is for the subclass's model weights (at batch 1 generation is bound by
    reading weights, so half the bytes is most of the gain); the tokenizer's decoder then runs
    under bf16 autocast, while code lookups and Griffin-Lim stay in float32.
    """

    task: str = ""  # the task whose exports this generator loads (set by register_generator)

    def __init__(self, tokenizer: torch.nn.Module, frontend: AudioFrontend, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        if tuple(tokenizer.in_shape) != tuple(frontend.cmx_shape):
            raise UserValueError(f"the tokenizer expects CMX {tuple(tokenizer.in_shape)}, the audio config gives "
                                 f"{tuple(frontend.cmx_shape)}")
        self.tokenizer = tokenizer.to(device).eval()
        self.frontend = frontend
        self.device, self.dtype = device, dtype

    @abstractmethod
    def tokens(self, labels: Mapping[str, torch.Tensor], batch: int, settings: SamplingSettings,
               generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        """Token maps for `batch` notes with these labels (dict of LongTensors [batch]; missing = any)."""

    def edit(self, idx_list: Sequence[torch.Tensor], keep_masks: Sequence[torch.Tensor],
             labels: Mapping[str, torch.Tensor], settings: SamplingSettings,
             generator: Optional[torch.Generator]) -> List[torch.Tensor]:
        """Regenerates the tokens where `keep_masks` (bool, one [B, h_k, w_k] per scale) is False and
        keeps the others; families that cannot condition on kept tokens say so."""
        raise UserValueError(f"the {self.task or type(self).__name__} generator cannot edit notes")

    def sequential_steps(self, settings: SamplingSettings) -> int:
        """Forward passes per note that must run one after the other (0 = the family does not say)."""
        return 0

    def compile(self) -> "Generator":
        """Runs the generator's transformer code through torch.compile from the next call on (the
        first call compiles). Same distribution; tokens equal up to float rounding. Default: nothing."""
        return self

    def int8(self) -> "Generator":
        """Int8 matmuls (models/int8.py) in the decode stage, and in subclasses their transformer, in
        place, for CPU inference. The decoder quantized is the generator's own copy (sharing the
        encoder and quantizer, which are not changed): whoever else holds the tokenizer, such as the
        evaluation's reconstructions, keeps decoding in float."""
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

    def generate(self, label_sets: Sequence[LabelSet], settings: SamplingSettings, generator: torch.Generator,
                 batch_size: int) -> Iterator[GeneratedBatch]:
        """Notes for `label_sets`, `batch_size` at a time, drawing from `generator` (see `rng`)."""
        if batch_size < 1:
            raise UserValueError(f"batch size {batch_size}: must be >= 1")
        for start in range(0, len(label_sets), batch_size):
            chunk = list(label_sets[start:start + batch_size])
            idx_list = self.tokens(labels_to_tensors(chunk, self.device), len(chunk), settings, generator)
            cmx_BCHW = self.spectrogram(idx_list)
            yield GeneratedBatch(chunk, idx_list, cmx_BCHW, self.audio(cmx_BCHW))


def check_cpp_compiler(flag: str) -> None:
    """On a CPU, torch.compile builds C++: without a compiler it would fail at the first batch, deep
    inside inductor. Asks inductor's own compiler lookup now and says what to do."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # inductor's InvalidCxxCompiler, or whatever its lookup raises
        raise UserValueError(f"{flag} on a CPU needs a C++ compiler (g++ or clang++ on PATH, or set CXX): "
                             f"{type(exc).__name__}: {exc}; or leave {flag} out") from exc
