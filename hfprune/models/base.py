"""The model adapter: everything a study needs to know about one model family."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from hfprune.pruning.structured.groups import Group, StructuredMask
from hfprune.pruning.structured.surgery import shrink


class ModelAdapter(ABC):
    """Builds a family's models, names its prunable groups and shrinks it physically."""

    name: str
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]

    def config(self, num_labels: int, channels: int, image_size: int, overrides: dict[str, Any]) -> PretrainedConfig:
        """The dense config for a dataset, with the recipe's ``model.config`` overrides."""
        return self.config_class(num_labels=num_labels, num_channels=channels, image_size=image_size, **overrides)

    structure: str = "filters"  # the recipe's ``pruning.structure`` this family prunes
    cache_pretrained: bool = True  # copy a pretrained dense model into the study directory (False: too large)

    def __init__(self, dtype: str = "auto"):
        self.dtype = dtype  # of pretrained weights when loaded: "auto" keeps the checkpoint's

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        return self.model_class(config)

    def load_pretrained(self, source: str) -> PreTrainedModel:
        """A dense model of this family from a local directory or a Hub id."""
        return self.model_class.from_pretrained(source, dtype=self.dtype)

    @abstractmethod
    def groups(self, config: PretrainedConfig) -> dict[str, Group]:
        """Prunable groups of a model with this config, by name."""

    @abstractmethod
    def pruned_config(self, config: PretrainedConfig, mask: StructuredMask) -> PretrainedConfig:
        """The config of the physically pruned model."""

    def prune_physically(self, model: PreTrainedModel, mask: StructuredMask) -> PreTrainedModel:
        """A smaller model of the same class that computes what the masked model computes."""
        return shrink(model, self.groups(model.config), mask, self.pruned_config(model.config, mask), self.model_class)

    @staticmethod
    def _copy_config(config: PretrainedConfig) -> PretrainedConfig:
        return copy.deepcopy(config)
