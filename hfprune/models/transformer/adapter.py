"""Structured pruning for the families found by structure (:mod:`hfprune.models.generic`): their groups come from
the walk, their physical pruning is :func:`~hfprune.models.transformer.surgery.prune_model`, and their checkpoints
are native or own-code (:mod:`~hfprune.models.transformer.modeling_per_layer`)."""

from __future__ import annotations

from typing import ClassVar

import transformers
from transformers import PretrainedConfig, PreTrainedModel

from hfprune.models.base import StructuredAdapter, load_exactly
from hfprune.models.structure import auto_class_name, find_blocks
from hfprune.models.transformer.groups import block_groups
from hfprune.models.transformer.modeling_per_layer import PREFIX, per_layer_class
from hfprune.models.transformer.size import forward_macs
from hfprune.models.transformer.surgery import (
    OWN_CODE,
    build_on_meta,
    checkpoint_kind,
    original_class,
    pruned_config,
    prune_model,
)
from hfprune.pruning.structured.groups import Group, StructuredMask

HEADS_FFN = "heads_ffn"


def base_class_of(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The transformers class a checkpoint's config is of (its ``architectures``, a per-layer class's base), else
    the one its kind's Auto class maps it to."""
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name.removeprefix(PREFIX), None)
        if isinstance(cls, type) and issubclass(cls, PreTrainedModel):
            return cls
    auto = getattr(transformers, auto_class_name(config))
    mapped = auto._model_mapping[type(config)]
    return mapped[0] if isinstance(mapped, (tuple, list)) else mapped


class BlockStructured(StructuredAdapter):
    """Groups, physical pruning, MACs and card rows of any transformers model whose blocks the walk finds."""

    structures: ClassVar[tuple[str, ...]] = ("unstructured", HEADS_FFN)
    remote_code: ClassVar[bool] = False  # native checkpoints; own-code ones say so in their card

    def model_of(self, config: PretrainedConfig) -> PreTrainedModel:
        """A model of ``config`` on the meta device (its own per-layer class where the config records one)."""
        base = base_class_of(config)
        return build_on_meta(per_layer_class(base) if checkpoint_kind(config) == OWN_CODE else base, config)

    def groups(self, config: PretrainedConfig) -> dict[str, Group]:
        return block_groups(self.model_of(config))

    def pruned_config(self, config: PretrainedConfig, mask: StructuredMask) -> PretrainedConfig:
        model = self.model_of(config)
        return pruned_config(model, block_groups(model), mask)

    def prune_physically(self, model: PreTrainedModel, mask: StructuredMask) -> PreTrainedModel:
        return prune_model(model, block_groups(model), mask)

    def load_per_layer(self, source: str, config: PretrainedConfig) -> PreTrainedModel:
        """An own-code checkpoint, with hfprune's copy of its model code (no ``trust_remote_code`` needed here)."""
        return load_exactly(per_layer_class(base_class_of(config)), source, dtype=self.dtype).eval()

    def macs(self, config: PretrainedConfig) -> int | None:
        return forward_macs(self.model_of(config))

    def card_rows(self, config: PretrainedConfig) -> list[str]:
        blocks = find_blocks(self.model_of(config))
        rows = ["| layer | heads | key/value heads | FFN width |", "|---:|---:|---:|---:|"]
        for roles in blocks.roles:
            heads = roles.heads
            rows.append(f"| {roles.index} | {heads.attention if heads else '–'} | {heads.key_value if heads else '–'} "
                        f"| {roles.intermediate_size or '–'} |")
        return rows

    def loading_code(self, auto_class: str | None = None, remote_code: bool = False) -> list[str]:
        auto_class = auto_class or self.auto_class
        trust = ", trust_remote_code=True" if remote_code else ""
        return [f"from transformers import {auto_class}", f"model = {auto_class}.from_pretrained(PATH{trust})"]


__all__ = ["BlockStructured", "HEADS_FFN", "base_class_of", "original_class"]
