"""The vision-language family: every model ``AutoModelForImageTextToText`` loads (Llava and TinyLLaVA converted to
it, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM, Gemma 3, PaliGemma, ...).

Pruned unstructurally, its default targets are the Linears of its language model's decoder blocks (never the
vision tower, the projector, the embeddings or the LM head), found by walking the model. A pruned model keeps its
class and shapes and saves as a plain checkpoint of its architecture.
"""

from __future__ import annotations

from hfprune.errors import HfpruneError, reason
from hfprune.models.generic.base import AutoFamily
from hfprune.models.structure import VISION_LANGUAGE


class VisionLanguageAdapter(AutoFamily):
    name = "vision_language"
    kind = VISION_LANGUAGE
    task = "vision_language"
    auto_class = "AutoModelForImageTextToText"
    example_type = "llava"

    @staticmethod
    def load_processor(source: str, required: bool = True):
        """The multimodal processor saved with a checkpoint (tokenizer, image processor, chat template); None when
        it has none and ``required`` is False."""
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if not required:
                return None
            raise HfpruneError(f"cannot load the processor of model '{source}' ({reason(error)}); give a checkpoint "
                               "written by `hfprune convert` or `save_pretrained` with its processor") from None
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            if not required:
                return None
            raise HfpruneError(f"'{source}' has no multimodal processor (tokenizer + image processor) saved with it")
        return processor
