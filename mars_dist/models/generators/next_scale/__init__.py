"""The next-scale AR (MARS/VAR): AdaLN blocks, block-causal attention over scales, KV-cached sampling."""
