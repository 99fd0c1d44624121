"""LoRA recovery: adapters trained with peft and merged back keep the model's shapes and class, the pruned
weights of a masked model exactly zero, and the merged model computes what the trained adapters computed."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from torch import nn

from hfprune.data.text_corpus import TokenBlocks
from hfprune.errors import HfpruneError
from hfprune.evaluation.lm_loss import causal_lm_loss
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.lora import MaskedUpdate, _mask_updates, lora_targets, train_lora
from hfprune.train.sections import LoraSection, TrainingSection

SECTION = TrainingSection(epochs=2, batch_size=4, optimizer={"name": "adamw", "lr": 2e-2})


def _llama(intermediate: int = 48, layers: int = 2) -> tf.LlamaForCausalLM:
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=intermediate,
                                              num_hidden_layers=layers, num_attention_heads=4,
                                              num_key_value_heads=2, max_position_embeddings=32))


def _masks(model: nn.Module, keep: float = 0.5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {f"{name}.weight": torch.rand(module.weight.shape, generator=generator) < keep
            for name, module in model.named_modules() if isinstance(module, nn.Linear) and ".layers." in name}


def _data() -> TokenBlocks:
    generator = torch.Generator().manual_seed(2)
    return TokenBlocks(torch.randint(0, 64, (16, 12), generator=generator))


def test_masked_lora_merges_into_the_pruned_weights_keeping_shapes_and_zeros():
    model = _llama()
    masks = _masks(model)
    masked = MaskedParameters(model, masks)
    masked.apply()
    before = copy.deepcopy(model.state_dict())
    loss_before = causal_lm_loss(model, _data()[list(range(16))]).item()
    result = train_lora(model, _data(), SECTION, causal_lm_loss, lora=LoraSection(r=4, alpha=8), seed=0,
                        masks=masked, progress=False)
    assert result.steps == 8
    assert type(model) is tf.LlamaForCausalLM and not any("lora" in name for name, _ in model.named_modules())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(after[k].shape == before[k].shape for k in before)
    assert masked.violations() == 0
    for name, mask in masks.items():
        assert torch.count_nonzero(after[name][~mask]) == 0, name
        assert not torch.equal(after[name][mask], before[name][mask]), f"{name}: the adapters changed nothing"
    untouched = [k for k in before if k not in masks]
    assert all(torch.equal(after[k], before[k]) for k in untouched), "only the adapted weights change"
    assert all(param.requires_grad for param in model.parameters()), "trainability is given back"
    assert causal_lm_loss(model, _data()[list(range(16))]).item() < loss_before


def test_the_merged_model_computes_what_the_masked_adapters_computed():
    from peft import LoraConfig, get_peft_model

    model = _llama()
    masked = MaskedParameters(model, _masks(model))
    masked.apply()
    ids = _data()[list(range(4))]["input_ids"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(model, LoraSection())))
    assert _mask_updates(peft_model, masked) == len(masked.names)
    torch.manual_seed(3)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)  # a trained-looking, dense B
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted, atol=1e-5)
    assert masked.violations() == 0, "the merge itself keeps the zeros"


def test_lora_on_a_physically_pruned_model_keeps_its_smaller_shapes():
    model = _llama(intermediate=24, layers=1)  # what removing half the FFN neurons and a layer leaves
    shapes = {name: param.shape for name, param in model.named_parameters()}
    reference = copy.deepcopy(model)
    train_lora(model, _data(), SECTION, causal_lm_loss, lora=LoraSection(r=2, target_modules=[r".*\.mlp\..*"]),
               seed=0, progress=False)
    assert {name: param.shape for name, param in model.named_parameters()} == shapes
    changed = {name for name, param in model.named_parameters()
               if not torch.equal(param, dict(reference.named_parameters())[name])}
    assert changed == {f"model.layers.0.mlp.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")}


def test_lora_targets_and_their_errors():
    model = _llama()
    default = lora_targets(model, LoraSection())
    assert len(default) == 2 * 7 and all(".layers." in name for name in default) and "lm_head" not in default
    assert lora_targets(model, LoraSection(target_modules=[r".*\.q_proj"])) == [
        "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(HfpruneError, match="match no Linear"):
        lora_targets(model, LoraSection(target_modules=["nothing"]))
    with pytest.raises(ValueError, match="not a regular expression"):
        LoraSection(target_modules=["("])
    assert MaskedUpdate.supports_lora_conversion() is False
