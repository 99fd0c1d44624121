"""Structured pruning: groups of units, their importance, mask samplers, gates and physical surgery."""
