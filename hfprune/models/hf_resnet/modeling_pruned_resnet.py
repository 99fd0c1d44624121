"""transformers' ResNet whose config records the inner widths of every residual block (structured pruning).

``PrunedResNetForImageClassification`` is ``ResNetForImageClassification`` (microsoft/resnet-18, -50) with
``block_widths[s][b]``: the filters kept by the first conv of a basic block (``[w1]``), or by the first and
second convs of a bottleneck (``[w1, w2]``). The residual widths (``hidden_sizes``) never change. Parameter
names are those of ``ResNetForImageClassification``, so a dense HF ResNet state dict loads unchanged.

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights, so a pruned
checkpoint loads with ``AutoModelForImageClassification.from_pretrained(DIR, trust_remote_code=True)`` in a
process that never imported hfprune.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification

BOTTLENECK_REDUCTION = 4  # transformers' ResNetBottleNeckLayer: inner width = out_channels // 4


def dense_block_widths(config: ResNetConfig) -> list[list[list[int]]]:
    """``block_widths`` of the unpruned network described by ``config``."""
    if config.layer_type == "bottleneck":
        return [[[width // BOTTLENECK_REDUCTION] * 2 for _ in range(depth)]
                for width, depth in zip(config.hidden_sizes, config.depths)]
    return [[[width] for _ in range(depth)] for width, depth in zip(config.hidden_sizes, config.depths)]


@strict
class PrunedResNetConfig(ResNetConfig):
    r"""
    block_widths (`list[list[list[int]]]`, *optional*):
        Per stage, per block, the filters kept by the block's pruned convs: ``[conv1]`` (basic) or
        ``[conv1, conv2]`` (bottleneck). Default: the dense widths.
    """

    model_type = "pruned_resnet"

    block_widths: list | None = None

    def __post_init__(self, **kwargs):
        dense = dense_block_widths(self)
        if self.block_widths is None:
            self.block_widths = dense
        self.block_widths = [[[int(w) for w in block] for block in stage] for stage in self.block_widths]
        shape = [[len(block) for block in stage] for stage in dense]
        if [[len(block) for block in stage] for stage in self.block_widths] != shape or any(
                w < 1 for stage in self.block_widths for block in stage for w in block):
            raise ValueError(f"block_widths must give {shape} positive widths (stages x blocks x pruned convs), "
                             f"got {self.block_widths}")
        super().__post_init__(**kwargs)

    @classmethod
    def from_resnet_config(cls, config: ResNetConfig) -> "PrunedResNetConfig":
        """The per-block form of a (dense or already pruned) ResNet config."""
        data = config.to_dict()
        for key in ("model_type", "transformers_version", "auto_map", "architectures", "stage_names",
                    "out_features", "out_indices"):
            data.pop(key, None)
        return cls(**data)


def _narrow(layer: nn.Module, in_channels: int, out_channels: int) -> None:
    """Give a ResNetConvLayer ``in_channels`` inputs and ``out_channels`` filters (same kernel, stride, BN)."""
    conv, norm = layer.convolution, layer.normalization
    if (conv.in_channels, conv.out_channels) == (in_channels, out_channels):
        return
    layer.convolution = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding,
                                  conv.dilation, conv.groups, bias=conv.bias is not None)
    layer.normalization = nn.BatchNorm2d(out_channels, eps=norm.eps, momentum=norm.momentum)


class PrunedResNetForImageClassification(ResNetForImageClassification):
    """``ResNetForImageClassification`` whose blocks have the inner widths of ``config.block_widths``."""

    config_class = PrunedResNetConfig
    config: PrunedResNetConfig

    def __init__(self, config: PrunedResNetConfig):
        super().__init__(config)
        for stage, stage_widths in zip(self.resnet.encoder.stages, config.block_widths):
            for block, widths in zip(stage.layers, stage_widths):
                convs = list(block.layer)
                for index, width in enumerate(widths):  # conv i's filters are conv i+1's inputs
                    _narrow(convs[index], convs[index].convolution.in_channels, width)
                    _narrow(convs[index + 1], width, convs[index + 1].convolution.out_channels)
        self.post_init()
