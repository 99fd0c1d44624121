"""The vision-language family: every model ``AutoModelForImageTextToText`` loads (Llava and TinyLLaVA converted to
it, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM, Gemma 3, PaliGemma, ...).

Pruned unstructurally, its default targets are the Linears of its language model's decoder blocks (never the
vision tower, the projector, the embeddings or the LM head), found by walking the model. A pruned model keeps its
class and shapes and saves as a plain checkpoint of its architecture.

Processors. ``AutoProcessor`` loads the checkpoint's processor (tokenizer, image processor, chat template). The
processors of models that also read videos (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision) hold a video processor, which
transformers builds only with torchvision installed; without it, :func:`load_processor` builds such a processor with
a stand-in for the video processor that keeps its saved settings (written back unchanged when the processor is
saved) and reads no video — images and text are processed exactly as with torchvision.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

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
        try:
            processor = load_processor(source)
        except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError) as error:
            if not required:
                return None
            raise HfpruneError(f"cannot load the processor of model '{source}' ({reason(error)}); give a checkpoint "
                               "written by `hfprune convert` or `save_pretrained` with its processor") from None
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            if not required:
                return None
            raise HfpruneError(f"'{source}' has no multimodal processor (tokenizer + image processor) saved with it")
        return processor


def load_processor(source: str):
    """``AutoProcessor.from_pretrained(source)``; a processor whose video processor needs torchvision, where it is
    not installed, with a stand-in for the video processor (module docstring)."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(source, trust_remote_code=False)
    except (ImportError, AttributeError):  # transformers names video processors only with torchvision installed
        if is_torchvision_available():
            raise
    return _without_torchvision(source)


def _processor_class(source: str, settings: dict) -> type:
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = settings.get("processor_class") or PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(source).model_type)
    found = getattr(transformers, name, None) if isinstance(name, str) else None
    if found is None:
        raise ImportError(f"no transformers processor class for '{source}'")
    return found


def _without_torchvision(source: str):
    """The processor of ``source`` built from its parts, its video processor a :func:`video_stand_in`."""
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.processing_utils import ProcessorMixin

    settings, _ = ProcessorMixin.get_processor_dict(source)
    processor_class = _processor_class(source, settings)
    parts = []
    for attribute in processor_class.get_attributes():
        if "tokenizer" in attribute:
            parts.append(AutoTokenizer.from_pretrained(source))
        elif attribute == "image_processor":
            parts.append(AutoImageProcessor.from_pretrained(source))
        elif attribute == "video_processor":
            parts.append(video_stand_in(_video_settings(source, settings)))
        else:
            raise ImportError(f"its {attribute} cannot be built without torchvision")
    with lenient_video_check():
        return processor_class.from_args_and_dict(parts, settings)


def _video_settings(source: str, settings: dict) -> dict:
    """The saved settings of a checkpoint's video processor: nested in processor_config.json (transformers 5) or in
    video_preprocessor_config.json."""
    if isinstance(settings.get("video_processor"), dict):
        return dict(settings["video_processor"])
    from transformers.video_processing_utils import BaseVideoProcessor

    try:
        found, _ = BaseVideoProcessor.get_video_processor_dict(source)
    except (OSError, ValueError):
        return {}
    return dict(found)


def video_stand_in(settings: dict[str, Any]):
    """A video processor that keeps ``settings`` (saved back as they were) and reads no video."""
    from transformers.video_processing_utils import BaseVideoProcessor

    class SavedVideoSettings(BaseVideoProcessor):
        def to_dict(self) -> dict[str, Any]:
            return dict(settings)

        def __call__(self, *args, **kwargs):
            raise HfpruneError("this processor was loaded without torchvision and reads no video; install "
                               "torchvision to process videos")

    return SavedVideoSettings()


@contextlib.contextmanager
def lenient_video_check() -> Iterator[None]:
    """While active, a processor accepts a :func:`video_stand_in` as its video processor (transformers checks the
    class against one it can name only with torchvision installed)."""
    from transformers.processing_utils import ProcessorMixin

    original = ProcessorMixin.check_argument_for_proper_class

    def check(self, name, argument):
        if name == "video_processor" and hasattr(argument, "to_dict"):
            return type(argument)
        return original(self, name, argument)

    ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = original
