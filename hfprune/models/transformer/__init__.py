"""Structured pruning of any transformers model found by the walk: its groups (heads, key/value groups, FFN neurons,
layers), physical surgery into a native checkpoint of its architecture or one with its own per-layer-width code."""
