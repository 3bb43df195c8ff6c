"""Generators over the tokenizer's token maps: one sub-package per family, plus what they share
(label conditioning, top-k/top-p sampling)."""
