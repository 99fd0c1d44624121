"""One-shot pruning of a checkpoint: structured (physically smaller), unstructured (weights zeroed), and a
structured mask chosen by retraining candidates (successive halving)."""
