"""Sparse-training methods: how a network reaches a budget of nonzero weights (pruned at initialisation, during
training, or after it), compared with the combinatorial search in the sparse-MLP studies (STUDY §5b)."""
