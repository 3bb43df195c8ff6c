"""Accelerate backend: DDP or FSDP2 over the process group Accelerate sets up, DCP checkpoints.

Accelerate owns the launch environment (accelerate launch / torchrun variables, device choice,
autocast); the wrapping is done here so that FSDP2 (`fully_shard`) also works over gloo on the CPU,
which Accelerate's own FSDP plugin does not support. Checkpoints go through
torch.distributed.checkpoint (DCP) with fully-qualified parameter names, so a checkpoint written by
N processes (DDP or FSDP) loads on M processes with either strategy.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, Iterator, List

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_state_dict,
)

from mars_dist.engine import distributed
from mars_dist.engine.backend import Backend
from mars_dist.engine.backends._common import (
    BACKEND_STATE_FILE,
    LrSchedule,
    TorchDistributedCollectives,
    check_backend_state,
    freeze,
    resolve_autocast_dtype,
    resolve_device,
    total_grad_norm,
    trained_entry,
    write_json_atomic,
)
from mars_dist.engine.task import ModelSpec, Models

STRATEGIES = ("ddp", "fsdp")
_FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _fsdp_units(module: nn.Module) -> List[nn.Module]:
    """Submodules that get their own FSDP unit: the items of every nn.ModuleList (transformer blocks).

    Sharding per block lets FSDP free a block's gathered weights right after using it; the root is
    sharded last and takes whatever parameters remain (embeddings, heads).
    """
    units = []
    for child in module.modules():
        if isinstance(child, nn.ModuleList):
            units.extend(item for item in child if any(p.requires_grad for p in item.parameters()))
    return units


class AccelerateBackend(TorchDistributedCollectives, Backend):
    name = "accelerate"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        from accelerate import Accelerator, DistributedDataParallelKwargs

        acc_cfg = cfg.engine.accelerate
        if acc_cfg.strategy not in STRATEGIES:
            raise ValueError(f"engine.accelerate.strategy={acc_cfg.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        probe_device = resolve_device(cfg.engine.device, 0)
        on_gpu = probe_device.type == "cuda"
        # Accelerate autocasts to bf16 on the CPU as on the GPU; FSDP2 additionally keeps bf16 params on GPU.
        mixed_precision = "bf16" if resolve_autocast_dtype(cfg.engine.mixed_precision, probe_device) else "no"
        self.on_gpu = on_gpu
        # The group is joined here (gloo on CPU, nccl on GPU, engine.dist_timeout_s); Accelerate reuses it.
        distributed.init_distributed(resolve_device(cfg.engine.device, distributed.launcher_info().local_rank), cfg.engine.dist_timeout_s)
        # Without cpu=True on a CPU-only machine Accelerate silently starts N independent rank-0 copies.
        # find_unused_parameters: a model may hold parameters its forward never uses (the tokenizer's
        # shared phi convs outnumber the scales of a short schedule); plain DDP then fails at the
        # second step. The price is one autograd-graph walk per forward.
        self.accelerator = Accelerator(cpu=not on_gpu, mixed_precision=mixed_precision,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        if self.accelerator.num_processes != distributed.launcher_info().world_size:
            raise RuntimeError(
                f"Accelerate sees {self.accelerator.num_processes} processes, the launcher started "
                f"{distributed.launcher_info().world_size}: check the accelerate config (use configs/accelerate/*.yaml)"
            )
        self.strategy = acc_cfg.strategy
        self.mixed_precision = mixed_precision
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.local_rank = self.accelerator.local_process_index
        self.device = self.accelerator.device
        self._wrapped: Dict[str, nn.Module] = {}
        self._plain: Dict[str, nn.Module] = {}
        self._optimizers: Dict[str, torch.optim.Optimizer] = {}
        self._schedules: Dict[str, LrSchedule] = {}
        self._mesh = None

    # --- setup -------------------------------------------------------------------------------
    def prepare(self, specs: Dict[str, ModelSpec], micro_batch: int, grad_accum: int) -> Models:
        self.micro_batch, self.grad_accum = micro_batch, grad_accum
        for name, spec in specs.items():
            if not spec.trained:
                module = freeze(spec.module, self.device)
                self._wrapped[name] = self._plain[name] = module
                continue
            module = spec.module.to(self.device)
            wrapped = self._wrap(module)
            self._wrapped[name], self._plain[name] = wrapped, module
            # FSDP2 replaces parameters by DTensor shards: the optimizer must see those.
            optimizer = spec.optimizer(module.parameters())
            self._optimizers[name] = optimizer
            self._schedules[name] = LrSchedule.for_optimizer(optimizer, spec.lr_multiplier)
        return Models(dict(self._wrapped), dict(self._plain))

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1 and self.strategy == "ddp":
            return module
        if self.strategy == "ddp":
            return self.accelerator.prepare_model(module)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        if self._mesh is None:
            self._mesh = init_device_mesh(self.device.type, (self.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.mixed_precision == "bf16" and self.on_gpu else MixedPrecisionPolicy()
        for unit in _fsdp_units(module):
            fully_shard(unit, mesh=self._mesh, mp_policy=policy)
            # Methods a parent calls besides forward (the AR blocks' AdaLN `modulation`) must gather
            # the unit's shards too; a model names them in `fsdp_forward_methods`.
            for method in getattr(unit, "fsdp_forward_methods", ()):
                register_fsdp_forward_method(unit, method)
        fully_shard(module, mesh=self._mesh, mp_policy=policy)
        return module

    # --- one step ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def micro_step_context(self, sync: bool) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for name in self._optimizers:
                wrapped = self._wrapped[name]
                if hasattr(wrapped, "no_sync") and not sync:
                    stack.enter_context(wrapped.no_sync())
                elif hasattr(wrapped, "set_requires_gradient_sync"):
                    wrapped.set_requires_gradient_sync(sync)
            yield

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.accelerator.autocast()

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

    def _optimizer(self, name: str) -> torch.optim.Optimizer:
        return trained_entry(self._optimizers, name)

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, directory: Path) -> None:
        directory = Path(directory)
        for name, optimizer in self._optimizers.items():
            model_sd, optim_sd = get_state_dict(self._plain[name], optimizer)
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(directory / name))
        if self.is_main:
            write_json_atomic(
                directory / BACKEND_STATE_FILE,
                {
                    "backend": self.name,
                    "strategy": self.strategy,
                    "world_size": self.world_size,
                    "lr_steps": {name: s.steps_taken for name, s in self._schedules.items()},
                },
            )
        self.barrier()

    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        """DCP reshards by itself: the saved world size and strategy need no special handling."""
        directory = Path(directory)
        state = check_backend_state(directory, self.name, list(self._optimizers))
        for name, optimizer in self._optimizers.items():
            model_sd, optim_sd = get_state_dict(self._plain[name], optimizer)
            target = {"model": model_sd, "optim": optim_sd}
            dcp.load(target, checkpoint_id=str(directory / name))
            set_state_dict(self._plain[name], optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"])
            self._schedules[name].steps_taken = int(state["lr_steps"][name])
        self.barrier()

    def full_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        module = self._plain[name]
        if name in self._optimizers and self.strategy == "fsdp":
            state = get_model_state_dict(module, options=_FULL_ON_CPU)  # gathered onto rank 0
        else:
            state = module.state_dict()
        # Always a copy: on one process DCP may hand back the live CPU parameters themselves.
        return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in state.items()}

    def full_optimizer_state(self, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """Consolidated optimizer state per parameter name ({fqn: {"exp_avg": ..., ...}}), complete on rank 0. Collective."""
        optim_sd = get_optimizer_state_dict(self._plain[name], self._optimizer(name), options=_FULL_ON_CPU)
        return {fqn: {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in state.items()} for fqn, state in optim_sd.get("state", {}).items()}

    def shutdown(self) -> None:
        self.accelerator.end_training()  # also destroys the process group
