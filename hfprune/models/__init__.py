"""Model families, each behind a :class:`~hfprune.models.base.ModelAdapter`."""

from __future__ import annotations

from hfprune.errors import HfpruneError
from hfprune.models.base import ModelAdapter
from hfprune.models.lenet.modeling_lenet import LeNet5MiniConfig, LeNet5MiniForImageClassification
from hfprune.models.lenet.adapter import LeNetAdapter
from hfprune.models.llava.adapter import LlavaAdapter
from hfprune.models.vit.modeling_pruned_vit import PrunedViTConfig, PrunedViTForImageClassification
from hfprune.models.vit.adapter import ViTAdapter

ADAPTERS: dict[str, type[ModelAdapter]] = {
    adapter.name: adapter for adapter in (LeNetAdapter, ViTAdapter, LlavaAdapter)}

LeNet5MiniConfig.register_for_auto_class()
LeNet5MiniForImageClassification.register_for_auto_class("AutoModelForImageClassification")
PrunedViTConfig.register_for_auto_class()
PrunedViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")


def get_adapter(family: str, dtype: str = "auto") -> ModelAdapter:
    """The adapter of a registered model family; ``dtype`` of the pretrained weights it loads."""
    try:
        return ADAPTERS[family](dtype)
    except KeyError:
        raise HfpruneError(f"unknown model family '{family}'; known families: {', '.join(ADAPTERS)}") from None
