"""Structured pruning of transformers models found by the walk: decoder LLMs (GQA, fused qkv/gate_up), the language
model inside a VLM and ViT-like encoders — gated == masked == physically pruned outputs, native checkpoints where
every layer keeps the same widths, own-code ones otherwise, both reloading with plain transformers in a fresh
process.

Expected widths come from the tiny configs (tests/tiny_models.py: 4 query heads in 2 key/value groups of width 16,
FFN 96, 3 layers; vision towers 2 heads of 16, FFN 48, 2 layers) and the ratios; which checkpoints can be native
comes from transformers' code: CLIP's, SigLIP's and Qwen2.5-VL's text attention derive head_dim from hidden_size /
heads, so removing heads needs own code there; Llama-like, Phi-3, DeiT and DINOv2 attention read config.head_dim."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from fresh_process import assert_structured_reload
from tiny_models import ARCHITECTURES, UNSEEN, build_unseen, calibration_batches, token_ids
from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.models.structure import auto_class_name
from hfprune.models.transformer.groups import block_groups
from hfprune.models.transformer.surgery import checkpoint_kind, prune_model
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.structured.gates import UnitGates
from hfprune.pruning.structured.groups import parameter_masks
from hfprune.pruning.structured.masks import structured_mask

LMS = ("llama", "qwen3", "gemma3_text", "phi3", "qwen2_5_vl", "llava")
ENCODERS = ("deit", "dinov2", "siglip_vision", "clip_vision", "vit")
DERIVED_HEAD_DIM = {"qwen2_5_vl", "siglip_vision", "clip_vision"}  # head_dim = hidden_size // heads in their code

UNIFORM = {"heads": 0.5, "ffn": 0.5}
LM_DEPTH = {"kv_groups": 0.5, "layers": 0.34}   # 1 of 2 KV groups (2 query heads) and 1 of 3 layers
ENCODER_DEPTH = {"heads": 0.5, "layers": 0.5}
LM_PER_LAYER = {"heads": 0.5, "layers.1.heads": 0, "ffn": 0.25, "layers.0.ffn": 0.5, "layers": 0.34}
ENCODER_PER_LAYER = {"heads": 0.5, "layers.1.heads": 0, "ffn": 0.25, "layers.0.ffn": 0.5}


@functools.cache
def _dense(name: str):
    return build_unseen(name) if name in UNSEEN else ARCHITECTURES[name].build()


def _batch(name: str, model):
    if name in UNSEEN:
        ids, mask = token_ids(2, 12)
        return {"input_ids": ids, "attention_mask": mask}
    return calibration_batches(ARCHITECTURES[name], model, batches=1)[0]


def _out(model, batch) -> torch.Tensor:
    with torch.no_grad():
        output = model(**batch)
    return output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state


def _is_lm(name: str) -> bool:
    return name in UNSEEN or ARCHITECTURES[name].kind != "vision_encoder"


def _ratios(name: str, case: str) -> dict:
    lm = _is_lm(name)
    if name == "olmo2":  # its q/k norms span all heads: no head groups (see the test below)
        return {"uniform": {"ffn": 0.5}, "per_layer": {"ffn": 0.25, "layers.0.ffn": 0.5, "layers": 0.34}}[case]
    return {"uniform": UNIFORM, "depth": LM_DEPTH if lm else ENCODER_DEPTH,
            "per_layer": LM_PER_LAYER if lm else ENCODER_PER_LAYER}[case]


def _three_ways(name: str, case: str):
    """(dense output, gated, weight-masked, physically pruned output, pruned model, mask)."""
    model = _dense(name)
    groups = block_groups(model)
    mask = structured_mask(model, groups, _ratios(name, case), "l1")
    batch = _batch(name, model)
    with UnitGates(model, groups) as gates:
        gates.set_mask(mask)
        gated = _out(model, batch)
    masked = copy.deepcopy(model)
    MaskedParameters(masked, parameter_masks(groups, mask, dict(masked.named_parameters()))).apply()
    pruned = prune_model(model, groups, mask)
    return _out(model, batch), gated, _out(masked, batch), _out(pruned, batch), pruned, mask, batch


@pytest.mark.parametrize("name", [*ARCHITECTURES, *UNSEEN])
@pytest.mark.parametrize("case", ["uniform", "per_layer"])
def test_gated_equals_masked_equals_physically_pruned_on_every_architecture(name, case):
    dense, gated, masked, physical, pruned, _, _ = _three_ways(name, case)
    assert (dense - gated).abs().max() > 1e-3  # the mask changes the model
    torch.testing.assert_close(masked, gated, atol=1e-5, rtol=0)
    torch.testing.assert_close(physical, gated, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in _dense(name).parameters())


@pytest.mark.parametrize("name", [*LMS, *ENCODERS])
def test_groups_follow_the_config(name):
    model = _dense(name)
    groups = block_groups(model)
    config = model.config.get_text_config(decoder=True) if _is_lm(name) else \
        getattr(model.config, "vision_config", None) or model.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    assert groups["layers"].size == layers and len(groups["layers"].modules) == layers
    params = dict(model.named_parameters())
    for i in range(layers):
        head_group = groups[f"layers.{i}.heads"]
        assert head_group.size == heads and head_group.partitions == (kv if kv < heads else 1)
        assert (f"layers.{i}.kv_groups" in groups) == (kv < heads)
        ffn = getattr(config, "intermediate_size", None) or int(config.hidden_size * config.mlp_ratio)
        assert groups[f"layers.{i}.ffn"].size == ffn
        for group in (head_group, groups[f"layers.{i}.ffn"]):
            for piece in group.owned:  # every slice lies inside its parameter
                length = params[piece.param].shape[piece.dim]
                assert piece.offset + group.size * piece.span <= length, (piece, length)


@pytest.mark.parametrize("name", LMS)
def test_kv_groups_and_layers_give_a_native_gqa_checkpoint(name):
    dense, gated, masked, physical, pruned, mask, _ = _three_ways(name, "depth")
    torch.testing.assert_close(physical, gated, atol=1e-5, rtol=0)
    torch.testing.assert_close(masked, gated, atol=1e-5, rtol=0)
    text = pruned.config.get_text_config(decoder=True)
    assert text.num_hidden_layers == 2
    dense_text = _dense(name).config.get_text_config(decoder=True)
    if hasattr(dense_text, "layer_types"):
        kept = list(mask["layers"])
        assert text.layer_types == [dense_text.layer_types[i] for i in kept]
    if name in DERIVED_HEAD_DIM:
        assert checkpoint_kind(pruned.config) == "own_code"
    else:
        assert checkpoint_kind(pruned.config) == "native"
        assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (2, 1, 16)


@pytest.mark.parametrize("name", [*LMS, *ENCODERS])
def test_uniform_widths_are_native_unless_the_config_derives_head_dim(name):
    pruned = _three_ways(name, "uniform")[4]
    config = pruned.config.get_text_config(decoder=True) if _is_lm(name) else pruned.config
    if name in DERIVED_HEAD_DIM:
        assert checkpoint_kind(pruned.config) == "own_code"
        assert type(pruned).__name__ == "Pruned" + type(_dense(name)).__name__
        return
    assert checkpoint_kind(pruned.config) == "native" and type(pruned) is type(_dense(name))
    heads = 2 if _is_lm(name) else 1
    assert (config.num_attention_heads, config.head_dim) == (heads, 16)
    if _is_lm(name):
        assert (config.num_key_value_heads, config.intermediate_size) == (2, 48)


def _checkpoint(name, case, tmp_path):
    _, _, _, physical, pruned, _, batch = _three_ways(name, case)
    folder = tmp_path / f"{name}-{case}"
    pruned.save_pretrained(folder)
    text = pruned.config.get_text_config(decoder=True)
    prefix = "text." if text is not pruned.config else ""
    config = {f"{prefix}num_hidden_layers": text.num_hidden_layers,
              f"{prefix}num_attention_heads": text.num_attention_heads}
    return {"path": folder, "auto_class": auto_class_name(_dense(name)), "model_class": type(pruned).__name__,
            "own_code": checkpoint_kind(pruned.config) == "own_code", "config": config, "inputs": batch,
            "outputs": physical}


def test_pruned_checkpoints_reload_with_plain_transformers_in_a_fresh_process(tmp_path):
    checkpoints = [_checkpoint(name, case, tmp_path) for name in (*LMS, *ENCODERS)
                   for case in ("uniform", "per_layer")]
    checkpoints += [_checkpoint(name, "depth", tmp_path) for name in ("llama", "gemma3_text", "clip_vision")]
    assert {c["own_code"] for c in checkpoints} == {True, False}
    assert all(c["own_code"] for c in checkpoints if "per_layer" in c["path"].name)
    assert_structured_reload(tmp_path, checkpoints)


def test_a_per_layer_model_generates_as_the_masked_model_does():
    model = _dense("llama")
    groups = block_groups(model)
    mask = structured_mask(model, groups, LM_PER_LAYER, "l2")
    pruned = prune_model(model, groups, mask)
    masked = copy.deepcopy(model)
    MaskedParameters(masked, parameter_masks(groups, mask, dict(masked.named_parameters()))).apply()
    ids, attention = token_ids(2, 6)
    settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(pruned.generate(input_ids=ids, attention_mask=attention, **settings),
                       masked.generate(input_ids=ids, attention_mask=attention, **settings))


def test_a_per_layer_model_has_groups_of_its_widths_and_prunes_further():
    model, adapter = _dense("qwen3"), get_adapter("causal_lm")
    first = adapter.prune_physically(model, structured_mask(model, block_groups(model), LM_PER_LAYER, "l1"))
    groups = adapter.groups(first.config)  # from the config alone, as a study reads it
    kept_layers = sorted(structured_mask(model, block_groups(model), LM_PER_LAYER, "l1")["layers"])
    heads = [2 if old != 1 else 4 for old in kept_layers]
    assert [groups[f"layers.{i}.heads"].size for i in range(2)] == heads
    assert [groups[f"layers.{i}.ffn"].size for i in range(2)] == [48 if old == 0 else 72 for old in kept_layers]
    batch = _batch("qwen3", first)
    second_mask = structured_mask(first, groups, {"ffn": 0.5}, "l1")
    with UnitGates(first, groups) as gates:
        gates.set_mask(second_mask)
        gated = _out(first, batch)
    second = adapter.prune_physically(first, second_mask)
    torch.testing.assert_close(_out(second, batch), gated, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ratios, message", [
    ({"heads": 1.0}, "removes every unit"),
    ({"heads": 0.25}, "multiple of 2"),
    ({"kv_groups": 1.0}, "removes every unit"),
    ({"layers": 1.0}, "removes every unit"),
    ({"layers.0.heads": 0.5, "layers.0.kv_groups": 0.5}, "prune the same weights"),
    ({"neurons": 0.5}, "unknown structure 'neurons'"),
])
def test_impossible_ratios_are_one_line_before_any_work(ratios, message):
    model = _dense("llama")
    with pytest.raises(HfpruneError, match=message) as error:
        structured_mask(model, block_groups(model), ratios, "l1")
    assert "\n" not in str(error.value)


def test_heads_normalised_together_are_not_offered():
    """OLMo-2 normalises the queries (and keys) of all heads together (q_norm over num_heads * head_dim): removing a
    head changes the others, so no head can go exactly; its FFN neurons and layers still can."""
    groups = block_groups(_dense("olmo2"))
    assert {group.kind for group in groups.values()} == {"ffn", "layers"}


def test_study_masks_keep_gqa_heads_even_per_key_value_group():
    from hfprune.pruning.structured.samplers import count_combinations, exhaustive, sample

    groups = block_groups(_dense("llama"))
    ratios = {"layers.0.heads": 0.5}  # 4 query heads in 2 key/value groups: one of each pair of heads stays
    assert count_combinations(groups, ratios) == 4
    everything = [candidate.mask["layers.0.heads"] for candidate in exhaustive(groups, ratios, "s")]
    assert everything == [(0, 2), (0, 3), (1, 2), (1, 3)]
    for candidate in sample(groups, {"heads": 0.5, "ffn": 0.5}, "s", num=5, seed=2):
        for i in range(3):
            kept = candidate.mask[f"layers.{i}.heads"]
            assert len(kept) == 2 and kept[0] in (0, 1) and kept[1] in (2, 3)
