"""CIFAR VGGs (VGG-11/13/16/19 with BatchNorm; Simonyan & Zisserman 2015) as a Hugging Face model whose config
records every conv's width (structured pruning removes filters of any conv).

Five stages of 3×3 convs (no bias) + BN + ReLU, 64/128/256/512/512 channels, a 2×2 max-pool after every
stage but the last; global average pooling; Linear(512, num_labels). VGG19:
64,64,M,128,128,M,256×4,M,512×4,M,512×4.

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights, so a pruned
checkpoint loads with ``AutoModelForImageClassification.from_pretrained(DIR, trust_remote_code=True)`` in a
process that never imported hfprune.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

CONVS_PER_STAGE = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


class VGGCifarConfig(PretrainedConfig):
    """Widths of a CIFAR VGG; a pruned model is one with smaller ``conv_widths``.

    Args:
        num_channels: input image channels.
        image_size: input height and width (at least 16: four 2×2 max-pools; 32 for CIFAR).
        depth: 11, 13, 16 or 19 (convs + 3 in the original's classifier count).
        stage_widths: channels of each of the 5 stages (64, 128, 256, 512, 512).
        conv_widths: filters of every conv in order (default: its stage's width).
        num_labels: classes (default 100).
    """

    model_type = "vgg_cifar"

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        depth: int = 19,
        stage_widths: list[int] | tuple[int, ...] = (64, 128, 256, 512, 512),
        conv_widths: list[int] | None = None,
        num_labels: int | None = None,
        **kwargs,
    ):
        if depth not in CONVS_PER_STAGE:
            raise ValueError(f"depth must be one of {', '.join(map(str, CONVS_PER_STAGE))}, got {depth}")
        self.num_channels = num_channels
        self.image_size = image_size
        self.depth = depth
        self.stage_widths = [int(w) for w in stage_widths]
        if len(self.stage_widths) != 5:
            raise ValueError(f"stage_widths must list 5 widths, got {self.stage_widths}")
        if conv_widths is None:
            conv_widths = [w for w, n in zip(self.stage_widths, CONVS_PER_STAGE[depth]) for _ in range(n)]
        self.conv_widths = [int(w) for w in conv_widths]
        if len(self.conv_widths) != sum(CONVS_PER_STAGE[depth]) or min(self.conv_widths) < 1:
            raise ValueError(f"conv_widths must list {sum(CONVS_PER_STAGE[depth])} positive widths (VGG{depth}), "
                             f"got {self.conv_widths}")
        if num_labels is not None or "id2label" not in kwargs:  # a saved config gives id2label only
            kwargs["num_labels"] = 100 if num_labels is None else num_labels
        super().__init__(**kwargs)

    @property
    def stage_of_conv(self) -> list[int]:
        """The stage (0..4) of every conv."""
        return [s for s, n in enumerate(CONVS_PER_STAGE[self.depth]) for _ in range(n)]


class ConvBN(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class VGGCifarForImageClassification(PreTrainedModel):
    """The CIFAR VGG; parameters ``layers.{i}.{conv,bn}`` (i = 0..convs-1) and ``classifier``."""

    config_class = VGGCifarConfig
    main_input_name = "pixel_values"

    def __init__(self, config: VGGCifarConfig):
        super().__init__(config)
        widths = [config.num_channels, *config.conv_widths]
        self.layers = nn.ModuleList(ConvBN(a, b) for a, b in zip(widths[:-1], widths[1:]))
        stages = config.stage_of_conv
        # a max-pool follows the last conv of every stage but the last
        self._pool_after = {i for i in range(len(stages) - 1) if stages[i] != stages[i + 1]}
        self.classifier = nn.Linear(widths[-1], config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        x = pixel_values
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self._pool_after:
                x = nn.functional.max_pool2d(x, 2)
        logits = self.classifier(x.mean((2, 3)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
