"""The shipped benchmark specs (one YAML document each); installed as the package data ``hfprune.benchmark_specs``."""
