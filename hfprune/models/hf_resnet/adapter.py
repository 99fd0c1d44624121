"""The hf_resnet family: transformers' ResNet (``model_type: resnet``, e.g. microsoft/resnet-18, -50) and
hfprune's per-block-width ``PrunedResNetForImageClassification``.

Groups (App. B.1 of the paper): the first conv of every basic block (ResNet18: ``stage{s}.block{b}.conv1``)
and the first and second convs of every bottleneck (ResNet50: ``...conv1``, ``...conv2``); stages count from
1 (stage 0 is the stem, never pruned, as in Table A2's ``[0, 0.5, 0.5, 0.5, 0.5]``) and each is a set, so a
setting may give ratios per stage (``stage2: 0.5``), per group, or for all (``filters: 0.5``).
Physical pruning always produces a ``PrunedResNetForImageClassification``.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig, PreTrainedModel, ResNetConfig, ResNetForImageClassification

from hfprune.models.base import StructuredAdapter, load_exactly
from hfprune.models.hf_resnet.modeling_pruned_resnet import (
    PrunedResNetConfig,
    PrunedResNetForImageClassification,
    dense_block_widths,
)
from hfprune.pruning.structured.groups import Group, StructuredMask, conv_filter_group

BLOCK = "resnet.encoder.stages.{s}.layers.{b}.layer"

PrunedResNetConfig.register_for_auto_class()
PrunedResNetForImageClassification.register_for_auto_class("AutoModelForImageClassification")


def block_widths(config: PretrainedConfig) -> list[list[list[int]]]:
    """Per stage, per block, the pruned convs' widths of a dense or pruned ResNet config."""
    return getattr(config, "block_widths", None) or dense_block_widths(config)


def to_pruned_resnet(model: ResNetForImageClassification) -> PrunedResNetForImageClassification:
    """The same network as a per-block-width model (shares no storage with ``model``)."""
    if isinstance(model, PrunedResNetForImageClassification):
        return model
    converted = PrunedResNetForImageClassification(PrunedResNetConfig.from_resnet_config(model.config))
    converted.load_state_dict(model.state_dict())
    return converted.to(model.device, model.dtype).train(model.training)


class HFResNetAdapter(StructuredAdapter):
    name = "hf_resnet"
    model_types = (ResNetConfig.model_type, PrunedResNetConfig.model_type)
    config_class = PrunedResNetConfig
    model_class = PrunedResNetForImageClassification
    connectivity = True

    def config(self, num_labels: int, channels: int, image_size: int, overrides: dict[str, Any]) -> PrunedResNetConfig:
        return PrunedResNetConfig(**{"num_labels": num_labels, "num_channels": channels, **overrides})

    def load_config(self, source: str) -> PrunedResNetConfig:
        return PrunedResNetConfig.from_resnet_config(self._checkpoint_class(source)[0].from_pretrained(source))

    def load_pretrained(self, source: str) -> PrunedResNetForImageClassification:
        """A HF ResNet (``model_type: resnet``, e.g. microsoft/resnet-18) or an hfprune pruned ResNet."""
        return to_pruned_resnet(load_exactly(self._checkpoint_class(source)[1], source, dtype=self.dtype))

    @staticmethod
    def _checkpoint_class(source: str) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
        model_type = PretrainedConfig.get_config_dict(source)[0].get("model_type")
        if model_type == PrunedResNetConfig.model_type:
            return PrunedResNetConfig, PrunedResNetForImageClassification
        if model_type == ResNetConfig.model_type:
            return ResNetConfig, ResNetForImageClassification
        raise ValueError(f"'{source}' is a '{model_type}' checkpoint, not a ResNet image classifier")

    def groups(self, config: PretrainedConfig) -> dict[str, Group]:
        groups = {}
        for s, stage in enumerate(block_widths(config)):
            for b, widths in enumerate(stage):
                block = BLOCK.format(s=s, b=b)
                for i, width in enumerate(widths):
                    name = f"stage{s + 1}.block{b}.conv{i + 1}"
                    conv, norm, consumer = (f"{block}.{i}.convolution", f"{block}.{i}.normalization",
                                            f"{block}.{i + 1}.convolution")
                    groups[name] = conv_filter_group(name, width, conv, norm, consumer, (f"stage{s + 1}",))
        return groups

    def pruned_config(self, config: PretrainedConfig, mask: StructuredMask) -> PrunedResNetConfig:
        pruned = PrunedResNetConfig.from_resnet_config(config)
        pruned.block_widths = [[[len(mask.get(f"stage{s + 1}.block{b}.conv{i + 1}", range(w)))
                                 for i, w in enumerate(widths)] for b, widths in enumerate(stage)]
                               for s, stage in enumerate(block_widths(config))]
        return pruned

    def macs(self, config: PretrainedConfig) -> int:
        """Multiply-accumulates of one 224×224 image (or ``config.image_size``) through every conv and the
        classifier (no BN, ReLU, pooling)."""
        size = getattr(config, "image_size", None) or 224
        size = (size + 1) // 2  # stem: 7x7 stride 2
        total = size * size * config.num_channels * config.embedding_size * 49
        size = (size + 1) // 2  # 3x3 max-pool, stride 2
        channels, bottleneck = config.embedding_size, config.layer_type == "bottleneck"
        for s, (out, stage) in enumerate(zip(config.hidden_sizes, block_widths(config))):
            for b, widths in enumerate(stage):
                stride = 2 if b == 0 and (s > 0 or config.downsample_in_first_stage) else 1
                out_size = (size + stride - 1) // stride
                if bottleneck:
                    w1, w2 = widths
                    first_size = out_size if config.downsample_in_bottleneck else size
                    total += first_size**2 * channels * w1 + out_size**2 * (w1 * w2 * 9 + w2 * out)
                else:
                    (w1,) = widths
                    total += out_size**2 * (channels * w1 * 9 + w1 * out * 9)
                if stride > 1 or channels != out:
                    total += out_size**2 * channels * out  # 1x1 projection shortcut
                size, channels = out_size, out
        return total + channels * config.num_labels

    def card_rows(self, config: PretrainedConfig) -> list[str]:
        rows = [f"| stage{s + 1}.block{b} | {', '.join(map(str, widths))} | {out} |"
                for s, (out, stage) in enumerate(zip(config.hidden_sizes, block_widths(config)))
                for b, widths in enumerate(stage)]
        return ["| block | pruned convs' filters | residual width |", "|---|---:|---:|", *rows]

    def prune_physically(self, model: PreTrainedModel, mask: StructuredMask) -> PrunedResNetForImageClassification:
        """Dense HF ResNet or PrunedResNet → a smaller PrunedResNet that computes what the masked model computes."""
        return super().prune_physically(model, mask)
