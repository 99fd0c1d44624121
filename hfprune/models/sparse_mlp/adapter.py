"""The sparse_mlp family: the ReLU MLPs the sparse-training methods and the combinatorial search prune weight by
weight (every Linear weight matrix; biases are never pruned)."""

from __future__ import annotations

from typing import Any

from hfprune.models.base import ModelAdapter
from hfprune.models.sparse_mlp.modeling_sparse_mlp import SparseMLPConfig, SparseMLPForBinaryClassification

SparseMLPConfig.register_for_auto_class()
SparseMLPForBinaryClassification.register_for_auto_class("AutoModel")


class SparseMLPAdapter(ModelAdapter):
    name = "sparse_mlp"
    model_types = (SparseMLPConfig.model_type,)
    structure = None  # trained in sparse-training studies, which prune its weights one by one
    task = "binary_classification"
    config_class = SparseMLPConfig
    model_class = SparseMLPForBinaryClassification
    remote_code = True
    auto_class = "AutoModel"
    connectivity = True
    searchable = True

    def config(self, num_labels: int, channels: int, image_size: int, overrides: dict[str, Any]) -> SparseMLPConfig:
        """The MLP from the recipe's ``model.config`` alone (the data's label count, channels and image size do not
        shape it: one logit for two classes)."""
        return SparseMLPConfig(**overrides)

    def macs(self, config: SparseMLPConfig) -> int:
        """Multiply-accumulates of one point's forward pass through the dense layers."""
        widths = config.widths
        return sum(a * b for a, b in zip(widths[:-1], widths[1:]))

    def card_rows(self, config: SparseMLPConfig) -> list[str]:
        rows = [f"| layers.{i} | {a} → {b} |" for i, (a, b) in enumerate(zip(config.widths[:-1], config.widths[1:]))]
        return ["| layer | shape |", "|---|---|", *rows]
