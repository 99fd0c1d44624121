"""The LeNet5-Mini family: its groups are the filters of conv1, conv2 and conv3."""

from __future__ import annotations

from hfprune.models.base import StructuredAdapter
from hfprune.models.lenet.modeling_lenet import LeNet5MiniConfig, LeNet5MiniForImageClassification
from hfprune.pruning.structured.groups import Group, ParamSlice, StructuredMask

CONVS = ("conv1", "conv2", "conv3")

LeNet5MiniConfig.register_for_auto_class()
LeNet5MiniForImageClassification.register_for_auto_class("AutoModelForImageClassification")


class LeNetAdapter(StructuredAdapter):
    name = "lenet5_mini"
    model_types = (LeNet5MiniConfig.model_type,)
    config_class = LeNet5MiniConfig
    model_class = LeNet5MiniForImageClassification
    connectivity = True

    def groups(self, config: LeNet5MiniConfig) -> dict[str, Group]:
        c1, c2, c3 = config.conv_filters
        first_linear = "hidden.0.weight" if config.hidden_sizes else "classifier.weight"
        flat_span = config.final_spatial_size**2  # conv3 channel c feeds flat features [c*span, (c+1)*span)
        return {
            "conv1": Group("conv1", "filters", c1, (
                ParamSlice("conv1.weight", 0), ParamSlice("conv1.bias", 0), ParamSlice("conv2.weight", 1))),
            "conv2": Group("conv2", "filters", c2, (
                ParamSlice("conv2.weight", 0), ParamSlice("conv2.bias", 0), ParamSlice("conv3.weight", 1))),
            "conv3": Group("conv3", "filters", c3, (
                ParamSlice("conv3.weight", 0), ParamSlice("conv3.bias", 0), ParamSlice(first_linear, 1, flat_span))),
        }

    def pruned_config(self, config: LeNet5MiniConfig, mask: StructuredMask) -> LeNet5MiniConfig:
        pruned = self._copy_config(config)
        for index, name in enumerate(CONVS):
            if name in mask:
                pruned.conv_filters[index] = len(mask[name])
        return pruned

    def macs(self, config: LeNet5MiniConfig) -> int:
        """Multiply-accumulates of the convolutions and Linear layers for one image (no biases, ReLU, pooling)."""
        size, channels, total, k = config.image_size, config.num_channels, 0, config.kernel_size
        for index, filters in enumerate(config.conv_filters):
            size -= k - 1
            total += size * size * filters * channels * k * k
            size, channels = (size // 2 if index < 2 else size), filters
        widths = [channels * size * size, *config.hidden_sizes, config.num_labels]
        return total + sum(a * b for a, b in zip(widths[:-1], widths[1:]))

    def card_rows(self, config: LeNet5MiniConfig) -> list[str]:
        rows = [f"| {name} | {filters} |" for name, filters in zip(CONVS, config.conv_filters)]
        return ["| layer | filters |", "|---|---:|", *rows]
