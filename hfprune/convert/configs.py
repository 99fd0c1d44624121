"""The source's layout told, and its Phi-2, SigLIP and Llava configs read from config.json and checked."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Collection, Mapping

from transformers import LlavaConfig, PhiConfig, SiglipVisionConfig

from hfprune.errors import HfpruneError
from hfprune.convert.keys import LEGACY_TOWER, layer_count

LAYOUTS = ("legacy", "factory")

# google/siglip-so400m-patch14-384's vision tower: used when the source names no vision config.
SO400M_384 = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                  image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)

PHI_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_act",
              "max_position_embeddings", "initializer_range", "layer_norm_eps", "use_cache", "rope_theta",
              "rope_scaling", "rope_parameters", "partial_rotary_factor", "qk_layernorm", "bos_token_id",
              "eos_token_id")
SIGLIP_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                 "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "vision_use_head")
FACTORY_STRATEGIES = {"patch": "default", "cls_patch": "full"}


def detect_layout(config: Mapping, keys: Collection[str]) -> str:
    """``legacy`` or ``factory``, from config.json's fields, else from the weight names."""
    by_config = {
        "legacy": "mm_vision_tower" in config or "mm_projector_type" in config
        or str(config.get("model_type", "")).startswith("tiny_llava_"),
        "factory": config.get("model_type") == "tinyllava" or "connector_type" in config
        or "llm_model_name_or_path" in config,
    }
    by_keys = {
        "legacy": any(key.startswith("model.mm_projector.") for key in keys),
        "factory": any(key.startswith("connector._connector.") for key in keys),
    }
    for votes in (by_config, by_keys):
        found = [layout for layout, vote in votes.items() if vote]
        if len(found) == 1:
            return found[0]
    raise HfpruneError("cannot tell the checkpoint's layout from config.json or its weight names; "
                       "pass --layout legacy (bczhou/TinyLLaVA-3.1B) or --layout factory "
                       "(tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B)")


def check_layout(layout: str) -> str:
    """The layout name, validated."""
    if layout not in LAYOUTS:
        raise HfpruneError(f"unknown layout '{layout}'; choose auto, {', '.join(LAYOUTS)}")
    return layout


def _known(fields: Collection[str], values: Mapping) -> dict:
    return {name: values[name] for name in fields if name in values}


def _require(actual, expected: str, what: str) -> None:
    if actual is not None and str(actual) != expected:
        raise HfpruneError(f"unsupported {what} '{actual}': only TinyLLaVA-3.1B's {expected} converts")


def text_config_from_source(config: Mapping, layout: str) -> PhiConfig:
    """Phi-2's config: legacy keeps it at the top level, factory under ``text_config``.

    Fields a source leaves out are PhiConfig's defaults, as when the source's own code read it.
    """
    if layout == "legacy":
        _require((config.get("architectures") or [None])[0], "TinyLlavaPhiForCausalLM", "architecture")
        _require(config.get("mm_projector_type"), "mlp2x_gelu", "projector")
        text = config
    else:
        _require(config.get("connector_type"), "mlp2x_gelu", "connector")
        text = config.get("text_config")
        if not text:
            raise HfpruneError("the factory config.json has no text_config (Phi-2's config)")
        _require(text.get("model_type"), "phi", "language model")
    return PhiConfig(**_known(PHI_FIELDS, text), tie_word_embeddings=False)


def legacy_tower_name(config: Mapping) -> str:
    """The legacy config's ``mm_vision_tower`` ('' when unset); HfpruneError unless it is a SigLIP."""
    tower = str(config.get("mm_vision_tower") or "")
    if tower and "siglip" not in tower.lower():  # the legacy builder picks SigLIP by this very test
        raise HfpruneError(f"unsupported vision tower '{tower}': only TinyLLaVA-3.1B's SigLIP converts")
    return tower


def source_vision_config(config: Mapping, layout: str, tower_dir: Path | None = None) -> SiglipVisionConfig:
    """The source's SigLIP tower as configured: factory ``vision_config``; legacy the config.json in
    ``tower_dir`` (the tower's directory, when local); else google/siglip-so400m-patch14-384's."""
    if layout == "factory" and config.get("vision_config"):
        vision = config["vision_config"]
        _require(vision.get("model_type"), "siglip_vision_model", "vision tower")
        return SiglipVisionConfig(**_known(SIGLIP_FIELDS, vision))
    if layout == "legacy":
        legacy_tower_name(config)
        if tower_dir is not None and (tower_dir / "config.json").is_file():
            vision = json.loads((tower_dir / "config.json").read_text())
            return SiglipVisionConfig(**_known(SIGLIP_FIELDS, vision.get("vision_config", vision)))
    return SiglipVisionConfig(**SO400M_384)


def llava_config(config: Mapping, layout: str, keys: Collection[str], *, image_token_index: int,
                 vocab_size: int | None = None, vision: SiglipVisionConfig | None = None) -> LlavaConfig:
    """The ``LlavaConfig`` that computes what the source computes (see :mod:`hfprune.convert`).

    ``keys`` are the checkpoint's weight names (the legacy tower keeps the layers it holds); ``vision`` is
    :func:`source_vision_config` (so400m's by default); ``vocab_size`` grows the LM's vocabulary.
    """
    text = text_config_from_source(config, layout)
    if vocab_size is not None and vocab_size > text.vocab_size:
        text.vocab_size = vocab_size
    vision = copy.deepcopy(vision) if vision is not None else SiglipVisionConfig(**SO400M_384)
    if layout == "legacy":
        vision.num_hidden_layers = layer_count(keys, LEGACY_TOWER) or vision.num_hidden_layers - 1
        vision.vision_use_head, feature_layer, strategy = False, -1, "full"
    else:
        feature_layer = int(config.get("vision_feature_layer", -2))
        chosen = config.get("vision_feature_select_strategy", "patch")
        if chosen not in FACTORY_STRATEGIES:
            raise HfpruneError(f"unsupported vision_feature_select_strategy '{chosen}' "
                               f"(known: {', '.join(FACTORY_STRATEGIES)})")
        strategy = FACTORY_STRATEGIES[chosen]
    patches = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_index,
                       image_seq_length=patches - (strategy == "default"), projector_hidden_act="gelu",
                       vision_feature_select_strategy=strategy, vision_feature_layer=feature_layer,
                       multimodal_projector_bias=True, tie_word_embeddings=False)
