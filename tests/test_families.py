"""Families found by structure: every causal LM, vision-language model and ViT-like encoder transformers' Auto
classes load is recognised through transformers' own mappings, loads with its Auto class and builds from a
``model_type`` plus overrides; hand-written families keep their checkpoints."""

import pytest

from hfprune.errors import HfpruneError
from hfprune.models import FAMILIES, adapter_for_checkpoint, adapter_for_model_type, get_adapter
from hfprune.models.structure import model_kind
from tiny_models import ARCHITECTURES, UNSEEN, build_unseen, tiny_model

FAMILY_OF_KIND = {"causal_lm": "causal_lm", "vision_language": "vision_language", "vision_encoder": "vision_encoder"}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_belongs_to_the_family_of_its_kind(name, tmp_path):
    arch = ARCHITECTURES[name]
    model = tiny_model(name)
    expected = "vit" if model.config.model_type == "vit" else FAMILY_OF_KIND[arch.kind]  # ViT keeps its own family
    assert adapter_for_model_type(model.config.model_type).name == expected
    if expected == "vit":
        return
    model.save_pretrained(tmp_path / name)
    adapter = adapter_for_checkpoint(str(tmp_path / name))
    loaded = adapter.load_pretrained(str(tmp_path / name))
    assert type(loaded) is type(model) and not loaded.training
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("model_type", UNSEEN)
def test_architectures_hfprune_names_nowhere_are_causal_lms(model_type):
    assert adapter_for_model_type(model_type).name == "causal_lm"
    assert model_kind(build_unseen(model_type).config) == "causal_lm"


def test_hand_written_families_keep_their_checkpoints():
    assert adapter_for_model_type("lenet5_mini").name == "lenet5_mini"
    assert adapter_for_model_type("vit").name == "vit"
    assert adapter_for_model_type("wav2vec2") is None  # an audio encoder: no family prunes it by default


def test_llava_is_the_vision_language_family_under_its_earlier_name():
    assert FAMILIES["llava"] is FAMILIES["vision_language"] and get_adapter("llava").name == "vision_language"


def test_a_causal_lm_builds_from_a_model_type_and_overrides():
    adapter = get_adapter("causal_lm")
    overrides = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert FAMILIES["causal_lm"].config_problems(overrides) == []
    model = adapter.build(adapter.config(0, 0, 0, overrides))
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == 2
    with pytest.raises(HfpruneError, match="model.config.model_type"):
        adapter.config(0, 0, 0, {"hidden_size": 32})


@pytest.mark.parametrize("overrides, problem", [
    ({"model_type": "dinov2"}, "must name a transformers causal lm architecture"),
    ({"model_type": "nope"}, "must name a transformers causal lm architecture"),
    ({"model_type": "llama", "hiden_size": 32}, "unknown key 'hiden_size'"),
    ({"model_type": "llama", "num_hidden_layers": 0}, "num_hidden_layers"),
])
def test_bad_causal_lm_configs_are_named(overrides, problem):
    assert any(problem in line for line in FAMILIES["causal_lm"].config_problems(overrides))
