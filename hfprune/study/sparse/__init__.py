"""Sparse-training studies ("Sparsest Models Elude Pruning", STUDY §5b): the combinatorial search and the pruning
baselines on one MLP, compared in accuracy against nonzero weights."""
