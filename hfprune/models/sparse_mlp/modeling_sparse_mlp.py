"""The sparse-MLP studies' network (STUDY §5b) as a Hugging Face model: 2 → w → w → w → 1, ReLU, one logit per
point, BCE-with-logits.

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights, so a checkpoint
loads with ``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` in a process that never imported hfprune.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class SparseMLPConfig(PretrainedConfig):
    """Widths of the MLP.

    Args:
        input_size: input features (2 for the Cubist Spiral).
        hidden_sizes: widths of the hidden Linear+ReLU layers, one or more (paper: three layers of w).
        num_outputs: output logits (1: binary classification).
    """

    model_type = "hfprune_sparse_mlp"

    def __init__(self, input_size: int = 2, hidden_sizes: list[int] | tuple[int, ...] = (16, 16, 16),
                 num_outputs: int = 1, **kwargs):
        self.input_size = int(input_size)
        self.hidden_sizes = [int(width) for width in hidden_sizes]
        self.num_outputs = int(num_outputs)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1 or self.input_size < 1 or self.num_outputs < 1:
            raise ValueError(f"hidden_sizes must list one or more positive widths and input_size/num_outputs be "
                             f"positive, got hidden_sizes={self.hidden_sizes}, input_size={self.input_size}, "
                             f"num_outputs={self.num_outputs}")
        super().__init__(**kwargs)

    @property
    def widths(self) -> list[int]:
        """Every layer's width, input first: [input_size, *hidden_sizes, num_outputs]."""
        return [self.input_size, *self.hidden_sizes, self.num_outputs]


@dataclass
class BinaryClassifierOutput(ModelOutput):
    """``logits``: ``[B]`` with one output (``[B, k]`` with k > 1); ``loss``: BCE-with-logits when labels are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class SparseMLPForBinaryClassification(PreTrainedModel):
    """(Linear → ReLU) per hidden width, then Linear; parameters ``layers.{0..L}.{weight,bias}``, input side first."""

    config_class = SparseMLPConfig
    main_input_name = "inputs"

    def __init__(self, config: SparseMLPConfig):
        super().__init__(config)
        widths = config.widths
        # built without drawing weights: post_init's one reset_parameters per layer (in order) then draws them
        # exactly as plain nn.Linear layers built after the same torch.manual_seed would
        self.layers = nn.ModuleList(nn.Linear(a, b, device="meta") for a, b in zip(widths[:-1], widths[1:]))
        self.layers.to_empty(device=torch.get_default_device())
        self.post_init()

    def _init_weights(self, module):
        # PyTorch's default Linear initialisation, as the paper's plain-PyTorch MLP (drawn from torch's RNG)
        if isinstance(module, nn.Linear):
            module.reset_parameters()

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool | None = None,
                **kwargs) -> BinaryClassifierOutput:
        x = inputs
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        logits = self.layers[-1](x)
        if logits.shape[-1] == 1:
            logits = logits.squeeze(-1)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).reshape(logits.shape))
        return BinaryClassifierOutput(loss=loss, logits=logits)
