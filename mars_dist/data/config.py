"""Streaming loader settings (docs/data.md, "Stream"); each nested section lives next to its code."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from mars_dist.data.order import OrderConfig
from mars_dist.data.retry import RetryConfig
from mars_dist.data.shard_cache import CacheConfig


@dataclass
class DataConfig:
    train_shards: str = "runs/quickstart/shards/train"  # folder or s3:// prefix holding manifest.json
    valid_shards: str = ""
    batch_size: int = 8  # GLOBAL batch size = micro_batch_size x grad accumulation x world size
    micro_batch_size: int = 0  # per-device micro-batch; 0 = batch_size / world_size (no accumulation)
    num_workers: int = 0
    seed: int = 0
    storage_options: Dict[str, Any] = field(default_factory=dict)  # fsspec/s3fs options (endpoint_url, key, ...)
    order: OrderConfig = field(default_factory=OrderConfig)  # sample order (mars_dist/data/order.py)
    cache: CacheConfig = field(default_factory=CacheConfig)  # node-local shard cache for s3:// shards
    retry: RetryConfig = field(default_factory=RetryConfig)  # retries of S3 reads
    ranks_per_node: int = 0  # ranks sharing a host and its shard cache; 0 = the launcher's LOCAL_WORLD_SIZE
