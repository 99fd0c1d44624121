"""The ViT family: its groups are the attention heads and the FFN neurons of every encoder layer.

Works on Hugging Face ``ViTForImageClassification`` (dense) and on hfprune's
``PrunedViTForImageClassification`` (per-layer widths): both name their parameters
``vit.layers.{i}.attention.{q,k,v,o}_proj`` and ``vit.layers.{i}.mlp.fc{1,2}`` (transformers 5.x).
Physical pruning always produces a ``PrunedViTForImageClassification``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel, ViTConfig, ViTForImageClassification

from hfprune.models.base import StructuredAdapter, load_exactly
from hfprune.models.vit.modeling_pruned_vit import PrunedViTConfig, PrunedViTForImageClassification
from hfprune.pruning.structured.groups import Group, ParamSlice, StructuredMask

LAYER = "vit.layers.{i}"

PrunedViTConfig.register_for_auto_class()
PrunedViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")


def layer_widths(config: PretrainedConfig) -> tuple[list[int], list[int], int]:
    """(heads per layer, FFN width per layer, head width) of a dense or pruned ViT config."""
    layers = config.num_hidden_layers
    heads = getattr(config, "num_attention_heads_per_layer", None) or [config.num_attention_heads] * layers
    ffn = getattr(config, "intermediate_size_per_layer", None) or [config.intermediate_size] * layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return list(heads), list(ffn), head_dim


def to_pruned_vit(model: ViTForImageClassification) -> PrunedViTForImageClassification:
    """The same network as a per-layer-width model (shares no storage with ``model``)."""
    if isinstance(model, PrunedViTForImageClassification):
        return model
    converted = PrunedViTForImageClassification(PrunedViTConfig.from_vit_config(model.config))
    converted.load_state_dict(model.state_dict())
    return converted.to(model.device, model.dtype).train(model.training)


def vit_macs(config: PretrainedConfig) -> dict[str, int]:
    """Multiply-accumulates of one image's forward pass, counted analytically.

    Counted: patch embedding, q/k/v/o projections, the two attention matmuls (QKᵀ and AV), the MLP
    and the classifier on the CLS token. Not counted (small, elementwise): layer norms, softmax,
    GELU, biases, residual additions.
    """
    heads, ffn, head_dim = layer_widths(config)
    size = config.image_size if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
    patch = config.patch_size if isinstance(config.patch_size, (list, tuple)) else (config.patch_size,) * 2
    patches = (size[0] // patch[0]) * (size[1] // patch[1])
    tokens, hidden = patches + 1, config.hidden_size
    macs = {"patch_embedding": patches * config.num_channels * patch[0] * patch[1] * hidden,
            "attention_projections": 0, "attention_matmuls": 0, "mlp": 0,
            "classifier": hidden * config.num_labels}
    for h, f in zip(heads, ffn):
        inner = h * head_dim
        macs["attention_projections"] += tokens * hidden * inner * 4
        macs["attention_matmuls"] += 2 * h * tokens * tokens * head_dim
        macs["mlp"] += 2 * tokens * hidden * f
    macs["total"] = sum(macs.values())
    return macs


class ViTAdapter(StructuredAdapter):
    name = "vit"
    model_types = (ViTConfig.model_type, PrunedViTConfig.model_type)
    structure = "heads_ffn"
    config_class = PrunedViTConfig
    model_class = PrunedViTForImageClassification

    def config(self, num_labels: int, channels: int, image_size: int, overrides: dict[str, Any]) -> PrunedViTConfig:
        return PrunedViTConfig(**{"num_labels": num_labels, "num_channels": channels, "image_size": image_size,
                                  **overrides})

    def load_config(self, source: str) -> PrunedViTConfig:
        return PrunedViTConfig.from_vit_config(self._checkpoint_class(source)[0].from_pretrained(source))

    def load_pretrained(self, source: str) -> PrunedViTForImageClassification:
        """A HF ViT (``model_type: vit``, e.g. google/vit-base-patch16-224) or an hfprune pruned ViT."""
        return to_pruned_vit(load_exactly(self._checkpoint_class(source)[1], source))

    @staticmethod
    def _checkpoint_class(source: str) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
        config_dict, _ = PretrainedConfig.get_config_dict(source)
        model_type = config_dict.get("model_type")
        if model_type == PrunedViTConfig.model_type:
            return PrunedViTConfig, PrunedViTForImageClassification
        if model_type == ViTConfig.model_type:
            return ViTConfig, ViTForImageClassification
        raise ValueError(f"'{source}' is a '{model_type}' checkpoint, not a ViT image classifier")

    def macs(self, config: PretrainedConfig) -> int:
        return vit_macs(config)["total"]

    def card_rows(self, config: PretrainedConfig) -> list[str]:
        heads, ffn, _ = layer_widths(config)
        return ["| layer | heads | FFN width |", "|---:|---:|---:|",
                *(f"| {i} | {h} | {f} |" for i, (h, f) in enumerate(zip(heads, ffn)))]

    def groups(self, config: PretrainedConfig) -> dict[str, Group]:
        heads, ffn, head_dim = layer_widths(config)
        groups = {}
        for i, (h, f) in enumerate(zip(heads, ffn)):
            attention, mlp = f"{LAYER.format(i=i)}.attention", f"{LAYER.format(i=i)}.mlp"
            head_rows = tuple(ParamSlice(f"{attention}.{proj}_proj.{kind}", 0, head_dim)
                              for proj in "qkv" for kind in ("weight", "bias"))
            groups[f"layers.{i}.heads"] = Group(f"layers.{i}.heads", "heads", h, (
                *head_rows, ParamSlice(f"{attention}.o_proj.weight", 1, head_dim)), min_kept=0)
            groups[f"layers.{i}.ffn"] = Group(f"layers.{i}.ffn", "ffn", f, (
                ParamSlice(f"{mlp}.fc1.weight", 0), ParamSlice(f"{mlp}.fc1.bias", 0), ParamSlice(f"{mlp}.fc2.weight", 1)),
                min_kept=0)
        return groups

    def pruned_config(self, config: PretrainedConfig, mask: StructuredMask) -> PrunedViTConfig:
        pruned = PrunedViTConfig.from_vit_config(config)
        heads, ffn, _ = layer_widths(pruned)
        for i in range(pruned.num_hidden_layers):
            heads[i] = len(mask.get(f"layers.{i}.heads", range(heads[i])))
            ffn[i] = len(mask.get(f"layers.{i}.ffn", range(ffn[i])))
        pruned.num_attention_heads_per_layer, pruned.intermediate_size_per_layer = heads, ffn
        return pruned

    @torch.no_grad()
    def prune_physically(self, model: PreTrainedModel, mask: StructuredMask) -> PrunedViTForImageClassification:
        """Dense HF ViT or PrunedViT → a smaller PrunedViT that computes what the masked model computes."""
        return super().prune_physically(model, mask)
