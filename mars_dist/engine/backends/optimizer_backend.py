"""What the debug and Accelerate backends share: a plain torch optimizer per trained model, the
backward of an accumulated micro-batch, the clipped step, and gradient sync only on the last
micro-batch (DDP's no_sync, FSDP2's set_requires_gradient_sync). DeepSpeed steps through its
engines instead (deepspeed_backend.py)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mars_dist.engine.backend import Backend, trained_entry
from mars_dist.engine.backends._common import total_grad_norm


class OptimizerBackend(Backend):
    """`self._trained[name]` is the model's torch optimizer."""

    @contextlib.contextmanager
    def micro_step_context(self, sync: bool) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for name in self._trained:
                wrapped = self._wrapped[name]
                if hasattr(wrapped, "no_sync"):
                    if not sync:
                        stack.enter_context(wrapped.no_sync())
                elif hasattr(wrapped, "set_requires_gradient_sync"):
                    wrapped.set_requires_gradient_sync(sync)
            yield

    def _optimizer(self, name: str) -> torch.optim.Optimizer:
        return trained_entry(self._trained, name)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        self._optimizer(name)
        (loss / self.grad_accum).backward()

    def step(self, name: str) -> float:
        optimizer = self._optimizer(name)
        norm = total_grad_norm(self._plain[name].parameters(), self.cfg.optim.grad_clip)
        schedule = self._schedules[name]
        schedule.apply(optimizer.param_groups)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.advance()
        return norm

    def zero_grad(self, name: str) -> None:
        self._optimizer(name).zero_grad(set_to_none=True)
