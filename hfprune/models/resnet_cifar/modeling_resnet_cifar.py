"""CIFAR ResNets (ResNet-20/32/44/56/110; He et al. 2016, §4.2) as a Hugging Face model whose config records the
inner width of every basic block (structured pruning removes filters of each block's first conv).

Stem: 3×3 conv (16) + BN + ReLU; 3 stages of ``(depth - 2) / 6`` basic blocks (16/32/64 channels, strides 1/2/2);
option-A shortcut (stride-2 subsampling and zero-padded channels, no parameters); global average pooling;
Linear(64, num_labels). A pruned block keeps its residual width: only its first conv (and BN, and the second
conv's input channels) is narrower.

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights, so a pruned
checkpoint loads with ``AutoModelForImageClassification.from_pretrained(DIR, trust_remote_code=True)`` in a
process that never imported hfprune.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput


class ResNetCifarConfig(PretrainedConfig):
    """Widths of a CIFAR ResNet; a pruned model is one with smaller ``block_widths``.

    Args:
        num_channels: input image channels.
        image_size: input height and width (any size works; 32 for CIFAR).
        depth: 6n+2 layers (20, 32, 44, 56, 110): n basic blocks per stage.
        stage_widths: residual channels of the stem and each stage's blocks (16, 32, 64).
        block_widths: per stage, per block, the filters of the block's first conv (default: the stage width).
        num_labels: classes (default 10).
    """

    model_type = "resnet_cifar"

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        depth: int = 56,
        stage_widths: list[int] | tuple[int, ...] = (16, 32, 64),
        block_widths: list[list[int]] | None = None,
        num_labels: int | None = None,
        **kwargs,
    ):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        self.num_channels = num_channels
        self.image_size = image_size
        self.depth = depth
        self.stage_widths = [int(w) for w in stage_widths]
        blocks = (depth - 2) // 6
        if block_widths is None:
            block_widths = [[w] * blocks for w in self.stage_widths]
        self.block_widths = [[int(w) for w in stage] for stage in block_widths]
        if len(self.block_widths) != len(self.stage_widths) or any(
                len(stage) != blocks or min(stage) < 1 for stage in self.block_widths):
            raise ValueError(f"block_widths must list {len(self.stage_widths)} stages of {blocks} positive widths "
                             f"(depth {depth}), got {self.block_widths}")
        if num_labels is not None or "id2label" not in kwargs:  # a saved config gives id2label only
            kwargs["num_labels"] = 10 if num_labels is None else num_labels
        super().__init__(**kwargs)

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6


class OptionAShortcut(nn.Module):
    """Identity, or stride-2 subsampling with the new channels zero-padded on both sides (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            x = nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


class BasicBlock(nn.Module):
    """conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus the shortcut, → ReLU; ``inner`` = conv1's filters."""

    def __init__(self, in_channels: int, inner: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = OptionAShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifarForImageClassification(PreTrainedModel):
    """The CIFAR ResNet; parameters ``stem.{conv,bn}``, ``stages.{s}.{b}.{conv1,bn1,conv2,bn2}``, ``classifier``."""

    config_class = ResNetCifarConfig
    main_input_name = "pixel_values"

    def __init__(self, config: ResNetCifarConfig):
        super().__init__(config)
        first = config.stage_widths[0]
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(config.num_channels, first, 3, 1, 1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(first))
        self.stages = nn.ModuleList()
        channels = first
        for index, (width, inner) in enumerate(zip(config.stage_widths, config.block_widths)):
            blocks = []
            for b, inner_width in enumerate(inner):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, inner_width, width, stride))
                channels = width
            self.stages.append(nn.Sequential(*blocks))
        self.classifier = nn.Linear(channels, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        # as the reference CIFAR ResNets: Kaiming-normal convs, BN at identity, PyTorch's default Linear
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
        x = torch.relu(self.stem(pixel_values))
        for stage in self.stages:
            x = stage(x)
        logits = self.classifier(x.mean((2, 3)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
