"""Convert public TinyLLaVA-3.1B checkpoints to transformers' ``LlavaForConditionalGeneration`` + ``LlavaProcessor``.

TinyLLaVA-3.1B = SigLIP-so400m (384 px, patch 14) + 2-layer GELU MLP connector + Phi-2. Two public layouts:

``legacy`` — ``bczhou/TinyLLaVA-3.1B`` (LLaVA codebase, class ``TinyLlavaPhiForCausalLM``, model_type
``tiny_llava_phi``): a ``PhiForCausalLM`` whose ``model`` also holds ``vision_tower.vision_tower`` and
``mm_projector``; its ``lm_head`` has no bias. The SigLIP tower drops its last encoder layer and its pooling head
when it loads and feeds all 729 patch states of its (new) last layer to the connector, so the converted tower
keeps the layers the checkpoint holds, reads ``hidden_states[-1]`` and keeps every patch (strategy ``full``).

The legacy model builds its tower with ``delay_load`` and loads it at inference from the config's
``mm_vision_tower`` (``bczhou/TinyLLaVA-3.1B-SigLIP`` for the 3.1B): ``SigLipVisionModel.from_pretrained`` of
that SigLIP checkpoint, then ``del encoder.layers[-1:]`` and ``head = Identity()``. So a legacy checkpoint may
hold no ``model.vision_tower.vision_tower.vision_model.*`` keys; the tower then comes from a separate SigLIP
checkpoint (``vision_tower``: a directory or Hub id, by default ``mm_vision_tower``; given explicitly it also
replaces a tower the checkpoint holds, as the legacy code's reload does). Its ``vision_model.X`` becomes the
legacy ``model.vision_tower.vision_tower.vision_model.X``, its config.json sizes the tower (so400m's without one)
and, as in the legacy code, the tower keeps ``num_hidden_layers - 1`` encoder layers: the checkpoint holds all
``num_hidden_layers`` (the last one and the head are left out) or is a tower saved after that cut, with
``num_hidden_layers - 1`` layers (all kept); any other count is an error. A full ``SiglipModel`` checkpoint's
text half (``text_model.*``, ``logit_scale``, ``logit_bias``) is left out as the legacy loader leaves it out.
The converted tower then has exactly the layers it holds, like an embedded one (26 of so400m's 27, layer -1).

``factory`` — ``tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B`` (TinyLLaVA Factory, ``TinyLlavaForConditionalGeneration``,
model_type ``tinyllava``, ``trust_remote_code``): ``language_model`` (a ``PhiForCausalLM``, whose ``lm_head`` has a
bias), ``vision_tower._vision_tower`` (a full ``SiglipVisionModel``) and ``connector._connector``. Its vision
strategy ``patch`` drops the first of SigLIP's 729 patch states (``image_features[:, 1:]``) even though SigLIP has
no CLS token, so it becomes transformers' strategy ``default`` (728 image tokens); ``cls_patch`` becomes ``full``.
transformers' Llava ``lm_head`` has no bias, so Phi-2's ``lm_head.bias`` is folded into ``lm_head.weight``
exactly (see :func:`fold_lm_head_bias`).

Where the names come from (public sources, read when this module was written):

- TinyLLaVA/TinyLLaVA_Factory: ``tinyllava/model/modeling_tinyllava.py`` (attributes ``language_model``,
  ``vision_tower``, ``connector``), ``tinyllava/model/vision_tower/base.py`` (``_vision_tower``; feature layer and
  the ``patch`` → ``[:, 1:]`` selection), ``tinyllava/model/vision_tower/siglip.py`` (``SiglipVisionModel``),
  ``tinyllava/model/connector/base.py`` + ``mlp.py`` (``_connector`` = Linear, GELU, Linear),
  ``tinyllava/model/llm/phi.py`` (``PhiForCausalLM``; pad token = unk token),
  ``tinyllava/model/configuration_tinyllava.py`` (config fields ``llm_model_name_or_path``, ``text_config``,
  ``vision_config``, ``connector_type``, ``vision_feature_layer``, ``vision_feature_select_strategy``,
  ``image_aspect_ratio``, ``tokenizer_model_max_length``, ``pad_token``...) and
  ``tinyllava/model/convert_legecy_weights_to_tinyllavafactory.py`` (the legacy → factory key prefixes and the
  legacy config fields ``mm_vision_tower``, ``mm_projector_type``, ``mm_vision_select_layer``,
  ``mm_vision_select_feature``, ``tokenizer_model_max_length``, ``pad_token``...).
- The legacy TinyLLaVABench code (kept in TinyLLaVA_Factory's history, commit 8a70e23e, and in
  josephtey/TinyLLaVABench): ``tinyllava/model/language_model/llava_phi.py``, ``tinyllava/model/llava_arch.py``,
  ``tinyllava/model/multimodal_encoder/siglip_encoder.py`` (``del encoder.layers[-1:]``, ``head = Identity``,
  ``hidden_states[-1]``, 729 tokens), ``tinyllava/model/multimodal_projector/builder.py`` (``mlp2x_gelu``).
- The Hub's remote code of the factory model (a copy: liuutin9/FPGA-Acceleration-of-TinyLLaVA-Inference-via-HLS,
  ``modeling_tinyllava_phi.py``, with its weight loader naming ``vision_tower._vision_tower.vision_model...`` and
  ``connector._connector.{0,2}``), and a factory ``config.json`` of a sibling model (alisalamatian1/ChartGaze,
  ``models/TinyLLaVA/my_modeling/TinyLLaVA-OpenELM-450M-SigLIP-0.89B_wAttn/config.json``).
- The legacy loader: TinyLLaVA_Factory's history (``tinyllava/model/builder.py`` ``load_pretrained_model``:
  ``if not vision_tower.is_loaded: vision_tower.load_model()``; ``tinyllava/model/llava_arch.py``:
  ``build_vision_tower(config, delay_load=True)``; ``multimodal_encoder/siglip_encoder.py`` ``load_model``) and
  transformers' ``models/llava/convert_llava_weights_to_hf.py`` (whose recipe calls
  ``model.get_vision_tower().load_model()`` before saving, because LLaVA checkpoints need not hold the tower; for
  SigLIP it uses 26 layers, no head, layer -1, strategy ``full``, as here).
- transformers 5.x itself (the pinned version): ``LlavaForConditionalGeneration`` parameter names.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping

import torch
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
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

log = logging.getLogger(__name__)

LAYOUTS = ("legacy", "factory")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
IMAGE_TOKEN = "<image>"
MAX_SHARD_BYTES = 2 * 1024**3  # the writer holds one output shard in memory

LEGACY_TOWER = "model.vision_tower.vision_tower.vision_model."  # the legacy checkpoint's SigLIP tower
SIGLIP_VISION = "vision_model."  # a SigLIP checkpoint's tower (SiglipVisionModel, or SiglipModel's vision half)
SIGLIP_TEXT = ("text_model.", "logit_scale", "logit_bias")  # a SiglipModel's text half: never loaded
TOWER_TARGET = "model.vision_tower."

# Source key prefix → LlavaForConditionalGeneration parameter prefix; the first matching prefix wins.
LEGACY_KEY_MAP: tuple[tuple[str, str], ...] = (
    (LEGACY_TOWER, TOWER_TARGET),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)
FACTORY_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("vision_tower._vision_tower.vision_model.", "model.vision_tower."),
    ("connector._connector.0.", "model.multi_modal_projector.linear_1."),
    ("connector._connector.2.", "model.multi_modal_projector.linear_2."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)
KEY_MAPS = {"legacy": LEGACY_KEY_MAP, "factory": FACTORY_KEY_MAP}

# Phi's lm_head bias has no target (Llava's lm_head has none): folded into lm_head.weight, see fold_lm_head_bias.
LM_HEAD_BIAS = {"legacy": "lm_head.bias", "factory": "language_model.lm_head.bias"}
FINAL_NORM = {"legacy": "model.final_layernorm", "factory": "language_model.model.final_layernorm"}

# Source keys without a target on purpose (re.fullmatch pattern → reason).
DROPPED_KEYS: tuple[tuple[str, str], ...] = (
    (r".*\.rotary_emb\.inv_freq", "rotary-embedding buffer that some transformers versions saved; rebuilt"),
    (r".*\.embeddings\.position_ids", "position-index buffer that some transformers versions saved; rebuilt"),
)

# google/siglip-so400m-patch14-384's vision tower: used when the source names no vision config.
SO400M_384 = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                  image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]

PHI_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_act",
              "max_position_embeddings", "initializer_range", "layer_norm_eps", "use_cache", "rope_theta",
              "rope_scaling", "rope_parameters", "partial_rotary_factor", "qk_layernorm", "bos_token_id",
              "eos_token_id")
SIGLIP_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                 "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "vision_use_head")
FACTORY_STRATEGIES = {"patch": "default", "cls_patch": "full"}


# --------------------------------------------------------------------------- key tables


def target_name(key: str, layout: str) -> str | None:
    """The ``LlavaForConditionalGeneration`` parameter a source key becomes, or None if no prefix matches."""
    for source, target in KEY_MAPS[layout]:
        if key.startswith(source):
            return target + key[len(source):]
    return None


def source_name(target: str, layout: str) -> str:
    """The source key a target parameter comes from (the inverse of :func:`target_name`)."""
    for source, prefix in KEY_MAPS[layout]:
        if target.startswith(prefix):
            return source + target[len(prefix):]
    return target


def dropped_reason(key: str) -> str | None:
    """Why a source key is dropped on purpose, or None if it is not."""
    return next((reason for pattern, reason in DROPPED_KEYS if re.fullmatch(pattern, key)), None)


@dataclass
class ConversionPlan:
    """Which source key becomes which parameter; what is dropped (with why) and folded."""

    renames: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    lm_head_bias: str | None = None


def _listed(keys: Collection[str], limit: int = 5) -> str:
    names = sorted(keys)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def plan_conversion(source_shapes: Mapping[str, tuple[int, ...]], layout: str,
                    target_shapes: Mapping[str, tuple[int, ...]]) -> ConversionPlan:
    """Map every source key onto exactly one target parameter; HfpruneError on any gap or mismatch."""
    plan = ConversionPlan()
    unknown = []
    for key in source_shapes:
        if key == LM_HEAD_BIAS[layout]:
            plan.lm_head_bias = key
        elif (reason := dropped_reason(key)) is not None:
            plan.dropped[key] = reason
        elif (target := target_name(key, layout)) is not None:
            plan.renames[key] = target
        else:
            unknown.append(key)
    if unknown:
        raise HfpruneError(f"unknown keys in the {layout} checkpoint: {_listed(unknown)}; "
                           f"is it a TinyLLaVA-3.1B (Phi-2 + SigLIP) checkpoint in the {layout} layout?")
    unexpected = [key for key, target in plan.renames.items() if target not in target_shapes]
    if unexpected:
        raise HfpruneError(f"unexpected keys in the {layout} checkpoint (no such parameter in the converted model, "
                           f"whose sizes come from config.json): {_listed(unexpected)}")
    missing = set(target_shapes) - set(plan.renames.values())
    if missing:
        raise HfpruneError(f"missing keys in the {layout} checkpoint: "
                           f"{_listed([source_name(target, layout) for target in missing])} "
                           f"({len(missing)} of the converted model's parameters have no source)")
    for key, target in plan.renames.items():
        _check_shape(key, source_shapes[key], target_shapes[target])
    return plan


def _check_shape(key: str, source: tuple[int, ...], target: tuple[int, ...]) -> None:
    """Shapes agree; the vocabulary rows of the embeddings and lm_head may grow (padded later)."""
    vocab_grows = key.endswith(("embed_tokens.weight", "lm_head.weight")) and source[1:] == target[1:] \
        and source[0] <= target[0]
    if tuple(source) != tuple(target) and not vocab_grows:
        raise HfpruneError(f"shape mismatch for '{key}': the checkpoint has {list(source)}, the converted model "
                           f"(sizes from config.json) expects {list(target)}")


# --------------------------------------------------------------------------- source checkpoint


def resolve_source(source: str | Path, what: str = "source", option: str = "") -> Path:
    """A local directory as is; a Hub id downloaded with ``snapshot_download`` (HfpruneError when offline).

    ``what`` names the checkpoint in errors; ``option`` is the command-line option that takes its directory.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(source))
    except HFValidationError:
        raise HfpruneError(f"{what} '{source}' is neither a directory nor a Hugging Face Hub id") from None
    try:
        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt",
                                                                   "*.model", "*.jinja"]))
    except Exception as error:  # offline, unknown repository, network or disk trouble: all end the same way
        raise HfpruneError(
            f"cannot download '{source}' from the Hugging Face Hub ({type(error).__name__}); download it where "
            f"there is network (`hf download {source} --local-dir DIR`) and pass the local directory DIR"
            f"{f' with {option}' if option else ''}") from error


def read_source_config(directory: Path) -> dict:
    """The source's ``config.json`` as a dict."""
    path = directory / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HfpruneError(f"no config.json in {directory}; give the directory of a TinyLLaVA checkpoint") from None
    except json.JSONDecodeError as error:
        raise HfpruneError(f"{path} is not valid JSON ({error})") from None


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight shards, safetensors preferred: from the index json, else by name."""
    for index_name, pattern in (("model.safetensors.index.json", "model*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = directory / index_name
        if index.is_file():
            files = [directory / name for name in dict.fromkeys(json.loads(index.read_text())["weight_map"].values())]
            absent = [file.name for file in files if not file.is_file()]
            if absent:
                raise HfpruneError(f"{index} lists shards that are not there: {_listed(absent)}")
            return files
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise HfpruneError(f"no weights in {directory}: expected model*.safetensors or pytorch_model*.bin")


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model*.bin`` shard: memory-mapped, or read whole when its (old) format cannot be mapped."""
    import pickle

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as error:
        raise HfpruneError(f"cannot read {path} as a tensor dict ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:200]})") from error


class _Shard:
    """One weight file: its keys, their shapes, and tensors read on demand (``.bin`` memory-mapped)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        if path.suffix == ".bin":
            self._loaded, self._handle = _load_bin(path), None
        else:
            self._loaded, self._handle = None, safe_open(path, framework="pt")

    def keys(self) -> list[str]:
        return list(self._loaded) if self._handle is None else list(self._handle.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        source = self._loaded[key] if self._handle is None else self._handle.get_slice(key)
        return tuple(source.shape if self._handle is None else source.get_shape())

    def get(self, key: str) -> torch.Tensor:
        return self._loaded[key] if self._handle is None else self._handle.get_tensor(key)


def _unchanged(key: str) -> str:
    return key


class _Weights:
    """What :class:`SourceWeights` and :class:`MergedWeights` share: one tensor found by name."""

    def tensors(self, wanted: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor by name."""
        for _, tensor in self.tensors((name,)):
            return tensor
        raise HfpruneError(f"no tensor '{name}' in the checkpoint")


@dataclass
class SourceWeights(_Weights):
    """A checkpoint's tensors, read one shard at a time, under the names ``rename`` gives (None leaves one out)."""

    files: list[Path]
    rename: Callable[[str], str | None] = _unchanged

    def _named(self) -> Iterator[tuple[_Shard, str, str]]:
        """``(shard, stored key, name)`` for every tensor not left out, shard after shard."""
        for path in self.files:
            shard = _Shard(path)
            for key in shard.keys():
                if (name := self.rename(key)) is not None:
                    yield shard, key, name

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every name's shape, without reading the tensors' data."""
        return {name: shard.shape(key) for shard, key, name in self._named()}

    def tensors(self, wanted: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` for every tensor (or only the ``wanted`` names), shard after shard."""
        for shard, key, name in self._named():
            if wanted is None or name in wanted:
                yield name, shard.get(key)


@dataclass
class MergedWeights(_Weights):
    """Several checkpoints' tensors as one (a legacy checkpoint and its separate vision tower)."""

    parts: list[SourceWeights]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every name's shape; HfpruneError for a name two parts give."""
        merged: dict[str, tuple[int, ...]] = {}
        for part in self.parts:
            shapes = part.shapes()
            if twice := merged.keys() & shapes.keys():
                raise HfpruneError(f"keys in more than one checkpoint: {_listed(twice)}")
            merged |= shapes
        return merged

    def tensors(self, wanted: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` part after part."""
        for part in self.parts:
            yield from part.tensors(wanted)


# --------------------------------------------------------------------------- layout and config


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


def _legacy_tower_name(config: Mapping) -> str:
    """The legacy config's ``mm_vision_tower`` ('' when unset); HfpruneError unless it is a SigLIP."""
    tower = str(config.get("mm_vision_tower") or "")
    if tower and "siglip" not in tower.lower():  # the legacy builder picks SigLIP by this very test
        raise HfpruneError(f"unsupported vision tower '{tower}': only TinyLLaVA-3.1B's SigLIP converts")
    return tower


def local_tower_dir(config: Mapping, directory: Path) -> Path | None:
    """The directory ``mm_vision_tower`` names (absolute, or relative to the checkpoint), if it exists."""
    tower = _legacy_tower_name(config)
    if not tower:
        return None
    path = Path(tower) if Path(tower).is_absolute() else directory / tower
    return path if path.is_dir() else None


def source_vision_config(config: Mapping, layout: str, tower_dir: Path | None = None) -> SiglipVisionConfig:
    """The source's SigLIP tower as configured: factory ``vision_config``; legacy the config.json in
    ``tower_dir`` (the tower's directory, when local); else google/siglip-so400m-patch14-384's."""
    if layout == "factory" and config.get("vision_config"):
        vision = config["vision_config"]
        _require(vision.get("model_type"), "siglip_vision_model", "vision tower")
        return SiglipVisionConfig(**_known(SIGLIP_FIELDS, vision))
    if layout == "legacy":
        _legacy_tower_name(config)
        if tower_dir is not None and (tower_dir / "config.json").is_file():
            vision = json.loads((tower_dir / "config.json").read_text())
            return SiglipVisionConfig(**_known(SIGLIP_FIELDS, vision.get("vision_config", vision)))
    return SiglipVisionConfig(**SO400M_384)


def _layer_index(key: str, prefix: str) -> int | None:
    """``i`` for a key ``{prefix}encoder.layers.{i}.…``, else None."""
    start = prefix + "encoder.layers."
    return int(key[len(start):].split(".")[0]) if key.startswith(start) else None


def _layer_count(keys: Collection[str], prefix: str) -> int:
    """How many encoder layers the keys under ``prefix`` hold (the highest index + 1; 0 for none)."""
    indices = [index for key in keys if (index := _layer_index(key, prefix)) is not None]
    return max(indices) + 1 if indices else 0


def llava_config(config: Mapping, layout: str, keys: Collection[str], *, image_token_index: int,
                 vocab_size: int | None = None, vision: SiglipVisionConfig | None = None) -> LlavaConfig:
    """The ``LlavaConfig`` that computes what the source computes (module docstring).

    ``keys`` are the checkpoint's weight names (the legacy tower keeps the layers it holds); ``vision`` is
    :func:`source_vision_config` (so400m's by default); ``vocab_size`` grows the LM's vocabulary.
    """
    text = text_config_from_source(config, layout)
    if vocab_size is not None and vocab_size > text.vocab_size:
        text.vocab_size = vocab_size
    vision = copy.deepcopy(vision) if vision is not None else SiglipVisionConfig(**SO400M_384)
    if layout == "legacy":
        vision.num_hidden_layers = _layer_count(keys, LEGACY_TOWER) or vision.num_hidden_layers - 1
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


# --------------------------------------------------------------------------- the legacy vision tower


@dataclass
class LegacyTower:
    """Where a legacy checkpoint's SigLIP tower comes from: its weights from ``directory`` when ``separate``,
    else from the checkpoint itself; ``directory`` (None when not local) also holds its config.json."""

    directory: Path | None
    separate: bool


def _embedded_tower_keys(keys: Collection[str]) -> list[str]:
    """The legacy checkpoint's own tower weights (buffers that are dropped anyway do not count)."""
    return [key for key in keys if key.startswith(LEGACY_TOWER) and dropped_reason(key) is None]


def find_legacy_tower(config: Mapping, directory: Path, keys: Collection[str],
                      vision_tower: str | Path | None = None) -> LegacyTower:
    """``vision_tower`` when given (it replaces a tower the checkpoint holds, as the legacy code's reload from
    ``mm_vision_tower`` does); else the checkpoint's own tower; else the one ``mm_vision_tower`` names."""
    named = _legacy_tower_name(config)
    if vision_tower is not None:
        tower = LegacyTower(resolve_source(vision_tower, "vision tower", "--vision-tower"), separate=True)
        if _embedded_tower_keys(keys):
            log.warning("note: the vision tower comes from %s; the one in the checkpoint is left out", vision_tower)
        return tower
    if _embedded_tower_keys(keys):
        return LegacyTower(local_tower_dir(config, directory), separate=False)
    if not named:
        raise HfpruneError("the legacy checkpoint holds no vision tower weights and its config.json names no "
                           "mm_vision_tower; pass the SigLIP tower's directory with --vision-tower")
    try:
        return LegacyTower(local_tower_dir(config, directory) or resolve_source(named, "vision tower",
                                                                                "--vision-tower"), separate=True)
    except HfpruneError as error:
        raise HfpruneError(f"the legacy checkpoint holds no vision tower weights; the legacy code loads them from "
                           f"its mm_vision_tower: {error}") from error


def _as_legacy_tower_key(key: str, kept_layers: int) -> str | None:
    """A SigLIP key's legacy-checkpoint name; None for what the legacy tower never loads (the text half, the
    pooling head, encoder layers from ``kept_layers`` on)."""
    if not key.startswith(SIGLIP_VISION) or key.startswith(SIGLIP_VISION + "head."):
        return None
    index = _layer_index(key, SIGLIP_VISION)
    if index is not None and index >= kept_layers:
        return None
    return LEGACY_TOWER + key[len(SIGLIP_VISION):]


def separate_tower_weights(directory: Path, vision: SiglipVisionConfig) -> SourceWeights:
    """The SigLIP checkpoint's tower as the legacy tower loads it, under the legacy checkpoint's names:
    ``vision.num_hidden_layers - 1`` encoder layers, no head (module docstring)."""
    files = weight_files(directory)
    keys = list(SourceWeights(files).shapes())
    unknown = [key for key in keys if not key.startswith((SIGLIP_VISION, *SIGLIP_TEXT))]
    if unknown or not any(key.startswith(SIGLIP_VISION) for key in keys):
        raise HfpruneError(f"the vision tower {directory} is not a SigLIP checkpoint: expected vision_model.* keys"
                           f"{f', found {_listed(unknown)}' if unknown else ''}")
    layers, configured = _layer_count(keys, SIGLIP_VISION), vision.num_hidden_layers
    if layers not in (configured, configured - 1):
        raise HfpruneError(f"the vision tower {directory} holds {layers} encoder layers; with num_hidden_layers "
                           f"{configured} the legacy tower needs {configured} (a whole tower, of which it keeps "
                           f"{configured - 1}) or {configured - 1} (a tower saved after that cut)")
    return SourceWeights(files, rename=lambda key: _as_legacy_tower_key(key, kept_layers=configured - 1))


def _without_tower(key: str) -> str | None:
    """Leaves out a legacy checkpoint's own tower (replaced by a separate one)."""
    return None if key.startswith(LEGACY_TOWER) else key


def check_whole_tower(keys: Collection[str], target_shapes: Mapping[str, tuple[int, ...]],
                      tower: LegacyTower) -> None:
    """HfpruneError naming the tower tensors that are missing (a checkpoint that holds part of its tower)."""
    wanted = {source_name(target, "legacy") for target in target_shapes if target.startswith(TOWER_TARGET)}
    missing = wanted - set(keys)
    if not missing:
        return
    if tower.separate:
        names = [SIGLIP_VISION + key[len(LEGACY_TOWER):] for key in missing]
        raise HfpruneError(f"the vision tower {tower.directory} lacks {_listed(names)} ({len(missing)} of the "
                           f"{len(wanted)} tensors the legacy tower loads)")
    raise HfpruneError(f"the legacy checkpoint holds only part of its vision tower: {_listed(missing)} missing "
                       f"({len(missing)} of {len(wanted)} tensors); pass a whole SigLIP tower with --vision-tower")


# --------------------------------------------------------------------------- tokenizer and processor


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


# --------------------------------------------------------------------------- tensors


def fold_lm_head_bias(weight: torch.Tensor, bias: torch.Tensor, norm_weight: torch.Tensor,
                      norm_bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``W'`` with ``W'·h == W·h + b`` for every output ``h`` of the final LayerNorm (γ, β).

    A LayerNorm's normalised vector sums to zero, so with ``u = 1/γ`` every ``h = γ·n + β`` has
    ``u·h = Σ βᵢ/γᵢ =: k``: then ``b = b (u·h) / k`` and ``W' = W + (b/k) uᵀ``. Checked on random inputs in
    ``dtype``: HfpruneError when rounding would make the fold less exact than the unfolded model.
    """
    if not bool(bias.any()):
        return weight.to(dtype)
    gamma, beta = norm_weight.double(), norm_bias.double()
    if bool((gamma.abs() < 1e-6).any()):
        raise HfpruneError("cannot fold lm_head.bias into lm_head.weight: the final LayerNorm has zero weights")
    u = 1 / gamma
    k = float((beta * u).sum())
    scale = float((beta * u).abs().sum())
    if abs(k) < 1e-3 * max(scale, 1e-12):
        raise HfpruneError("cannot fold lm_head.bias into lm_head.weight: the final LayerNorm's Σβ/γ is ~0")
    folded = weight.to(torch.float32, copy=True).addr_((bias.double() / k).float(), u.float())
    _check_fold(weight, bias, folded, gamma, beta, dtype)
    return folded.to(dtype)


def _check_fold(weight, bias, folded, gamma, beta, dtype, samples: int = 8, rows: int = 512) -> None:
    """The folded rows with the largest bias give the biased logits, no worse than plain ``dtype`` rounding."""
    generator = torch.Generator().manual_seed(0)
    normed = torch.nn.functional.layer_norm(torch.randn(samples, gamma.numel(), generator=generator,
                                                        dtype=torch.float64), (gamma.numel(),))
    hidden = (normed * gamma + beta).float()
    top = bias.float().abs().topk(min(rows, bias.numel())).indices
    exact = hidden @ weight[top].float().T + bias[top].float()
    plain = hidden @ weight[top].to(dtype).float().T + bias[top].to(dtype).float()
    got = hidden @ folded[top].to(dtype).float().T
    allowed = 4 * (plain - exact).abs().max() + 1e-4 * exact.abs().max()
    if (got - exact).abs().max() > allowed:
        advice = "" if dtype == torch.float32 else "; convert with --dtype float32"
        raise HfpruneError(f"cannot fold lm_head.bias into lm_head.weight in {dtype}: the fold loses precision"
                           f"{advice}")


def _pad_vocab(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Vocabulary rows grown to ``rows`` with the mean row (new tokens start as an average token)."""
    if tensor.shape[0] >= rows:
        return tensor
    extra = tensor.float().mean(0, keepdim=True).expand(rows - tensor.shape[0], -1).to(tensor.dtype)
    return torch.cat([tensor, extra])


class ShardWriter:
    """Safetensors shards of at most ``max_bytes`` each, named and indexed as ``save_pretrained`` names them."""

    def __init__(self, directory: Path, max_bytes: int = MAX_SHARD_BYTES):
        self.directory, self.max_bytes = directory, max_bytes
        self.buffer: dict[str, torch.Tensor] = {}
        self.buffer_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0
        self.elements_by_dtype: Counter = Counter()

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; write the shard first when it would overflow."""
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffer_bytes + size > self.max_bytes:
            self._flush()
        self.buffer[name] = tensor.contiguous()
        self.buffer_bytes += size
        self.total_bytes += size
        self.elements_by_dtype[tensor.dtype] += tensor.numel()

    @property
    def main_dtype(self) -> torch.dtype:
        """The dtype most of the written elements have (the checkpoint's ``dtype``)."""
        return self.elements_by_dtype.most_common(1)[0][0]

    def _part(self, number: int) -> Path:
        return self.directory / f"part-{number}.safetensors"

    def _flush(self) -> None:
        from safetensors.torch import save_file

        save_file(self.buffer, self._part(len(self.shards)), metadata={"format": "pt"})
        self.shards.append(list(self.buffer))
        self.buffer, self.buffer_bytes = {}, 0

    def close(self) -> None:
        """Write the last shard, give the shards their final names and write the index (several shards)."""
        if self.buffer:
            self._flush()
        count = len(self.shards)
        if count == 1:
            self._part(0).rename(self.directory / "model.safetensors")
            return
        weight_map = {}
        for number, names in enumerate(self.shards):
            final = f"model-{number + 1:05d}-of-{count:05d}.safetensors"
            self._part(number).rename(self.directory / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def serialized_names(model: LlavaForConditionalGeneration) -> dict[str, str]:
    """Parameter name → the name ``save_pretrained`` writes it under (its own names where it cannot tell)."""
    parameters = dict(model.named_parameters())
    try:
        from transformers.core_model_loading import revert_weight_conversion

        reverted = revert_weight_conversion(model, dict(parameters))
    except Exception:  # a transformers without this (private) helper: its own names load as well
        return {name: name for name in parameters}
    by_identity = {id(tensor): name for name, tensor in parameters.items()}
    names = {by_identity[id(tensor)]: saved for saved, tensor in reverted.items() if id(tensor) in by_identity}
    return names if len(names) == len(parameters) else {name: name for name in parameters}


def resolve_dtype(dtype: str) -> torch.dtype | None:
    """None for ``auto`` (as stored), else the torch dtype."""
    if dtype == "auto":
        return None
    if dtype not in DTYPES:
        raise HfpruneError(f"unknown dtype '{dtype}'; choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _converted(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A private copy (never a view into a memory-mapped file), floating tensors cast to ``dtype``."""
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(dtype=dtype, copy=True)
    return tensor.clone()


def write_weights(weights: SourceWeights | MergedWeights, plan: ConversionPlan, layout: str,
                  model: LlavaForConditionalGeneration, out: Path, dtype: torch.dtype | None, progress: bool,
                  max_shard_bytes: int) -> torch.dtype:
    """Stream the source tensors into ``out`` under their new names; return the dtype most weights have."""
    from tqdm.auto import tqdm

    saved_as = serialized_names(model)
    vocab_rows = model.config.text_config.vocab_size
    writer = ShardWriter(out, max_shard_bytes)
    with tqdm(total=len(plan.renames), desc="converting", unit="tensor", disable=not progress) as bar:
        for key, tensor in weights.tensors(plan.renames):
            target = plan.renames[key]
            if target == "lm_head.weight" and plan.lm_head_bias is not None:
                norm = FINAL_NORM[layout]
                tensor = fold_lm_head_bias(tensor, weights.tensor(plan.lm_head_bias), weights.tensor(f"{norm}.weight"),
                                           weights.tensor(f"{norm}.bias"), dtype or tensor.dtype)
            tensor = _converted(tensor, dtype)
            if target in ("lm_head.weight", "model.language_model.embed_tokens.weight"):
                tensor = _pad_vocab(tensor, vocab_rows)
            writer.add(saved_as[target], tensor)
            bar.update()
    writer.close()
    return writer.main_dtype


# --------------------------------------------------------------------------- entry point


def _check_out(out: Path) -> None:
    """HfpruneError when ``out`` exists and is not an empty directory."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HfpruneError(f"--out {out} is not empty; give a new or empty directory")


def _fresh_partial(out: Path) -> Path:
    """An empty ``OUT.partial`` beside ``out``, renamed to ``out`` once everything is written."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


@dataclass
class Source:
    """A TinyLLaVA checkpoint opened for conversion: its tensors (with a separate legacy tower's) and configs."""

    directory: Path
    config: dict
    layout: str
    weights: SourceWeights | MergedWeights
    shapes: dict[str, tuple[int, ...]]
    text: PhiConfig
    vision: SiglipVisionConfig
    tower: LegacyTower | None = None  # legacy only


def open_source(source: str | Path, layout: str = "auto", vision_tower: str | Path | None = None) -> Source:
    """The checkpoint (local directory or Hub id) with its layout told, its configs read and checked and,
    for a legacy checkpoint, its vision tower found (:func:`find_legacy_tower`)."""
    directory = resolve_source(source)
    config = read_source_config(directory)
    weights = SourceWeights(weight_files(directory))
    shapes = weights.shapes()
    layout = detect_layout(config, shapes) if layout == "auto" else layout
    text = text_config_from_source(config, layout)
    if layout != "legacy":
        if vision_tower is not None:
            raise HfpruneError("--vision-tower is for the legacy layout only; a factory checkpoint holds its tower")
        return Source(directory, config, layout, weights, shapes, text, source_vision_config(config, layout))
    tower = find_legacy_tower(config, directory, shapes, vision_tower)
    vision = source_vision_config(config, layout, tower.directory)
    if tower.separate:
        weights = MergedWeights([SourceWeights(weights.files, rename=_without_tower),
                                 separate_tower_weights(tower.directory, vision)])
        shapes = weights.shapes()
    return Source(directory, config, layout, weights, shapes, text, vision, tower)


def convert_tinyllava(source: str | Path, out: str | Path, *, layout: str = "auto", dtype: str = "auto",
                      vision_tower: str | Path | None = None, progress: bool = True,
                      max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Convert a TinyLLaVA-3.1B checkpoint (local directory or Hub id) into ``out``; return ``out``.

    ``out`` then loads with plain ``LlavaForConditionalGeneration.from_pretrained`` and
    ``LlavaProcessor.from_pretrained``. ``layout``: auto, legacy or factory; ``dtype``: auto (as stored),
    float16, bfloat16 or float32; ``vision_tower`` (legacy only): a SigLIP checkpoint (directory or Hub id) whose
    tower replaces the checkpoint's own; without it a legacy checkpoint's own tower, else the one its
    ``mm_vision_tower`` names (module docstring). Source tensors are read one shard at a time and written in
    shards of at most ``max_shard_bytes``, so memory holds one output shard, never the whole model.
    """
    out = Path(out).expanduser()
    resolved_dtype = resolve_dtype(dtype)
    if layout != "auto":
        check_layout(layout)
    _check_out(out)
    src = open_source(source, layout, vision_tower)
    tokenizer = load_tokenizer(src.directory, src.config, src.text)
    llava = llava_config(src.config, src.layout, src.shapes, vision=src.vision, vocab_size=len(tokenizer),
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava)
    targets = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    if src.tower is not None:
        check_whole_tower(src.shapes, targets, src.tower)
    plan = plan_conversion(src.shapes, src.layout, targets)
    tower_dir = src.tower.directory if src.tower is not None else None
    partial = _fresh_partial(out)
    try:
        llava.dtype = write_weights(src.weights, plan, src.layout, model, partial, resolved_dtype, progress,
                                    max_shard_bytes)
        llava.architectures = ["LlavaForConditionalGeneration"]
        llava.save_pretrained(partial)
        GenerationConfig(bos_token_id=llava.text_config.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id).save_pretrained(partial)
        build_processor(src.directory, src.config, tokenizer, llava, tower_dir).save_pretrained(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out
