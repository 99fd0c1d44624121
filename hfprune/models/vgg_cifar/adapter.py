"""The CIFAR VGG family: its groups are the filters of every conv (16 for VGG19).

Group ``conv{i}`` (i from 1) belongs to the set ``stage{s}`` (s = 1..5, the blocks between max-pools), so a
setting may give ratios per conv, per stage or for every conv (``filters: 0.5``).
"""

from __future__ import annotations

from hfprune.models.base import StructuredAdapter
from hfprune.models.vgg_cifar.modeling_vgg_cifar import VGGCifarConfig, VGGCifarForImageClassification
from hfprune.pruning.structured.groups import Group, StructuredMask, conv_filter_group

VGGCifarConfig.register_for_auto_class()
VGGCifarForImageClassification.register_for_auto_class("AutoModelForImageClassification")


class VGGCifarAdapter(StructuredAdapter):
    name = "vgg_cifar"
    model_types = (VGGCifarConfig.model_type,)
    config_class = VGGCifarConfig
    model_class = VGGCifarForImageClassification
    connectivity = True

    def groups(self, config: VGGCifarConfig) -> dict[str, Group]:
        widths, stages = config.conv_widths, config.stage_of_conv
        groups = {}
        for i, (width, stage) in enumerate(zip(widths, stages)):
            consumer = f"layers.{i + 1}.conv" if i + 1 < len(widths) else "classifier"
            groups[f"conv{i + 1}"] = conv_filter_group(f"conv{i + 1}", width, f"layers.{i}.conv", f"layers.{i}.bn",
                                                  consumer, (f"stage{stage + 1}",))
        return groups

    def pruned_config(self, config: VGGCifarConfig, mask: StructuredMask) -> VGGCifarConfig:
        pruned = self._copy_config(config)
        pruned.conv_widths = [len(mask.get(f"conv{i + 1}", range(w))) for i, w in enumerate(config.conv_widths)]
        return pruned

    def macs(self, config: VGGCifarConfig) -> int:
        """Multiply-accumulates of the convolutions and the classifier for one image (no BN, ReLU, pooling)."""
        size, channels, total, stages = config.image_size, config.num_channels, 0, config.stage_of_conv
        for i, width in enumerate(config.conv_widths):
            total += size * size * 9 * channels * width
            channels = width
            if i + 1 < len(stages) and stages[i + 1] != stages[i]:
                size //= 2
        return total + channels * config.num_labels

    def card_rows(self, config: VGGCifarConfig) -> list[str]:
        rows = [f"| conv{i + 1} | {width} |" for i, width in enumerate(config.conv_widths)]
        return ["| layer | filters |", "|---|---:|", *rows]
