"""The structural layer: a model's kind from transformers' Auto mappings, its blocks and the roles of their Linears
found by walking it, and the default unstructured targets that follow — on tiny models of many architectures.

Expected values come from each architecture's config (layer and head counts) and from transformers itself
(``get_decoder()`` is the language model; the Auto class builds the same class), not from the walk."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn
from transformers import PretrainedConfig

from tiny_models import ARCHITECTURES, UNSEEN, build_unseen
from hfprune.errors import HfpruneError
from hfprune.models.generic.vision_language import VisionLanguageAdapter
from hfprune.models.llava.layout import PHI_DECODER_LINEARS
from hfprune.models.llava.tiny import build_tiny_llava
from hfprune.models.structure import (
    ATTENTION_ROLES,
    MLP_ROLES,
    auto_class_name,
    block_roles,
    find_blocks,
    model_kind,
)
from hfprune.pruning.unstructured.targets import list_targets, select_targets

NAMES = list(ARCHITECTURES)


@functools.cache
def built(name: str) -> nn.Module:
    return ARCHITECTURES[name].build()


def sub_config(model: nn.Module, kind: str) -> PretrainedConfig:
    """The config whose numbers the blocks follow: the text config of a language model, the vision one of an
    encoder."""
    config = model.config
    if kind == "vision_encoder":
        return getattr(config, "vision_config", None) or config
    return getattr(config, "text_config", None) or config


# -- kind and Auto class --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_kind_and_auto_class_come_from_transformers_mappings(name):
    arch, model = ARCHITECTURES[name], built(name)
    assert model_kind(model.config) == arch.kind
    assert model_kind(model.config.model_type) == arch.kind
    mapped = getattr(transformers, auto_class_name(model))._model_mapping[type(model.config)]
    assert type(model) in (mapped if isinstance(mapped, (tuple, list)) else (mapped,))


def test_kind_of_models_outside_the_three_kinds_is_one_clear_error():
    for model_type in ("resnet", "t5", "convnext"):
        with pytest.raises(HfpruneError, match=f"'{model_type}' model is not a causal LM.*targets"):
            model_kind(model_type)
    with pytest.raises(HfpruneError, match="not a model_type transformers knows"):
        model_kind("no_such_model")


# -- blocks and roles -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_blocks_roles_and_head_counts_follow_the_sub_models_config(name):
    arch, model = ARCHITECTURES[name], built(name)
    config = sub_config(model, arch.kind)
    blocks = find_blocks(model)
    assert blocks.kind == arch.kind and blocks.config is config
    assert len(blocks) == config.num_hidden_layers and len(blocks.roles) == config.num_hidden_layers
    heads = config.num_attention_heads
    key_value = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if arch.kind != "vision_encoder":
        assert key_value < heads  # the tiny models exercise grouped-query attention
    for index, roles in enumerate(blocks.roles):
        assert roles.index == index and roles.others == ()
        assert (roles.heads.attention, roles.heads.key_value, roles.heads.dim) == (heads, key_value, head_dim)
        assert roles.hidden_size == config.hidden_size
        linears = {name: module for name, module in blocks.layers[index].named_modules()
                   if isinstance(module, nn.Linear)}
        assert set(roles.roles.values()) == set(linears)
        shape = {role: tuple(linears[module].weight.shape) for role, module in roles.roles.items()}
        attention, kv_width = heads * head_dim, key_value * head_dim
        if "qkv" in shape:
            assert shape["qkv"] == (attention + 2 * kv_width, config.hidden_size)
        else:
            assert (shape["q"], shape["k"], shape["v"]) == (
                (attention, config.hidden_size), (kv_width, config.hidden_size), (kv_width, config.hidden_size))
        assert shape["o"] == (config.hidden_size, attention)
        assert shape["down"] == (config.hidden_size, roles.intermediate_size)
        mlp = set(roles.mlp)
        assert mlp in ({"gate", "up", "down"}, {"gate_up", "down"}, {"up", "down"})
        assert set(roles.attention) | mlp == set(roles.roles)
        if getattr(config, "intermediate_size", None):
            assert roles.intermediate_size == config.intermediate_size


# What each architecture's modeling code names its Linears (an oracle read off transformers, not off the walk).
LLAMA_NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
               "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
EXPECTED_NAMES = {
    **{name: LLAMA_NAMES for name in NAMES if ARCHITECTURES[name].kind != "vision_encoder"},
    "phi3": {"qkv": "self_attn.qkv_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_up_proj",
             "down": "mlp.down_proj"},
    **{name: {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj",
              "up": "mlp.fc1", "down": "mlp.fc2"} for name in ("vit", "deit", "dinov2")},
    **{name: {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
              "up": "mlp.fc1", "down": "mlp.fc2"} for name in ("siglip_vision", "clip_vision")},
}


@pytest.mark.parametrize("name", NAMES)
def test_roles_name_the_modules_the_modeling_code_uses(name):
    for roles in find_blocks(built(name)).roles:
        assert dict(roles.roles) == EXPECTED_NAMES[name]


class OpaqueBlock(nn.Module):
    """A block whose module names say nothing: attention ``a`` registers k, o, q, v (GQA, heads × dim ≠ hidden, as
    Gemma's); MLP ``b`` registers down, then the two input Linears (gate and up: registration order decides)."""

    def __init__(self, hidden=24, heads=4, key_value=2, dim=4, inner=40):
        super().__init__()
        self.a = nn.Module()
        self.a.l0 = nn.Linear(hidden, key_value * dim)
        self.a.l1 = nn.Linear(heads * dim, hidden)
        self.a.l2 = nn.Linear(hidden, heads * dim)
        self.a.l3 = nn.Linear(hidden, key_value * dim)
        self.b = nn.Module()
        self.b.l0 = nn.Linear(inner, hidden)
        self.b.l1 = nn.Linear(hidden, inner)
        self.b.l2 = nn.Linear(hidden, inner)


def test_roles_come_from_shapes_when_names_say_nothing():
    config = PretrainedConfig(hidden_size=24, num_attention_heads=4, num_key_value_heads=2, head_dim=4)
    roles = block_roles(OpaqueBlock(), config, index=5)
    assert roles.index == 5 and roles.heads.attention == 4 and roles.heads.key_value == 2
    assert dict(roles.roles) == {"q": "a.l2", "k": "a.l0", "v": "a.l3", "o": "a.l1",
                                 "gate": "b.l1", "up": "b.l2", "down": "b.l0"}
    assert roles.intermediate_size == 40 and roles.role_of("a.l1") == "o" and roles.role_of("nothing") is None
    fused = nn.Module()
    fused.attn = nn.Module()
    fused.attn.w = nn.Linear(24, (4 + 2 * 2) * 4)
    fused.attn.out = nn.Linear(16, 24)
    fused.ffn = nn.Module()
    fused.ffn.x = nn.Linear(24, 80)
    fused.ffn.y = nn.Linear(40, 24)
    roles = block_roles(fused, config)
    assert dict(roles.roles) == {"qkv": "attn.w", "o": "attn.out", "gate_up": "ffn.x", "down": "ffn.y"}
    assert set(ATTENTION_ROLES) >= set(roles.attention) and set(MLP_ROLES) >= set(roles.mlp)
    flat = nn.Module()  # Linears directly in the block, no attention or MLP module
    for position, (inputs, outputs) in enumerate([(24, 16), (24, 8), (24, 8), (16, 24), (24, 40), (40, 24)]):
        flat.add_module(f"l{position}", nn.Linear(inputs, outputs))
    roles = block_roles(flat, config)
    assert dict(roles.roles) == {"q": "l0", "k": "l1", "v": "l2", "o": "l3", "up": "l4", "down": "l5"}


# -- default targets ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_default_targets_are_exactly_the_block_linears(name):
    arch, model = ARCHITECTURES[name], built(name)
    config = sub_config(model, arch.kind)
    targets = select_targets(model)
    assert all(isinstance(module, nn.Linear) for module in targets.values())
    if arch.kind == "vision_encoder":  # q, k, v, o, fc1, fc2 of every encoder layer; no classifier, no pooling head
        assert len(targets) == 6 * config.num_hidden_layers
        others = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)} - set(targets)
        path = find_blocks(model).path
        assert not any(other.startswith(f"{path}.") for other in others)  # the classifier, a pooling head
    else:  # every Linear of the language model (transformers' get_decoder()), and nothing else
        decoder = model.get_decoder()
        inside = {id(module) for module in decoder.modules()}
        expected = [name for name, module in model.named_modules()
                    if isinstance(module, nn.Linear) and id(module) in inside]
        assert list(targets) == expected
        per_block = 4 if name == "phi3" else 7
        assert len(targets) == per_block * config.num_hidden_layers
        assert all(module is not model.get_output_embeddings() for module in targets.values())
    listed = list_targets(model)
    assert [target.name for target in listed] == list(targets)
    assert [target.shape for target in listed] == [tuple(module.weight.shape) for module in targets.values()]
    assert sorted({target.block for target in listed}) == list(range(config.num_hidden_layers))
    assert {target.role for target in listed} == set(EXPECTED_NAMES[name])


def test_user_regexes_win_over_the_walk():
    model = built("llava")
    vision = select_targets(model, r"model\.vision_tower\..*\.fc1")
    assert list(vision) == [f"model.vision_tower.encoder.layers.{i}.mlp.fc1" for i in range(2)]
    without_mlp = select_targets(model, ignore=[r".*\.mlp\..*"])
    assert without_mlp and all(".self_attn." in name for name in without_mlp)
    listed = list_targets(model, r"model\.multi_modal_projector\..*")
    assert [(target.block, target.role) for target in listed] == [(None, None), (None, None)]
    with pytest.raises(HfpruneError, match=r"no Linear layer matches targets \['nothing'\].*change the regexes"):
        select_targets(model, "nothing")
    with pytest.raises(HfpruneError, match="no Linear layer matches the Linears of the model's blocks and not ignore"):
        select_targets(model, ignore=".*")


def test_a_tiny_llava_gets_todays_targets(tmp_path):
    """A TinyLLaVA (Phi LM in a Llava): the walk finds exactly the Phi decoder's q, k, v, dense, fc1, fc2."""
    model = VisionLanguageAdapter().load_pretrained(str(build_tiny_llava(tmp_path / "llava", num_layers=3)))
    walked = select_targets(model)
    assert list(walked) == list(select_targets(model, PHI_DECODER_LINEARS))
    assert len(walked) == 3 * 6
    roles = find_blocks(model).roles[0]
    assert dict(roles.roles) == {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                                 "o": "self_attn.dense", "up": "mlp.fc1", "down": "mlp.fc2"}


class NoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)


def test_a_model_without_recognisable_blocks_is_one_clear_error():
    with pytest.raises(HfpruneError, match="NoBlocks has no transformers config.*targets"):
        select_targets(NoBlocks())
    config = transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                      num_attention_heads=2)
    model = transformers.LlamaForCausalLM(config)
    model.model.layers = nn.ModuleList([nn.LayerNorm(8)])  # a stack with no Linear in it
    with pytest.raises(HfpruneError, match="found no list of transformer blocks belonging to the LlamaConfig"):
        find_blocks(model)
    assert list_targets(NoBlocks(), "proj") and list_targets(NoBlocks(), "proj")[0].block is None


# -- an architecture hfprune names nowhere --------------------------------------------------------------------------

def test_unseen_architectures_are_named_nowhere_in_hfprune():
    import hfprune

    sources = "\n".join(path.read_text(encoding="utf-8").lower()
                        for path in Path(hfprune.__file__).parent.rglob("*.py"))
    for model_type in UNSEEN:
        assert model_type not in sources


@pytest.mark.parametrize("model_type", UNSEEN)
def test_an_unseen_architecture_is_walked_with_no_code_change(model_type):
    model = build_unseen(model_type)
    config = model.config
    assert model_kind(config) == "causal_lm" and auto_class_name(model) == "AutoModelForCausalLM"
    blocks = find_blocks(model)
    assert len(blocks) == config.num_hidden_layers
    assert all(set(roles.roles) == set(LLAMA_NAMES) and roles.heads.key_value == config.num_key_value_heads
               for roles in blocks.roles)
    assert len(select_targets(model)) == 7 * config.num_hidden_layers
    torch.manual_seed(0)
    assert model(input_ids=torch.randint(3, 100, (1, 6))).logits.isfinite().all()
