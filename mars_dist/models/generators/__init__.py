"""Generators over the tokenizer's token maps: one sub-package per family, each with its spec
(family.py), plus what they share (the AdaLN trunk, label conditioning, sampling, presets, the
family registry)."""
