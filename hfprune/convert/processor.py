"""The converted checkpoint's tokenizer (``<image>``, pad token, Phi chat template), image processor, processor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from transformers import (
    AutoTokenizer,
    LlavaConfig,
    LlavaProcessor,
    PhiConfig,
    PreTrainedTokenizerBase,
    SiglipVisionConfig,
)
from transformers.image_utils import PILImageResampling
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from hfprune.errors import HfpruneError
from hfprune.models.llava.chat import PHI_CHAT_TEMPLATE

IMAGE_TOKEN = "<image>"
SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]


def load_tokenizer(directory: Path, config: Mapping, text_config: PhiConfig) -> PreTrainedTokenizerBase:
    """The source's tokenizer with ``<image>`` and a pad token, left padding and the Phi chat template."""
    try:  # Phi's config: the source's own config.json names remote code AutoTokenizer need not run
        tokenizer = AutoTokenizer.from_pretrained(directory, config=text_config)
    except (OSError, ValueError) as error:
        raise HfpruneError(f"cannot load the tokenizer in {directory} ({type(error).__name__}); the checkpoint "
                           f"directory needs Phi-2's tokenizer files (e.g. tokenizer.json or vocab.json + "
                           f"merges.txt)") from error
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        # The factory pads with the unk token (tinyllava/model/llm/phi.py); legacy configs name theirs.
        named = config.get("pad_token")
        tokenizer.pad_token = named if named in tokenizer.get_vocab() else tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation; the training collators pad as they need
    tokenizer.model_max_length = int(config.get("tokenizer_model_max_length", tokenizer.model_max_length))
    tokenizer.chat_template = PHI_CHAT_TEMPLATE
    return tokenizer


def _preprocessor_settings(directory: Path, tower_dir: Path | None) -> dict:
    """The source's ``preprocessor_config.json`` (beside the weights, or in the legacy tower's directory)."""
    for folder in (directory, tower_dir):
        if folder is not None and (folder / "preprocessor_config.json").is_file():
            return json.loads((folder / "preprocessor_config.json").read_text())
    return {}


def _square_size(size, default: int) -> int:
    if isinstance(size, int):
        return size
    if isinstance(size, Mapping):
        return int(size.get("height") or size.get("shortest_edge") or default)
    return default


def build_image_processor(directory: Path, config: Mapping, vision: SiglipVisionConfig,
                          tower_dir: Path | None = None):
    """SigLIP's preprocessing at the tower's size; ``image_aspect_ratio: pad`` first pads to a square
    of the mean colour, as the TinyLLaVA code's ``expand2square`` does."""
    settings = _preprocessor_settings(directory, tower_dir)
    side = _square_size(settings.get("size"), vision.image_size)
    common = dict(size={"height": side, "width": side}, image_mean=settings.get("image_mean", SIGLIP_MEAN_STD),
                  image_std=settings.get("image_std", SIGLIP_MEAN_STD),
                  resample=settings.get("resample", PILImageResampling.BICUBIC),
                  rescale_factor=settings.get("rescale_factor", 1 / 255))
    if config.get("image_aspect_ratio") == "pad":
        return LlavaImageProcessorPil(do_pad=True, do_center_crop=False, crop_size=common["size"], **common)
    return SiglipImageProcessorPil(**common)


def build_processor(directory: Path, config: Mapping, tokenizer: PreTrainedTokenizerBase,
                    llava: LlavaConfig, tower_dir: Path | None = None) -> LlavaProcessor:
    """``LlavaProcessor`` expanding ``<image>`` to ``llava.image_seq_length`` tokens."""
    return LlavaProcessor(image_processor=build_image_processor(directory, config, llava.vision_config, tower_dir),
                          tokenizer=tokenizer,
                          patch_size=llava.vision_config.patch_size,
                          vision_feature_select_strategy=llava.vision_feature_select_strategy,
                          num_additional_image_tokens=0, chat_template=PHI_CHAT_TEMPLATE, image_token=IMAGE_TOKEN)
