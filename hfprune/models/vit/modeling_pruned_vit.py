"""A ViT whose config records every encoder layer's head count and FFN width (structured pruning).

``PrunedViTForImageClassification`` is the Hugging Face ``ViTForImageClassification`` with
per-layer widths: layer ``i`` has ``num_attention_heads_per_layer[i]`` heads of ``head_dim``
each and ``intermediate_size_per_layer[i]`` FFN neurons. Parameter names are those of
``ViTForImageClassification`` (``vit.layers.{i}.attention.q_proj.weight``, ...), so a dense HF
ViT state dict loads into the uniform case unchanged.

A layer may keep zero heads: its attention branch is gone and only the output projection's bias
(what the masked dense layer adds) stays on the residual stream. A layer may keep zero FFN
neurons likewise (``fc2`` of a 0-wide input adds its bias).

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights,
so a pruned checkpoint loads with ``AutoModelForImageClassification.from_pretrained(DIR,
trust_remote_code=True)`` in a process that never imported hfprune.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import ViTConfig
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.vit.modeling_vit import (
    ViTAttention,
    ViTEmbeddings,
    ViTForImageClassification,
    ViTLayer,
    ViTMLP,
    ViTModel,
    ViTPooler,
    ViTPreTrainedModel,
)


@strict
class PrunedViTConfig(ViTConfig):
    r"""
    num_attention_heads_per_layer (`list[int]`, *optional*):
        Heads kept in each encoder layer (default: ``num_attention_heads`` everywhere).
    intermediate_size_per_layer (`list[int]`, *optional*):
        FFN neurons kept in each encoder layer (default: ``intermediate_size`` everywhere).
    head_dim (`int`, *optional*):
        Width of one head; fixed by the dense model (default: ``hidden_size // num_attention_heads``).
    """

    model_type = "pruned_vit"

    num_attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    head_dim: int | None = None

    def __post_init__(self, **kwargs):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads_per_layer is None:
            self.num_attention_heads_per_layer = [self.num_attention_heads] * self.num_hidden_layers
        if self.intermediate_size_per_layer is None:
            self.intermediate_size_per_layer = [self.intermediate_size] * self.num_hidden_layers
        self.num_attention_heads_per_layer = [int(h) for h in self.num_attention_heads_per_layer]
        self.intermediate_size_per_layer = [int(f) for f in self.intermediate_size_per_layer]
        for name in ("num_attention_heads_per_layer", "intermediate_size_per_layer"):
            values = getattr(self, name)
            if len(values) != self.num_hidden_layers or any(v < 0 for v in values):
                raise ValueError(
                    f"{name} must list {self.num_hidden_layers} non-negative widths (one per layer), got {values}"
                )
        super().__post_init__(**kwargs)

    @classmethod
    def from_vit_config(cls, config: ViTConfig) -> "PrunedViTConfig":
        """The per-layer form of a (dense or already pruned) ViT config."""
        data = config.to_dict()
        for key in ("model_type", "transformers_version", "auto_map", "architectures"):
            data.pop(key, None)
        return cls(**data)


class PrunedViTAttention(ViTAttention):
    """``ViTAttention`` with its own head count (possibly zero) and the dense model's head width."""

    def __init__(self, config: PrunedViTConfig, num_heads: int):
        nn.Module.__init__(self)
        self.config = config
        self.num_attention_heads = num_heads
        self.head_dim = config.head_dim
        self.attention_dropout = config.attention_probs_dropout_prob
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        inner = num_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=True)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if self.num_attention_heads == 0:  # every head pruned: only the output bias remains
            return self.o_proj.bias.expand_as(hidden_states), None
        return super().forward(hidden_states, attention_mask, **kwargs)


class PrunedViTMLP(ViTMLP):
    """``ViTMLP`` with its own width."""

    def __init__(self, config: PrunedViTConfig, width: int):
        nn.Module.__init__(self)
        self.config = config
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, width)
        self.fc2 = nn.Linear(width, config.hidden_size)


class PrunedViTLayer(ViTLayer):
    """``ViTLayer`` built from layer ``index``'s widths; the forward pass is ViT's."""

    def __init__(self, config: PrunedViTConfig, index: int):
        GradientCheckpointingLayer.__init__(self)
        self.attention = PrunedViTAttention(config, config.num_attention_heads_per_layer[index])
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PrunedViTMLP(config, config.intermediate_size_per_layer[index])
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class PrunedViTPreTrainedModel(ViTPreTrainedModel):
    config_class = PrunedViTConfig
    config: PrunedViTConfig
    _no_split_modules = ["ViTEmbeddings", "PrunedViTLayer"]


class PrunedViTModel(PrunedViTPreTrainedModel, ViTModel):
    """``ViTModel`` whose layers have per-layer widths."""

    def __init__(self, config: PrunedViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        PrunedViTPreTrainedModel.__init__(self, config)
        self.config = config
        self.embeddings = ViTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([PrunedViTLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    forward = ViTModel.forward


class PrunedViTForImageClassification(PrunedViTPreTrainedModel, ViTForImageClassification):
    """``ViTForImageClassification`` whose encoder layers have per-layer head counts and FFN widths."""

    def __init__(self, config: PrunedViTConfig):
        PrunedViTPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.vit = PrunedViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    forward = ViTForImageClassification.forward
