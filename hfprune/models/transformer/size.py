"""What a transformers model costs: parameters, and multiply-accumulates of one forward pass counted by running it on
the meta device under torch's FLOP counter (every matmul, attention's included; no memory, no data).

One forward pass is one sequence of :data:`TOKENS` tokens for a language model (a VLM's text alone) and one image
at the config's size for a vision encoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import PretrainedConfig

from hfprune.models.structure import VISION_ENCODER, model_kind, vision_config

TOKENS = 128


def parameter_count(model: nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


def _inputs(config: PretrainedConfig) -> dict[str, torch.Tensor]:
    if model_kind(config) == VISION_ENCODER:
        vision = vision_config(config)
        size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
        return {"pixel_values": torch.zeros(1, getattr(vision, "num_channels", 3), size, size)}
    return {"input_ids": torch.zeros(1, TOKENS, dtype=torch.long)}


def forward_macs(model: nn.Module) -> int | None:
    """MACs of one forward pass (see the module's doc) of a model built on the meta device; None where the
    architecture cannot run there."""
    try:
        with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**_inputs(model.config))
    except Exception:  # noqa: BLE001 - an architecture that needs real data to run: no count
        return None
    return counter.get_total_flops() // 2


def macs_unit(config: PretrainedConfig) -> str:
    """What :func:`forward_macs` counts, in words."""
    return "MACs per image" if model_kind(config) == VISION_ENCODER else f"MACs per {TOKENS}-token sequence"
