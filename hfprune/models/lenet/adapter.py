"""LeNet5-Mini's groups: the filters of conv1, conv2 and conv3."""

from __future__ import annotations

from hfprune.models.base import ModelAdapter
from hfprune.models.lenet.modeling_lenet import LeNet5MiniConfig, LeNet5MiniForImageClassification
from hfprune.pruning.structured.groups import Group, ParamSlice, StructuredMask


class LeNetAdapter(ModelAdapter):
    name = "lenet5_mini"
    config_class = LeNet5MiniConfig
    model_class = LeNet5MiniForImageClassification

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
        for index, name in enumerate(("conv1", "conv2", "conv3")):
            if name in mask:
                pruned.conv_filters[index] = len(mask[name])
        return pruned
