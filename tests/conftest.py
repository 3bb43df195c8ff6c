"""Shared pytest fixtures live in tests/fixtures/ (one module per concern)."""
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

pytest_plugins = [
    "tests.fixtures.nsynth",
    "tests.fixtures.shards",
    "tests.fixtures.s3",
    "tests.fixtures.dist",
    "tests.fixtures.slurm",
]
