"""Generation from trained models: one interface for every generator family.

- generator.py: `Generator` (labels -> token maps -> CMX -> audio; `edit` regenerates a masked
  region) and `FamilyGenerator` (a family's model, sampled through the family's spec).
- loaders.py: exported tokenizers and generators, rebuilt from their exports alone (models/builders.py).
- flags.py: the sampling flags of every sampling command, made from the families' options.
- editing.py: zero-shot inpainting and bandwidth extension, their baselines and metrics.
- notes.py: label sets from the command line or a file, note names, the wav + PNG note writer.
Used by `mars-sample`, the evaluation and the benchmarks; never imports the training stack.
"""
