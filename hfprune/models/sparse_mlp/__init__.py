"""The sparse_mlp family (2 → w → … → 1 ReLU MLPs of the sparse-MLP studies): its model code and its adapter."""
