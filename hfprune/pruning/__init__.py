"""Pruning: masks kept exact (masking), structured groups and surgery, unstructured methods."""
