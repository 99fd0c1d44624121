"""Tiny random TinyLLaVA checkpoints in the two public layouts, and the real 3.1B checkpoints' names and configs.

Each tiny checkpoint is written from a tiny transformers ``LlavaForConditionalGeneration`` (the *reference*) that
computes what the public code computes, so a conversion must give back the reference's logits:

- legacy (``bczhou/TinyLLaVA-3.1B``): the reference tower has one encoder layer more than the checkpoint and a
  pooling head, and reads ``hidden_states[-2]`` of all patches; the checkpoint holds what the legacy SigLIP tower
  keeps after ``del encoder.layers[-1:]`` and ``head = Identity()``. Phi's tokenizer has no ``<image>`` or pad.
  Without its tower, the legacy code loads the tower from ``mm_vision_tower`` (``bczhou/TinyLLaVA-3.1B-SigLIP``):
  :func:`write_siglip_tower` writes the reference's tower as such a SigLIP checkpoint (``vision_model.*``).
- factory (``tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B``): the reference drops the first patch state (strategy
  ``default``, the factory's ``patch``); the checkpoint adds Phi's ``lm_head.bias``, so the expected logits are the
  reference's plus that bias. Two safetensors shards and an index.

The names are mapped with prefix tables written here independently of ``hfprune.convert``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    PhiConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

from hfprune.models.llava.tiny import build_tokenizer

# transformers' parameter prefix → the public layout's (the public code's module paths).
LEGACY_PREFIXES = (
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.language_model.", "model."),
    ("lm_head.", "lm_head."),
)
FACTORY_PREFIXES = (
    ("model.vision_tower.", "vision_tower._vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1.", "connector._connector.0."),
    ("model.multi_modal_projector.linear_2.", "connector._connector.2."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)

# ---------------------------------------------------------------- the real 3.1B checkpoints (names, shapes, configs)

PHI2 = dict(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32, hidden_act="gelu_new", max_position_embeddings=2048, partial_rotary_factor=0.4,
            rope_theta=10000.0, layer_norm_eps=1e-05, qk_layernorm=False, resid_pdrop=0.1, embd_pdrop=0.0,
            attention_dropout=0.0, initializer_range=0.02, bos_token_id=50256, eos_token_id=50256,
            tie_word_embeddings=False, use_cache=True)
SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=384,
              patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-06, num_channels=3)

# bczhou/TinyLLaVA-3.1B's config.json: a PhiConfig plus the LLaVA codebase's fields (no vision config: the tower's
# config comes from mm_vision_tower).
REAL_LEGACY_CONFIG = {
    "_name_or_path": "bczhou/TinyLLaVA-3.1B", "architectures": ["TinyLlavaPhiForCausalLM"],
    "model_type": "tiny_llava_phi", **PHI2, "torch_dtype": "float16", "transformers_version": "4.37.2",
    "mm_vision_tower": "bczhou/TinyLLaVA-3.1B-SigLIP", "mm_hidden_size": 1152, "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_patch_merge_type": "flat",
    "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "mm_projector_lr": None, "use_mm_proj": True,
    "freeze_mm_mlp_adapter": False, "tune_mm_mlp_adapter": False, "image_aspect_ratio": "pad",
    "tokenizer_model_max_length": 3072, "tokenizer_padding_side": "right", "pad_token": "<|endoftext|>",
}
# tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B's config.json (TinyLlavaConfig.to_dict of the factory).
REAL_FACTORY_CONFIG = {
    "architectures": ["TinyLlavaForConditionalGeneration"], "model_type": "tinyllava",
    "auto_map": {"AutoConfig": "configuration.TinyLlavaConfig",
                 "AutoModelForCausalLM": "modeling_tinyllava_phi.TinyLlavaForConditionalGeneration"},
    "cache_dir": None, "connector_type": "mlp2x_gelu", "hidden_size": 2560, "ignore_index": -100,
    "image_aspect_ratio": "square", "image_token_index": -200, "llm_model_name_or_path": "microsoft/phi-2",
    "num_queries": 128, "num_resampler_layers": 3, "pad_token": "<|endoftext|>", "pad_token_id": 50256,
    "resampler_hidden_size": 768,
    "text_config": {"_name_or_path": "microsoft/phi-2", "architectures": ["PhiForCausalLM"], "model_type": "phi",
                    **PHI2, "torch_dtype": "float16"},
    "tokenizer_model_max_length": 3072, "tokenizer_name_or_path": "microsoft/phi-2",
    "tokenizer_padding_side": "right", "tokenizer_use_fast": False, "torch_dtype": "float16",
    "transformers_version": "4.40.1", "tune_type_connector": "full", "tune_type_llm": "full",
    "tune_type_vision_tower": "frozen", "tune_vision_tower_from_layer": 0, "use_cache": True,
    "vision_config": {"model_type": "siglip_vision_model", "model_name_or_path": "google/siglip-so400m-patch14-384",
                      "model_name_or_path2": "", **SO400M},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "patch", "vision_hidden_size": 1152,
    "vision_model_name_or_path": "google/siglip-so400m-patch14-384", "vision_model_name_or_path2": "",
    "vocab_size": 51200,
}


def _linear(name: str, out_features: int, in_features: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    shapes = {f"{name}.weight": (out_features, in_features)}
    return shapes | ({f"{name}.bias": (out_features,)} if bias else {})


def _norm(name: str, size: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (size,), f"{name}.bias": (size,)}


def phi_shapes(prefix: str, head: str, phi: dict, head_bias: bool) -> dict[str, tuple[int, ...]]:
    """Phi-2's ``PhiForCausalLM`` parameters: ``{prefix}embed_tokens``... and the ``head`` (lm_head)."""
    hidden, inner, vocab = phi["hidden_size"], phi["intermediate_size"], phi["vocab_size"]
    shapes = {f"{prefix}embed_tokens.weight": (vocab, hidden)}
    for i in range(phi["num_hidden_layers"]):
        layer = f"{prefix}layers.{i}."
        for projection in ("q_proj", "k_proj", "v_proj", "dense"):
            shapes |= _linear(f"{layer}self_attn.{projection}", hidden, hidden)
        shapes |= _linear(f"{layer}mlp.fc1", inner, hidden) | _linear(f"{layer}mlp.fc2", hidden, inner)
        shapes |= _norm(f"{layer}input_layernorm", hidden)
    return shapes | _norm(f"{prefix}final_layernorm", hidden) | _linear(head, vocab, hidden, bias=head_bias)


def siglip_shapes(prefix: str, vision: dict, layers: int, pooling_head: bool) -> dict[str, tuple[int, ...]]:
    """A ``SiglipVisionModel``'s parameters under ``{prefix}`` (``...vision_model.``)."""
    hidden, inner, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    shapes = {f"{prefix}embeddings.patch_embedding.weight": (hidden, 3, patch, patch),
              f"{prefix}embeddings.patch_embedding.bias": (hidden,),
              f"{prefix}embeddings.position_embedding.weight": ((vision["image_size"] // patch) ** 2, hidden)}
    for i in range(layers):
        layer = f"{prefix}encoder.layers.{i}."
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= _linear(f"{layer}self_attn.{projection}", hidden, hidden)
        shapes |= _norm(f"{layer}layer_norm1", hidden) | _norm(f"{layer}layer_norm2", hidden)
        shapes |= _linear(f"{layer}mlp.fc1", inner, hidden) | _linear(f"{layer}mlp.fc2", hidden, inner)
    shapes |= _norm(f"{prefix}post_layernorm", hidden)
    if pooling_head:
        shapes |= {f"{prefix}head.probe": (1, 1, hidden),
                   f"{prefix}head.attention.in_proj_weight": (3 * hidden, hidden),
                   f"{prefix}head.attention.in_proj_bias": (3 * hidden,)}
        shapes |= _linear(f"{prefix}head.attention.out_proj", hidden, hidden) | _norm(f"{prefix}head.layernorm", hidden)
        shapes |= _linear(f"{prefix}head.mlp.fc1", inner, hidden) | _linear(f"{prefix}head.mlp.fc2", hidden, inner)
    return shapes


def legacy_weight_shapes(phi: dict = PHI2, vision: dict = SO400M) -> dict[str, tuple[int, ...]]:
    """bczhou/TinyLLaVA-3.1B's tensors: ``TinyLlavaPhiForCausalLM`` (lm_head without bias) whose SigLIP tower lost
    its last layer and its head."""
    shapes = phi_shapes("model.", "lm_head", phi, head_bias=False)
    shapes |= siglip_shapes("model.vision_tower.vision_tower.vision_model.", vision,
                            vision["num_hidden_layers"] - 1, pooling_head=False)
    return shapes | _linear("model.mm_projector.0", phi["hidden_size"], vision["hidden_size"]) \
        | _linear("model.mm_projector.2", phi["hidden_size"], phi["hidden_size"])


def factory_weight_shapes(phi: dict = PHI2, vision: dict = SO400M) -> dict[str, tuple[int, ...]]:
    """tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B's tensors: ``PhiForCausalLM`` (lm_head with bias), a full
    ``SiglipVisionModel`` (head included) and the ``mlp2x_gelu`` connector."""
    shapes = phi_shapes("language_model.model.", "language_model.lm_head", phi, head_bias=True)
    shapes |= siglip_shapes("vision_tower._vision_tower.vision_model.", vision, vision["num_hidden_layers"],
                            pooling_head=True)
    return shapes | _linear("connector._connector.0", phi["hidden_size"], vision["hidden_size"]) \
        | _linear("connector._connector.2", phi["hidden_size"], phi["hidden_size"])


# ---------------------------------------------------------------- tiny checkpoints

TINY_PHI = dict(PHI2, vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, partial_rotary_factor=0.5, resid_pdrop=0.0,
                bos_token_id=0, eos_token_id=0)  # <|endoftext|> is token 0 of the tiny tokenizers
TINY_SIGLIP = dict(SO400M, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                   image_size=30, patch_size=7)  # 4×4 patches, floored like 384/14 → 27×27
TINY_TOWER_DIR = "siglip-so400m-tiny"  # the legacy config's mm_vision_tower, relative to the checkpoint


@dataclass
class TinyCheckpoint:
    """A written tiny checkpoint and what its conversion must give."""

    directory: Path
    reference: LlavaForConditionalGeneration
    tensors: dict[str, torch.Tensor]   # source key → tensor, as written
    origin: dict[str, str]             # converted parameter name → the source key it must equal
    lm_head_bias: torch.Tensor | None  # added to the reference's logits (factory)

    def with_tower(self, tower: "TinyTower") -> "TinyCheckpoint":
        """This checkpoint with its vision tower taken from ``tower``."""
        origin = {name: key for name, key in self.origin.items() if not name.startswith("model.vision_tower.")}
        return TinyCheckpoint(self.directory, self.reference, self.tensors | tower.tensors, origin | tower.origin,
                              self.lm_head_bias)


@dataclass
class TinyTower:
    """A written tiny SigLIP checkpoint: its tensors and which converted parameter each must become."""

    directory: Path
    tensors: dict[str, torch.Tensor]  # vision_model.* (and a SiglipModel's text half) → tensor, as written
    origin: dict[str, str]            # converted tower parameter → its SigLIP key


def phi_like_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE like Phi-2's: ``<|endoftext|>`` as bos/eos/unk, no pad token and no ``<image>``."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["What is in the image? A red cat on a blue mat. USER: ASSISTANT:"] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", model_max_length=2048)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (no zero biases, LayerNorm weights around 1), so each tensor is told apart."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1 + 0.05)
            else:
                for parameter in module.parameters(recurse=False):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def reference_model(image_token_index: int, strategy: str, seed: int = 0,
                    vocab_size: int = TINY_PHI["vocab_size"]) -> LlavaForConditionalGeneration:
    """A tiny random Llava reading ``hidden_states[-2]`` of a 3-layer SigLIP tower (with head)."""
    config = LlavaConfig(vision_config=SiglipVisionConfig(**TINY_SIGLIP),
                         text_config=PhiConfig(**TINY_PHI | {"vocab_size": vocab_size}),
                         image_token_index=image_token_index, projector_hidden_act="gelu",
                         image_seq_length=16 - (strategy == "default"), vision_feature_layer=-2,
                         vision_feature_select_strategy=strategy, tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(config).eval()
    _randomise(model, seed)
    return model


def _renamed(name: str, prefixes) -> str:
    source, target = next((s, t) for s, t in prefixes if name.startswith(s))
    return target + name[len(source):]


def _write_preprocessor(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    settings = {"image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 30, "width": 30},
                "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (directory / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def _save(tensors: dict[str, torch.Tensor], directory: Path, weights_format: str) -> None:
    """One weights file, ``model.safetensors`` or (``bin``) ``pytorch_model.bin``."""
    directory.mkdir(parents=True, exist_ok=True)
    if weights_format == "bin":
        torch.save(tensors, directory / "pytorch_model.bin")
    else:
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _legacy_cut(reference: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The reference's parameters less what the legacy tower drops: its last encoder layer and its head."""
    last = f"model.vision_tower.encoder.layers.{TINY_SIGLIP['num_hidden_layers'] - 1}."
    return {name: tensor for name, tensor in reference.state_dict().items()
            if not name.startswith((last, "model.vision_tower.head."))}


def write_legacy_checkpoint(directory: Path, weights_format: str = "safetensors", seed: int = 0,
                            with_tower: bool = True) -> TinyCheckpoint:
    """A tiny ``bczhou/TinyLLaVA-3.1B``: one file of weights, its SigLIP config in ``mm_vision_tower``;
    ``with_tower=False``: no tower weights (the legacy code loads them from ``mm_vision_tower``)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = phi_like_tokenizer()
    tokenizer.save_pretrained(directory)
    reference = reference_model(image_token_index=len(tokenizer), strategy="full", seed=seed)  # <image> comes next
    kept = _legacy_cut(reference)
    tensors = {_renamed(name, LEGACY_PREFIXES): tensor.clone() for name, tensor in kept.items()}
    assert set(tensors) == set(legacy_weight_shapes(TINY_PHI, TINY_SIGLIP)), "tiny legacy names = real names"
    if not with_tower:
        kept = {name: tensor for name, tensor in kept.items() if not name.startswith("model.vision_tower.")}
        tensors = {key: tensor for key, tensor in tensors.items() if not key.startswith("model.vision_tower.")}
    _save(tensors, directory, weights_format)
    _write_json(directory / "config.json", REAL_LEGACY_CONFIG | TINY_PHI | {
        "mm_vision_tower": TINY_TOWER_DIR, "mm_hidden_size": TINY_SIGLIP["hidden_size"], "torch_dtype": "float32"})
    tower = directory / TINY_TOWER_DIR
    _write_preprocessor(tower)
    _write_json(tower / "config.json", {"model_type": "siglip_vision_model", **TINY_SIGLIP})
    origin = {name: _renamed(name, LEGACY_PREFIXES) for name in kept}
    return TinyCheckpoint(directory, reference, tensors, origin, lm_head_bias=None)


def write_siglip_tower(directory: Path, reference: LlavaForConditionalGeneration, form: str = "whole",
                       weights_format: str = "safetensors") -> TinyTower:
    """The reference's SigLIP tower as a SigLIP checkpoint in ``directory`` (``vision_model.*`` keys, config.json):

    - ``whole``: a ``SiglipVisionModel`` (all 3 layers and the pooling head);
    - ``cut``: one saved after the legacy cut (2 layers, no head; its config still says 3);
    - ``siglip``: a whole ``SiglipModel`` (``model_type`` siglip): the vision half plus a text half.
    """
    tower = {"vision_model." + name[len("model.vision_tower."):]: tensor.clone()
             for name, tensor in reference.state_dict().items() if name.startswith("model.vision_tower.")}
    kept = {name for name in _legacy_cut(reference) if name.startswith("model.vision_tower.")}
    origin = {name: "vision_model." + name[len("model.vision_tower."):] for name in kept}
    tensors = {key: tensor for key, tensor in tower.items() if form != "cut" or key in origin.values()}
    config = {"model_type": "siglip_vision_model", **TINY_SIGLIP}
    if form == "siglip":
        generator = torch.Generator().manual_seed(7)
        tensors |= {"text_model.embeddings.token_embedding.weight": torch.randn(50, 32, generator=generator),
                    "text_model.head.weight": torch.randn(32, 32, generator=generator),
                    "logit_scale": torch.ones(1), "logit_bias": torch.zeros(1)}
        config = {"model_type": "siglip", "vision_config": config, "text_config": {"model_type": "siglip_text_model"}}
    _save(tensors, directory, weights_format)
    _write_json(directory / "config.json", config)
    return TinyTower(directory, tensors, origin)


def write_factory_checkpoint(directory: Path, seed: int = 1,
                             vocab_size: int = TINY_PHI["vocab_size"]) -> TinyCheckpoint:
    """A tiny ``tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B``: two shards + index, lm_head with a bias."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(directory)
    reference = reference_model(tokenizer.image_token_id, strategy="default", seed=seed, vocab_size=vocab_size)
    tensors = {_renamed(name, FACTORY_PREFIXES): tensor.clone() for name, tensor in reference.state_dict().items()}
    bias = torch.randn(vocab_size, generator=torch.Generator().manual_seed(seed)) * 0.5
    tensors["language_model.lm_head.bias"] = bias
    tiny_phi = TINY_PHI | {"vocab_size": vocab_size}
    assert set(tensors) == set(factory_weight_shapes(tiny_phi, TINY_SIGLIP)), "tiny factory names = real names"
    language = {k: v for k, v in tensors.items() if k.startswith("language_model.")}
    shards = {"model-00001-of-00002.safetensors": language,
              "model-00002-of-00002.safetensors": {k: v for k, v in tensors.items() if k not in language}}
    for name, part in shards.items():
        save_file(part, directory / name, metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(directory / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": {
        key: name for name, part in shards.items() for key in part}})
    config = REAL_FACTORY_CONFIG | {
        "hidden_size": TINY_PHI["hidden_size"], "vocab_size": vocab_size, "torch_dtype": "float32",
        "pad_token": "<pad>", "pad_token_id": tokenizer.pad_token_id, "vision_hidden_size": TINY_SIGLIP["hidden_size"],
        "text_config": REAL_FACTORY_CONFIG["text_config"] | tiny_phi | {"torch_dtype": "float32"},
        "vision_config": REAL_FACTORY_CONFIG["vision_config"] | TINY_SIGLIP}
    _write_json(directory / "config.json", config)
    _write_preprocessor(directory)
    origin = {name: _renamed(name, FACTORY_PREFIXES) for name in reference.state_dict()}
    return TinyCheckpoint(directory, reference, tensors, origin, lm_head_bias=bias)
