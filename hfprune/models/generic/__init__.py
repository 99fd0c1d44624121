"""Families found by structure: any causal LM, vision-language model or ViT-like vision encoder transformers' Auto
classes load, recognised through transformers' own mappings (:func:`hfprune.models.structure.model_kind`), with
no list of architectures in hfprune."""
