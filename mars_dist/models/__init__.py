"""mars_dist.models: plain nn.Modules (the tokenizer, the note classifier, the generator families with
their specs) and builders.py, which rebuilds any of them from an export alone."""
