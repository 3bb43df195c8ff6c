"""Generation from trained models: one interface for every generator family.

- generator.py: `Generator` (labels -> token maps -> CMX -> audio; `edit` regenerates a masked
  region) and `SamplingSettings`.
- loaders.py: exported tokenizers and generators, loaded by the task that trained them.
- notes.py: label sets from the command line or a file, note names, the wav + PNG note writer.
Used by `python -m mars_dist.sample`, the evaluation and the benchmarks.
"""
