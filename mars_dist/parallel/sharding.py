"""The sharding plan a model declares and the sharding backends read (torchtitan's parallelize idea):
the model knows its structure, the backends stay generic.

- `units`: submodules sharded as a whole (FSDP2 wraps each with `fully_shard`, then the root takes
  what remains): a transformer block is the natural unit, its weights gathered just for its use.
- `unit_methods`: methods besides `forward` through which a parent enters a unit (the generator
  blocks' AdaLN `modulation`, computed once per condition): FSDP2 gathers the unit for them too.
- `external_parameters`: (module, parameter) pairs where the module's forward reads a parameter of
  a child it does not call (the quantizer's cosine lookup reads its codebook's weight): ZeRO-3
  registers them, so the parameter is gathered for the module's forward.
A model without a `sharding_plan()` method gets `default_plan`: every item of every nn.ModuleList.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from torch import nn


@dataclass(frozen=True)
class ShardingPlan:
    units: Tuple[nn.Module, ...] = ()
    unit_methods: Tuple[str, ...] = ()
    external_parameters: Tuple[Tuple[nn.Module, nn.Parameter], ...] = ()


def default_plan(module: nn.Module) -> ShardingPlan:
    """Every item of every nn.ModuleList (blocks, stages) that holds a trainable parameter."""
    units = [item for child in module.modules() if isinstance(child, nn.ModuleList)
             for item in child if any(p.requires_grad for p in item.parameters())]
    return ShardingPlan(tuple(units))


def sharding_plan(module: nn.Module) -> ShardingPlan:
    """The module's own plan, or the default one."""
    plan = getattr(module, "sharding_plan", None)
    return plan() if callable(plan) else default_plan(module)
