"""DeepSpeed backend: one ZeRO engine (stage 1, 2 or 3) per trained model, elastic via universal checkpoints.

DeepSpeed is driven directly, not through Accelerate's plugin (which picks no backend on a
CPU-only machine). The task's own torch optimizer is handed to DeepSpeed as a client optimizer, so
the optimizer and its hyper-parameters are the same on every backend. A checkpoint saved on N
processes is resumed on M != N processes by converting it once to DeepSpeed's world-size-free
"universal" format (rank 0 converts, the others wait), cached beside the saved state.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import torch
import torch.distributed as dist
from torch import nn

from mars_dist.device import resolve_autocast_dtype, resolve_device
from mars_dist.engine.backend import Backend, trained_entry
from mars_dist.engine.backends._common import (check_backend_state, load_frozen, save_frozen, saved_lr_steps,
                                               write_backend_state)
from mars_dist.engine.backends.deepspeed_config import deepspeed_config
from mars_dist.engine.backends.zero_context import ZeROContext
from mars_dist.engine.checkpoint import CheckpointError
from mars_dist.engine.task import ModelSpec
from mars_dist.parallel import process_group
from mars_dist.parallel.sharding import sharding_plan

STATE_TAG = "state"
UNIVERSAL_TAG = "state_universal"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_env() -> None:
    """Lets `python mars_dist/train.py` (no launcher) run the DeepSpeed backend as a 1-process group."""
    if "RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


@contextlib.contextmanager
def _optimizer_step_disabled(torch_optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Makes the client optimizer's step a no-op while DeepSpeed runs the rest of its step
    (gradient release, counters), which is how a step is skipped without touching ZeRO internals."""
    torch_optimizer.step = lambda *args, **kwargs: None  # instance attribute shadows the method
    try:
        yield
    finally:
        del torch_optimizer.step


class DeepSpeedBackend(Backend):
    name = "deepspeed"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        probe_device = resolve_device(cfg.engine.device, 0)
        self.on_gpu = probe_device.type == "cuda"
        if not self.on_gpu:
            # Must be set before deepspeed is imported: its accelerator is chosen once, at import.
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        _single_process_env()
        self.local_rank = process_group.launcher_info().local_rank
        self.device = resolve_device(cfg.engine.device, self.local_rank)
        # Joins the group (nccl/gloo, engine.dist_timeout_s); DeepSpeed then wraps the existing one.
        process_group.init_distributed(self.device, cfg.engine.dist_timeout_s)
        import deepspeed

        self._ds = deepspeed
        # DeepSpeed needs a process group even for one process (python mars_dist/train.py).
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", dist_init_required=None)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.parallel = ZeROContext()
        self._backward_calls: Dict[str, int] = {}
        self.ds_config: Dict[str, Any] = {}

    @property
    def zero_stage(self) -> int:
        return int(self.ds_config["zero_optimization"]["stage"])

    # --- setup -------------------------------------------------------------------------------
    def _prepare_trained(self, name: str, spec: ModelSpec) -> Tuple[nn.Module, nn.Module, torch.optim.Optimizer, Any]:
        if not self.ds_config:
            wants_bf16 = resolve_autocast_dtype(self.cfg.engine.mixed_precision, torch.device("cuda" if self.on_gpu else "cpu"))
            self.ds_config = deepspeed_config(self.cfg, self.geometry, self.on_gpu, wants_bf16 is not None)
        module = spec.module.to(self.device)
        optimizer = spec.optimizer(module.parameters())
        engine, _, _, _ = self._ds.initialize(model=module, optimizer=optimizer, config=dict(self.ds_config), dist_init_required=False)
        if self.zero_stage == 3:
            # Parameters a module's forward reads without calling their own module (the model's plan
            # names them): gathered for that module's forward (mars_dist/parallel/sharding.py).
            for owner, parameter in sharding_plan(engine.module).external_parameters:
                self._ds.zero.register_external_parameter(owner, parameter)
        self._backward_calls[name] = 0
        return engine, engine.module, optimizer, engine

    # --- one step ----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        # GPU: DeepSpeed keeps bf16 weights; autocast lets fp32 inputs meet them. CPU: DeepSpeed has
        # no bf16 mode, so `engine.mixed_precision=bf16` is plain autocast over fp32 weights.
        if self.on_gpu and self.ds_config.get("bf16", {}).get("enabled"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if not self.on_gpu and resolve_autocast_dtype(self.cfg.engine.mixed_precision, self.device) is not None:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, name: str, loss: torch.Tensor) -> None:
        """DeepSpeed divides by gradient_accumulation_steps itself and reduces at the boundary.

        A model's backward must be called on every micro-batch of a step or on none (DeepSpeed
        counts micro-batches to find the accumulation boundary)."""
        engine = self._engine(name)
        self._backward_calls[name] += 1
        engine.backward(loss)
        if not engine.is_gradient_accumulation_boundary():
            engine.step()  # only advances DeepSpeed's micro-step counter off the boundary

    def step(self, name: str) -> float:
        engine = self._engine(name)
        schedule = self._schedules[name]
        calls, self._backward_calls[name] = self._backward_calls[name], 0
        if calls == 0:
            # No gradient this step (e.g. a GAN discriminator before its start step): like a torch
            # optimizer whose parameters have no .grad, nothing moves; ZeRO cannot step without one.
            schedule.advance()
            return 0.0
        if calls != self.grad_accum:
            raise RuntimeError(f"model {name!r}: backward was called on {calls} of {self.grad_accum} micro-batches of this step; call it on all or none")
        schedule.apply(engine.optimizer.param_groups)
        engine.step()
        schedule.advance()
        norm = engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def zero_grad(self, name: str) -> None:
        engine = self._engine(name)
        if self._backward_calls[name] == 0:
            return
        self._backward_calls[name] = 0
        with _optimizer_step_disabled(engine.optimizer.optimizer):
            engine.step()

    def _engine(self, name: str):
        return trained_entry(self._trained, name)

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, directory: Path) -> None:
        directory = Path(directory)
        for name, engine in self._trained.items():
            engine.save_checkpoint(str(directory / name), tag=STATE_TAG, save_latest=False)
        save_frozen(directory, self.frozen(), self.is_main)
        write_backend_state(self, directory, zero_stage=self.zero_stage, never_stepped=[
            name for name, engine in self._trained.items() if not engine.optimizer.optimizer.state])
        self.barrier()

    def load_checkpoint(self, directory: Path, saved_world_size: int) -> None:
        """Same world size and ZeRO stage: DeepSpeed's own partitions. Otherwise: universal checkpoint."""
        directory = Path(directory)
        state = check_backend_state(directory, self.name, self.trained_names(), self.saved_name)
        reshard = int(saved_world_size) != self.world_size or int(state["zero_stage"]) != self.zero_stage
        for name, engine in self._trained.items():
            folder = directory / self.saved_name(name)
            if not reshard:
                self._load(engine, folder, STATE_TAG, universal=False)
                continue
            if self.saved_name(name) in state.get("never_stepped", []):
                self._load_never_stepped(engine, folder, name, int(state["zero_stage"]))
                continue
            if self.is_main:
                self._convert_to_universal(folder)
            self.barrier()
            self._load(engine, folder, UNIVERSAL_TAG, universal=True)
        for name, schedule in self._schedules.items():
            schedule.steps_taken = saved_lr_steps(state, name, self.saved_name)
        load_frozen(directory, self.frozen(), self.saved_name)
        self.barrier()

    def _load_never_stepped(self, engine: Any, folder: Path, name: str, saved_stage: int) -> None:
        """A model saved before its first optimizer step (a GAN discriminator before its start step)
        has no optimizer state, which the universal converter needs; its weights alone are restored."""
        if saved_stage == 3 or self.zero_stage == 3:
            raise CheckpointError(
                f"{folder}: model {name!r} had not taken an optimizer step when this ZeRO-3 checkpoint was saved; "
                f"resume it on the world size it was saved with, or from a checkpoint after its first step"
            )
        # ZeRO 1/2 keep the full weights in the model-states file, whatever the world size.
        path, _ = engine.load_checkpoint(str(folder), tag=STATE_TAG, load_module_only=True, load_optimizer_states=False,
                                         load_lr_scheduler_states=False)
        if path is None:
            raise CheckpointError(f"{folder / STATE_TAG}: DeepSpeed found no checkpoint to load")

    @staticmethod
    def _load(engine: Any, folder: Path, tag: str, universal: bool) -> None:
        # DeepSpeed reads this flag only inside load_checkpoint; it is normally fixed at initialize,
        # but whether a resume needs the universal path is only known once the checkpoint is found.
        engine._config.load_universal_checkpoint = universal
        try:
            path, _ = engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False)
        finally:
            engine._config.load_universal_checkpoint = False
        if path is None:
            raise CheckpointError(f"{folder / tag}: DeepSpeed found no checkpoint to load")

    @staticmethod
    def _convert_to_universal(folder: Path) -> None:
        """Writes folder/state_universal once (temp folder + rename, so a crash never leaves half of one).

        Runs DeepSpeed's `ds_to_universal` converter in this process with one worker (no process
        pool to fork from a process that holds a process group; no second interpreter to start).
        """
        from deepspeed.checkpoint import ds_to_universal

        target = folder / UNIVERSAL_TAG
        if target.is_dir():
            return
        tmp = folder / f".{UNIVERSAL_TAG}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        argv = [
            "ds_to_universal", "--input_folder", str(folder / STATE_TAG), "--output_folder", str(tmp),
            "--inject_missing_state", "--num_extract_workers", "1", "--num_merge_workers", "1",
        ]
        saved_argv, sys.argv = sys.argv, argv
        log = io.StringIO()
        try:
            args = ds_to_universal.parse_arguments()
            with contextlib.redirect_stdout(log):
                ds_to_universal.main(args)
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"converting {folder / STATE_TAG} to a universal checkpoint failed: {err}\n{log.getvalue()[-4000:]}") from err
        finally:
            sys.argv = saved_argv
        os.replace(tmp, target)

    # --- consolidated views ------------------------------------------------------------------
    def full_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        if name not in self._trained:
            module = self._plain[name]
            return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        from deepspeed.utils import safe_get_full_fp32_param

        engine = self._trained[name]
        module = engine.module
        params = dict(module.named_parameters(remove_duplicate=False))
        out: Dict[str, torch.Tensor] = {}
        for key, value in module.state_dict().items():
            param = params.get(key)
            if param is None:
                out[key] = value.detach().to("cpu", copy=True)
                continue
            full = safe_get_full_fp32_param(param) if param.requires_grad else None
            if full is None:
                with self._ds.zero.GatheredParameters([param], enabled=self.zero_stage == 3):
                    full = param.detach().float().clone()
            out[key] = full.detach().to("cpu", torch.float32, copy=True)
        return out

    def full_optimizer_state(self, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """Consolidated optimizer moments per parameter name ({fqn: {"exp_avg": ..., ...}}). Collective."""
        from deepspeed.utils import safe_get_full_optimizer_state

        engine = self._engine(name)
        inner_state = engine.optimizer.optimizer.state
        keys = sorted({k for s in inner_state.values() for k, v in s.items() if torch.is_tensor(v) and v.dim() > 0})
        out: Dict[str, Dict[str, torch.Tensor]] = {}
        if not keys:
            return out  # no optimizer step taken yet: no moments
        named = [(fqn, p) for fqn, p in engine.module.named_parameters() if p.requires_grad]
        # ZeRO 1/2: a parameter group that never stepped has no moments on some rank; gathering them
        # is collective, so the ranks first agree on which parameters have moments everywhere.
        local_ok = [0.0 if getattr(getattr(p, "_hp_mapping", None), "optim_fragment", 1) is None else 1.0 for _, p in named]
        agreed = torch.tensor(local_ok)
        if dist.is_initialized():
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        for (fqn, param), ok in zip(named, agreed.tolist()):
            if ok:
                out[fqn] = {k: safe_get_full_optimizer_state(param, k).detach().to("cpu", copy=True) for k in keys}
        return out

    def shutdown(self) -> None:
        process_group.destroy()
