"""Benchmarks: mars-bench-<name> (python -m mars_dist.bench.<name>): the real paths, measured side by side."""
