"""The CIFAR ResNet family: its groups are the filters of the first conv of every basic block.

Group ``stage{s}.block{b}`` (stages counted from 1; stage 0 is the stem, never pruned, as in the paper's
Table A2 ratios ``[0, 0.5, 0.5, 0.5]``) belongs to the set ``stage{s}``, so a setting may give ratios per
stage (``stage2: 0.5``), per block, or for every block (``filters: 0.5``).
"""

from __future__ import annotations

from hfprune.models.base import StructuredAdapter
from hfprune.models.resnet_cifar.modeling_resnet_cifar import ResNetCifarConfig, ResNetCifarForImageClassification
from hfprune.pruning.structured.groups import Group, StructuredMask, conv_filter_group

ResNetCifarConfig.register_for_auto_class()
ResNetCifarForImageClassification.register_for_auto_class("AutoModelForImageClassification")


class ResNetCifarAdapter(StructuredAdapter):
    name = "resnet_cifar"
    model_types = (ResNetCifarConfig.model_type,)
    config_class = ResNetCifarConfig
    model_class = ResNetCifarForImageClassification
    connectivity = True

    def groups(self, config: ResNetCifarConfig) -> dict[str, Group]:
        groups = {}
        for s, widths in enumerate(config.block_widths):
            for b, width in enumerate(widths):
                name, block = f"stage{s + 1}.block{b}", f"stages.{s}.{b}"
                groups[name] = conv_filter_group(name, width, f"{block}.conv1", f"{block}.bn1", f"{block}.conv2",
                                            (f"stage{s + 1}",))
        return groups

    def pruned_config(self, config: ResNetCifarConfig, mask: StructuredMask) -> ResNetCifarConfig:
        pruned = self._copy_config(config)
        for s, widths in enumerate(pruned.block_widths):
            for b in range(len(widths)):
                widths[b] = len(mask.get(f"stage{s + 1}.block{b}", range(widths[b])))
        return pruned

    def macs(self, config: ResNetCifarConfig) -> int:
        """Multiply-accumulates of the convolutions and the classifier for one image (no BN, ReLU, shortcut)."""
        size, channels = config.image_size, config.stage_widths[0]
        total = size * size * config.num_channels * channels * 9
        for s, (width, inner) in enumerate(zip(config.stage_widths, config.block_widths)):
            for b, inner_width in enumerate(inner):
                if s > 0 and b == 0:
                    size = (size + 1) // 2
                total += size * size * 9 * (channels * inner_width + inner_width * width)
                channels = width
        return total + channels * config.num_labels

    def card_rows(self, config: ResNetCifarConfig) -> list[str]:
        rows = [f"| stage{s + 1}.block{b} | {width} | {stage_width} |"
                for s, (stage_width, widths) in enumerate(zip(config.stage_widths, config.block_widths))
                for b, width in enumerate(widths)]
        return ["| block | conv1 filters | residual width |", "|---|---:|---:|", *rows]
