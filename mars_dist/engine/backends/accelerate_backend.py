"""Accelerate backend: DDP or FSDP2 over the process group Accelerate sets up, DCP checkpoints.

Accelerate owns the launch environment (accelerate launch / torchrun variables, device choice,
autocast); the wrapping is done here so that FSDP2 (`fully_shard`) also works over gloo on the CPU,
which Accelerate's own FSDP plugin does not support. Checkpoints go through
torch.distributed.checkpoint (DCP) with fully-qualified parameter names, so a checkpoint written by
N processes (DDP or FSDP) loads on M processes with either strategy.

A parameter that never received a gradient (a branch no forward uses, a discriminator before its
start step) has no optimizer state: the checkpoint holds none for it, and after a resume it has
none again, exactly as in an unbroken run.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, Set, Tuple

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from mars_dist.device import resolve_autocast_dtype, resolve_device
from mars_dist.engine.backends._common import (check_backend_state, load_frozen, save_frozen, saved_lr_steps,
                                               write_backend_state)
from mars_dist.engine.backends.fsdp_context import FSDPContext
from mars_dist.engine.backends.optimizer_backend import OptimizerBackend
from mars_dist.engine.checkpoint import CheckpointError
from mars_dist.engine.task import ModelSpec
from mars_dist.parallel import process_group
from mars_dist.parallel.sharding import sharding_plan

_FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Optimizer state is checked against the checkpoint before loading (see _load_target); what remains
# missing is the state of parameters that had never stepped, which must stay missing.
_STATE_OF_STEPPED_ONLY = StateDictOptions(strict=False)
_PREVIEW = 5  # names listed in a mismatch error


def optimizer_state_by_name(module: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """`optimizer.state_dict()` keyed by parameter names, the layout of DCP's get_optimizer_state_dict.

    Not get_optimizer_state_dict itself: on an optimizer without any state yet (a discriminator
    before its start step) it first runs a zero-lr step that gives every parameter state with
    step=1, so saving a checkpoint would change the run's later Adam updates.
    """
    names = {p: name for name, p in module.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = optimizer.state_dict()
    return {
        "state": {names[params[i]]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[params[i]] for i in g["params"]]} for g in state["param_groups"]],
    }


def _preview(names) -> str:
    names = sorted(names)
    return ", ".join(names[:_PREVIEW]) + (f" (+{len(names) - _PREVIEW} more)" if len(names) > _PREVIEW else "")


def _saved_paths(checkpoint: Path) -> Set[Tuple]:
    """Every entry of a DCP checkpoint as its path in the saved nested dict, e.g. ("optim", "state", NAME, "exp_avg")."""
    planner_data = dcp.FileSystemReader(str(checkpoint)).read_metadata().planner_data
    if not planner_data:
        raise CheckpointError(f"{checkpoint}: DCP metadata without planner data; not a checkpoint of this backend")
    return set(planner_data.values())


def _check_model(checkpoint: Path, saved: Set[Tuple], model_sd: Dict[str, Any]) -> None:
    saved_model = {path[1] for path in saved if path[0] == "model"}
    missing, unexpected = set(model_sd) - saved_model, saved_model - set(model_sd)
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: written for another model: this one has {_preview(missing) or 'nothing'} that the checkpoint lacks, "
            f"the checkpoint has {_preview(unexpected) or 'nothing'} that this one lacks"
        )


def _stepped_state(checkpoint: Path, saved: Set[Tuple], optim_sd: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of `optim_sd["state"]` the checkpoint holds: those of the parameters that had stepped.

    `optim_sd` comes from get_state_dict, which gives every parameter state (a zero-lr step on a
    fresh optimizer). A parameter with no state at all in the checkpoint had not stepped when it was
    saved; one whose saved state has other entries, or state for a parameter this optimizer lacks,
    means another optimizer wrote the checkpoint.
    """
    saved_state: Dict[str, Set[str]] = {}
    for path in saved:
        if path[:2] == ("optim", "state"):
            saved_state.setdefault(path[2], set()).add(path[3])
    unknown = set(saved_state) - set(optim_sd["state"])
    if unknown:
        raise CheckpointError(f"{checkpoint}: optimizer state for parameters this optimizer does not train: {_preview(unknown)}")
    for name, entry in optim_sd["state"].items():
        if name in saved_state and saved_state[name] != set(entry):
            raise CheckpointError(f"{checkpoint}: optimizer state of {name} holds {sorted(saved_state[name])}, "
                                  f"this optimizer keeps {sorted(entry)} (was it written with another optimizer?)")
    saved_groups = len({path[2] for path in saved if path[:2] == ("optim", "param_groups")})
    if saved_groups != len(optim_sd["param_groups"]):
        raise CheckpointError(f"{checkpoint}: {saved_groups} optimizer param groups, this optimizer has {len(optim_sd['param_groups'])}")
    return {name: entry for name, entry in optim_sd["state"].items() if name in saved_state}


def _load_target(checkpoint: Path, model_sd: Dict[str, Any], optim_sd: Dict[str, Any]) -> Dict[str, Any]:
    """What dcp.load fills in: the whole model state, the param groups, and the optimizer state of
    the parameters that had stepped when the checkpoint was saved. Any other difference between
    the checkpoint and this model/optimizer is a CheckpointError naming it."""
    saved = _saved_paths(checkpoint)
    _check_model(checkpoint, saved, model_sd)
    return {"model": model_sd, "optim": {"state": _stepped_state(checkpoint, saved, optim_sd), "param_groups": optim_sd["param_groups"]}}


class AccelerateBackend(OptimizerBackend):
    name = "accelerate"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        from accelerate import Accelerator, DistributedDataParallelKwargs

        probe_device = resolve_device(cfg.engine.device, 0)
        on_gpu = probe_device.type == "cuda"
        # Accelerate autocasts to bf16 on the CPU as on the GPU; FSDP2 additionally keeps bf16 params on GPU.
        mixed_precision = "bf16" if resolve_autocast_dtype(cfg.engine.mixed_precision, probe_device) else "no"
        self.on_gpu = on_gpu
        launch = process_group.launcher_info()
        # The group is joined here (gloo on CPU, nccl on GPU, engine.dist_timeout_s); Accelerate reuses it.
        process_group.init_distributed(resolve_device(cfg.engine.device, launch.local_rank), cfg.engine.dist_timeout_s)
        # Without cpu=True on a CPU-only machine Accelerate silently starts N independent rank-0 copies.
        # find_unused_parameters: a model may hold parameters its forward never uses (the tokenizer's
        # shared phi convs outnumber the scales of a short schedule); plain DDP then fails at the
        # second step. The price is one autograd-graph walk per forward.
        self.accelerator = Accelerator(cpu=not on_gpu, mixed_precision=mixed_precision,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        if self.accelerator.num_processes != launch.world_size:
            raise RuntimeError(
                f"Accelerate sees {self.accelerator.num_processes} processes, the launcher started "
                f"{launch.world_size}: check the accelerate config (use configs/accelerate/*.yaml)"
            )
        self.strategy = cfg.engine.accelerate.strategy
        self.mixed_precision = mixed_precision
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.local_rank = self.accelerator.local_process_index
        self.device = self.accelerator.device
        if self.strategy == "fsdp":
            self.parallel = FSDPContext()
        self._mesh = None

    # --- setup -------------------------------------------------------------------------------
    def _prepare_trained(self, name: str, spec: ModelSpec) -> Tuple[nn.Module, nn.Module, torch.optim.Optimizer, Any]:
        module = spec.module.to(self.device)
        wrapped = self._wrap(module)
        # FSDP2 replaces parameters by DTensor shards: the optimizer must see those.
        optimizer = spec.optimizer(module.parameters())
        return wrapped, module, optimizer, optimizer

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
        plan = sharding_plan(module)
        for unit in plan.units:
            fully_shard(unit, mesh=self._mesh, mp_policy=policy)
            # Methods a parent calls besides forward (the generator blocks' AdaLN `modulation`)
            # must gather the unit's shards too; the model's plan names them.
            for method in plan.unit_methods:
                if hasattr(unit, method):
                    register_fsdp_forward_method(unit, method)
        fully_shard(module, mesh=self._mesh, mp_policy=policy)
        return module

    # --- one step ----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        return self.accelerator.autocast()

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, directory: Path) -> None:
        directory = Path(directory)
        for name, optimizer in self._trained.items():
            module = self._plain[name]
            dcp.save({"model": get_model_state_dict(module), "optim": optimizer_state_by_name(module, optimizer)},
                     checkpoint_id=str(directory / name))
        save_frozen(directory, self.frozen(), self.is_main)
        write_backend_state(self, directory, strategy=self.strategy)
        self.barrier()

    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        """DCP reshards by itself: the saved world size and strategy need no special handling."""
        directory = Path(directory)
        state = check_backend_state(directory, self.name, self.trained_names(), self.saved_name)
        for name, optimizer in self._trained.items():
            module = self._plain[name]
            folder = directory / self.saved_name(name)
            target = _load_target(folder, *get_state_dict(module, optimizer))
            dcp.load(target, checkpoint_id=str(folder))
            set_model_state_dict(module, target["model"])
            # Replaces the optimizer's whole state: parameters without saved state end up with none.
            set_optimizer_state_dict(module, optimizer, target["optim"], options=_STATE_OF_STEPPED_ONLY)
            self._schedules[name].steps_taken = saved_lr_steps(state, name, self.saved_name)
        load_frozen(directory, self.frozen(), self.saved_name)
        self.barrier()

    def full_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        module = self._plain[name]
        if name in self._trained and self.strategy == "fsdp":
            state = get_model_state_dict(module, options=_FULL_ON_CPU)  # gathered onto rank 0
        else:
            state = module.state_dict()
        # Always a copy: on one process DCP may hand back the live CPU parameters themselves.
        return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in state.items()}

    def full_optimizer_state(self, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """Consolidated optimizer state per parameter name ({fqn: {"exp_avg": ..., ...}}), complete on rank 0. Collective."""
        optimizer = self._optimizer(name)
        if not optimizer.state:  # get_optimizer_state_dict would first give it state for every parameter (see above)
            return {}
        optim_sd = get_optimizer_state_dict(self._plain[name], optimizer, options=_FULL_ON_CPU)
        return {fqn: {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in state.items()} for fqn, state in optim_sd.get("state", {}).items()}

    def shutdown(self) -> None:
        self.accelerator.end_training()  # also destroys the process group
