"""Tiny random instances of the ConvNet families (real architectures, few channels), for fast tests."""

from __future__ import annotations

import torch

TINY_CONFIGS = {
    "resnet_cifar": dict(depth=8, stage_widths=[4, 6, 8], num_labels=5),
    "vgg_cifar": dict(depth=11, stage_widths=[4, 6, 8, 8, 6], num_labels=5),
    "hf_resnet18": dict(layer_type="basic", embedding_size=6, hidden_sizes=[4, 6, 8, 10], depths=[2, 1, 1, 1],
                        num_labels=5),
    "hf_resnet50": dict(layer_type="bottleneck", embedding_size=6, hidden_sizes=[8, 12, 16, 20], depths=[1, 2, 1, 1],
                        num_labels=5),
}


def tiny_model(kind: str, seed: int = 0):
    """A tiny random model of ``kind`` (a TINY_CONFIGS key) in eval mode, with non-trivial BN statistics."""
    from hfprune.models import get_adapter

    torch.manual_seed(seed)
    if kind.startswith("hf_resnet"):
        from transformers import ResNetConfig, ResNetForImageClassification

        model = ResNetForImageClassification(ResNetConfig(num_channels=3, **TINY_CONFIGS[kind]))
    else:
        adapter = get_adapter(kind)
        model = adapter.build(adapter.config(5, 3, 32, {k: v for k, v in TINY_CONFIGS[kind].items()
                                                      if k != "num_labels"}))
    randomise_batchnorm(model)
    return model.eval()


@torch.no_grad()
def randomise_batchnorm(model: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics (so slicing errors show)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
