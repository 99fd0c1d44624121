"""The vision-encoder family: every ViT-like encoder transformers ships (DeiT, DINOv2, SigLIP and CLIP vision
towers, ...; ViT itself has its own family, ``vit``, with structured pruning), loaded with the image-classification
Auto class where it has a head, else ``AutoModel``.

Pruned unstructurally, its default targets are the Linears of its encoder blocks, found by walking the model.
"""

from __future__ import annotations

from hfprune.errors import HfpruneError, reason
from hfprune.models.generic.base import AutoFamily
from hfprune.models.structure import VISION_ENCODER


class VisionEncoderAdapter(AutoFamily):
    name = "vision_encoder"
    kind = VISION_ENCODER
    task = "image_classification"
    auto_class = "AutoModel"
    example_type = "dinov2"

    @staticmethod
    def load_processor(source: str, required: bool = True):
        """The image processor saved with a checkpoint (None when it has none and ``required`` is False)."""
        from transformers import AutoImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if not required:
                return None
            raise HfpruneError(f"cannot load the image processor of model '{source}' ({reason(error)})") from None
