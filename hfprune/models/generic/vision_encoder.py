"""The vision-encoder family: every ViT-like encoder transformers ships (DeiT, DINOv2, SigLIP and CLIP vision
towers, ...; ViT itself has its own family, ``vit``, with structured pruning), loaded with the image-classification
Auto class where the checkpoint has a head, else ``AutoModel``: a checkpoint saved without one (``facebook/dinov2-base``
is a ``Dinov2Model``) loads as it was saved, never with a new random head.

Pruned unstructurally, its default targets are the Linears of its encoder blocks, found by walking the model.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from hfprune.errors import HfpruneError, reason
from hfprune.models.generic.base import AutoFamily
from hfprune.models.structure import VISION_ENCODER


class VisionEncoderAdapter(AutoFamily):
    name = "vision_encoder"
    kind = VISION_ENCODER
    task = "image_classification"
    auto_class = "AutoModel"
    example_type = "dinov2"

    def auto_class_for(self, config: PretrainedConfig) -> type:
        """The Auto class whose mapping holds the checkpoint's own class (``config.architectures``), else the one of
        its ``model_type``."""
        import transformers
        from transformers.models.auto import modeling_auto as auto

        saved = (getattr(config, "architectures", None) or [None])[0]
        for name, mapping in (("AutoModelForImageClassification", auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
                              ("AutoModel", auto.MODEL_MAPPING_NAMES)):
            classes = mapping.get(config.model_type, ())
            if saved is not None and saved in ((classes,) if isinstance(classes, str) else tuple(classes)):
                return getattr(transformers, name)
        return super().auto_class_for(config)

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
