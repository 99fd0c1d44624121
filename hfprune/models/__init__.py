"""Model families: one package each (model code + adapter), registered here with one line per family.

Hand-written families come first (the CNNs, the MLP, ViT with its per-layer-width model code); the families found by
structure (:mod:`hfprune.models.generic`: any causal LM, vision-language model or ViT-like encoder transformers
loads) take every other checkpoint their kind covers.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from hfprune.errors import HfpruneError, reason
from hfprune.models.base import ModelAdapter, StructuredAdapter, UnstructuredAdapter
from hfprune.models.hf_resnet.adapter import HFResNetAdapter
from hfprune.models.lenet.adapter import LeNetAdapter
from hfprune.models.generic.causal_lm import CausalLMAdapter
from hfprune.models.generic.vision_encoder import VisionEncoderAdapter
from hfprune.models.generic.vision_language import VisionLanguageAdapter
from hfprune.models.resnet_cifar.adapter import ResNetCifarAdapter
from hfprune.models.sparse_mlp.adapter import SparseMLPAdapter
from hfprune.models.vgg_cifar.adapter import VGGCifarAdapter
from hfprune.models.vit.adapter import ViTAdapter

FAMILIES: dict[str, type[ModelAdapter]] = {adapter.name: adapter for adapter in (
    LeNetAdapter,
    ViTAdapter,
    ResNetCifarAdapter,
    VGGCifarAdapter,
    HFResNetAdapter,
    SparseMLPAdapter,
    # found by structure, after the hand-written families
    CausalLMAdapter,
    VisionLanguageAdapter,
    VisionEncoderAdapter,
)}
# earlier names of a family, still read in recipes (a TinyLLaVA converted to Llava is a vision-language model)
FAMILIES["llava"] = VisionLanguageAdapter

__all__ = ["FAMILIES", "ModelAdapter", "StructuredAdapter", "UnstructuredAdapter", "adapter_for_checkpoint",
           "adapter_for_model_type", "get_adapter", "model_type_of"]


def get_adapter(family: str, dtype: str = "auto") -> ModelAdapter:
    """The adapter of a registered model family; ``dtype`` of the pretrained weights it loads."""
    try:
        return FAMILIES[family](dtype)
    except KeyError:
        raise HfpruneError(f"unknown model family '{family}'; known families: {', '.join(FAMILIES)}") from None


def adapter_for_model_type(model_type: str | None, dtype: str = "auto") -> ModelAdapter | None:
    """The adapter of the family that loads checkpoints of ``model_type``, or None."""
    family = next((adapter for adapter in FAMILIES.values() if adapter.handles(model_type)), None)
    return family(dtype) if family is not None else None


def model_type_of(source: str) -> str:
    """The ``model_type`` in the config.json of a local directory or Hub id."""
    how = "give a directory written by save_pretrained or hfprune convert, or a Hub id reachable from this machine"
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise HfpruneError(f"cannot load model '{source}' ({reason(error)}); {how}") from None
    if not isinstance(config_dict, dict):
        raise HfpruneError(f"cannot load model '{source}' (its config.json holds a JSON "
                           f"{type(config_dict).__name__}, not an object); {how}")
    model_type = config_dict.get("model_type")
    if model_type is None:
        raise HfpruneError(f"cannot load model '{source}' (no config.json with a model_type); {how}")
    return model_type


def adapter_for_checkpoint(source: str, dtype: str = "auto") -> ModelAdapter:
    """The adapter of the family a local directory or Hub id belongs to (read from its config.json)."""
    model_type = model_type_of(source)
    adapter = adapter_for_model_type(model_type, dtype)
    if adapter is None:
        known = ", ".join(t for family in FAMILIES.values() for t in family.model_types)
        raise HfpruneError(f"model '{source}' is of type '{model_type}', which no hfprune family loads: it is not "
                           f"a causal LM, a vision-language model or a ViT-like encoder in transformers' Auto "
                           f"mappings, nor one of {known}")
    return adapter
