"""Feature extractors for the evaluation metrics: embeddings (VGGish for FAD) and, later, the trained classifiers."""
