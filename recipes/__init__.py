"""The shipped study recipes (one YAML document each); installed as the package data ``hfprune.recipes``."""
