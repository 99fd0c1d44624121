"""LeNet5-Mini (docs/studies.md §2) as a Hugging Face model whose config records every layer's width.

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights,
so a pruned checkpoint loads with ``AutoModelForImageClassification.from_pretrained(DIR,
trust_remote_code=True)`` in a process that never imported hfprune.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput


class LeNet5MiniConfig(PretrainedConfig):
    """Widths of LeNet5-Mini; a pruned model is simply one with smaller ``conv_filters``.

    Args:
        num_channels: input image channels.
        image_size: input height and width (28 px MNIST images are resized to 32).
        conv_filters: output filters of conv1, conv2, conv3 (paper: 10, 10, 10).
        kernel_size: kernel of every conv (paper: 5).
        hidden_sizes: widths of the hidden Linear+ReLU layers after flattening (paper: [10];
            the depth variants add more 10s).
        num_labels: classes (default 10).
    """

    model_type = "lenet5_mini"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 32,
        conv_filters: list[int] | tuple[int, ...] = (10, 10, 10),
        kernel_size: int = 5,
        hidden_sizes: list[int] | tuple[int, ...] = (10,),
        num_labels: int | None = None,
        **kwargs,
    ):
        self.num_channels = num_channels
        self.image_size = image_size
        self.conv_filters = list(conv_filters)
        self.kernel_size = kernel_size
        self.hidden_sizes = list(hidden_sizes)
        if num_labels is not None or "id2label" not in kwargs:  # a saved config gives id2label only
            kwargs["num_labels"] = 10 if num_labels is None else num_labels
        super().__init__(**kwargs)

    @property
    def final_spatial_size(self) -> int:
        """Height (= width) of conv3's output: two conv+pool stages, then one conv."""
        size = self.image_size
        for _ in range(2):
            size = (size - self.kernel_size + 1) // 2
        return size - self.kernel_size + 1


class LeNet5MiniForImageClassification(PreTrainedModel):
    """Conv→ReLU→MaxPool ×2, Conv→ReLU, flatten, (Linear→ReLU)×k, Linear; biases on."""

    config_class = LeNet5MiniConfig
    main_input_name = "pixel_values"

    def __init__(self, config: LeNet5MiniConfig):
        super().__init__(config)
        if config.final_spatial_size < 1:
            raise ValueError(
                f"image_size={config.image_size} is too small for three {config.kernel_size}x"
                f"{config.kernel_size} convolutions; use at least {7 * config.kernel_size - 3}"
            )
        c1, c2, c3 = config.conv_filters
        k = config.kernel_size
        self.conv1 = nn.Conv2d(config.num_channels, c1, k)
        self.conv2 = nn.Conv2d(c1, c2, k)
        self.conv3 = nn.Conv2d(c2, c3, k)
        widths = [c3 * config.final_spatial_size**2, *config.hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.classifier = nn.Linear(widths[-1], config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        # PyTorch's default initialisation, as in the paper's plain-PyTorch models.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(pixel_values)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x)).flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        logits = self.classifier(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
