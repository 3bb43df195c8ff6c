"""The distributed evaluation runner (Table 1): strided work items per rank, features gathered to rank 0,
metrics in float64, outputs in one folder.

- plan.py: work items (fixed global batches of each set), their seeds, the labels to generate.
- extract.py: one item -> feature arrays (classifier, VGGish, mel, NDB) from the notes' audio.
- run.py: `evaluate(sources, features, settings, rank, world)`: extract, gather, compute.
- table.py: which metrics each set gets, the Table 1 columns, the markdown table, the paper's rows.
- output.py: metrics.json, table.md, features.npz, spectrogram PNGs, wandb.
The command line is mars_dist/evaluate.py; docs/eval.md describes the whole.
"""
