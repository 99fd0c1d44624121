"""ViT heads and FFN neurons: masks by gates and by weights, physical pruning, fresh-process loading,
criteria and mask swapping on one instance — on a tiny random ViT of the real architecture."""

import copy

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.models.vit.modeling_pruned_vit import PrunedViTConfig, PrunedViTForImageClassification
from hfprune.models.vit.adapter import to_pruned_vit, vit_macs
from hfprune.pruning.structured.groups import expand_ratios, kept_counts
from hfprune.pruning.structured.importance import criterion_mask, l1_scores
from hfprune.pruning.structured.gates import UnitGates, pruned_losses
from hfprune.pruning.structured.groups import parameter_masks
from hfprune.pruning.masking import MaskedParameters
from fresh_process import assert_loads_in_fresh_process

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            image_size=32, patch_size=8, num_labels=5)


@pytest.fixture
def dense():
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**TINY)).eval()


@pytest.fixture
def adapter():
    return get_adapter("vit")


def _x(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


MASK = {"layers.0.heads": (1, 3), "layers.1.heads": (0,), "layers.2.heads": (0, 1, 2),
        "layers.0.ffn": tuple(range(0, 64, 2)), "layers.2.ffn": (5, 7, 60)}


def test_groups_cover_heads_and_ffn_of_every_layer(dense, adapter):
    groups = adapter.groups(dense.config)
    assert list(groups) == [f"layers.{i}.{k}" for i in range(3) for k in ("heads", "ffn")]
    assert groups["layers.1.heads"].size == 4 and groups["layers.1.ffn"].size == 64
    names = dict(dense.named_parameters())
    for group in groups.values():  # the module names are those of the pinned transformers
        assert all(piece.param in names for piece in group.owned), group


def test_gated_equals_weight_masked_equals_physically_pruned(dense, adapter):
    x = _x()
    groups = adapter.groups(dense.config)
    with UnitGates(dense, groups) as gates:
        gates.set_mask(MASK)
        gated = dense(x).logits.detach()
    masked_model = copy.deepcopy(dense)
    MaskedParameters(masked_model, parameter_masks(groups, MASK, dict(masked_model.named_parameters()))).apply()
    weight_masked = masked_model(x).logits.detach()
    pruned = adapter.prune_physically(dense, MASK)
    assert isinstance(pruned, PrunedViTForImageClassification)
    torch.testing.assert_close(gated, weight_masked, atol=1e-5, rtol=0)
    torch.testing.assert_close(pruned(x).logits, gated, atol=1e-5, rtol=0)
    assert pruned.config.num_attention_heads_per_layer == [2, 1, 3]
    assert pruned.config.intermediate_size_per_layer == [32, 64, 3]
    assert pruned.vit.layers[2].attention.q_proj.weight.shape == (3 * 8, 32)
    assert pruned.vit.layers[2].mlp.fc1.weight.shape == (3, 32)
    # the hooks are gone again: the dense model is dense
    torch.testing.assert_close(dense(x).logits, to_pruned_vit(dense)(x).logits, atol=1e-6, rtol=0)


def test_pruned_vit_prunes_further(dense, adapter):
    x = _x()
    first = adapter.prune_physically(dense, MASK)
    second_mask = {"layers.2.heads": (0, 2), "layers.1.ffn": tuple(range(10))}
    groups = adapter.groups(first.config)
    assert groups["layers.2.heads"].size == 3 and groups["layers.0.ffn"].size == 32
    with UnitGates(first, groups) as gates:
        gates.set_mask(second_mask)
        gated = first(x).logits.detach()
    second = adapter.prune_physically(first, second_mask)
    assert second.config.num_attention_heads_per_layer == [2, 1, 2]
    assert second.config.intermediate_size_per_layer == [32, 10, 3]
    torch.testing.assert_close(second(x).logits, gated, atol=1e-5, rtol=0)


def test_a_layer_without_heads_keeps_only_the_output_bias(dense, adapter):
    x = _x()
    mask = {"layers.1.heads": (), "layers.1.ffn": (), "layers.0.heads": (2,)}
    with UnitGates(dense, adapter.groups(dense.config)) as gates:
        gates.set_mask(mask)
        gated = dense(x).logits.detach()
    pruned = adapter.prune_physically(dense, mask)
    assert pruned.config.num_attention_heads_per_layer == [1, 0, 4]
    assert pruned.vit.layers[1].attention.q_proj.weight.numel() == 0
    torch.testing.assert_close(pruned(x).logits, gated, atol=1e-5, rtol=0)


def test_pruned_checkpoint_loads_with_plain_transformers_in_a_fresh_process(dense, adapter, tmp_path):
    x = _x()
    pruned = adapter.prune_physically(dense, {**MASK, "layers.1.heads": ()})
    pruned.save_pretrained(tmp_path / "ckpt")
    with UnitGates(dense, adapter.groups(dense.config)) as gates:
        gates.set_mask({**MASK, "layers.1.heads": ()})
        gated = dense(x).logits
    assert_loads_in_fresh_process(tmp_path / "ckpt", x, gated, """
        assert type(model).__name__ == "PrunedViTForImageClassification"
        assert model.config.num_attention_heads_per_layer == [2, 0, 3], model.config.num_attention_heads_per_layer
        assert model.config.intermediate_size_per_layer == [32, 64, 3], model.config.intermediate_size_per_layer
    """)


def test_config_refuses_wrong_layer_lists():
    with pytest.raises(ValueError, match="one per layer"):
        PrunedViTConfig(**TINY, num_attention_heads_per_layer=[4, 4])


def test_uniform_and_per_layer_ratios(dense, adapter):
    groups = adapter.groups(dense.config)
    assert kept_counts(groups, {"heads": 0.5, "ffn": 0.25}) == {
        **{f"layers.{i}.heads": 2 for i in range(3)}, **{f"layers.{i}.ffn": 48 for i in range(3)}}
    per_layer = kept_counts(groups, {"heads": 0.5, "layers.1.heads": 0.75, "layers.2.ffn": 0.5})
    assert per_layer == {"layers.0.heads": 2, "layers.1.heads": 1, "layers.2.heads": 2, "layers.2.ffn": 32}
    with pytest.raises(HfpruneError, match="unknown structure 'neurons'"):
        expand_ratios(groups, {"neurons": 0.5})
    with pytest.raises(HfpruneError, match=r"must be in \[0, 1\]"):
        expand_ratios(groups, {"heads": 1.5})


@pytest.mark.parametrize("method", ["random", "l1", "taylor_fo"])
def test_criteria_keep_exactly_the_asked_counts(dense, adapter, method):
    groups = adapter.groups(dense.config)
    batches = [{"pixel_values": _x(6), "labels": torch.arange(6) % 5}]
    ratios = {"heads": 0.5, "ffn": 0.5, "layers.2.heads": 0.25}
    mask = criterion_mask(method, dense, groups, ratios, seed=3, batches=batches,
                          loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b["pixel_values"]).logits, b["labels"]))
    assert {name: len(kept) for name, kept in mask.items()} == {
        "layers.0.heads": 2, "layers.1.heads": 2, "layers.2.heads": 3, **{f"layers.{i}.ffn": 32 for i in range(3)}}
    assert all(list(kept) == sorted(set(kept)) for kept in mask.values())
    pruned = adapter.prune_physically(dense, mask)
    assert pruned.config.num_attention_heads_per_layer == [2, 2, 3]
    assert pruned.config.intermediate_size_per_layer == [32, 32, 32]


def test_l1_keeps_the_largest_norm_units(dense, adapter):
    with torch.no_grad():
        dense.vit.layers[0].attention.v_proj.weight[8:16] *= 100  # head 1 owns rows 8..15
        dense.vit.layers[0].mlp.fc2.weight[:, 7] *= 100           # neuron 7 owns column 7
    groups = adapter.groups(dense.config)
    scores = l1_scores(dense, groups)
    head_l1 = sum(getattr(dense.vit.layers[0].attention, f"{p}_proj").weight[8:16].abs().sum()
                  + getattr(dense.vit.layers[0].attention, f"{p}_proj").bias[8:16].abs().sum() for p in "qkv")
    head_l1 += dense.vit.layers[0].attention.o_proj.weight[:, 8:16].abs().sum()
    assert scores["layers.0.heads"][1].item() == pytest.approx(head_l1.item(), rel=1e-6)
    mask = criterion_mask("l1", dense, groups, {"layers.0.heads": 0.75, "layers.0.ffn": 63 / 64})
    assert mask == {"layers.0.heads": (1,), "layers.0.ffn": (7,)}


def test_taylor_fo_is_the_gate_gradient(dense, adapter):
    groups = adapter.groups(dense.config)
    batch = {"pixel_values": _x(6), "labels": torch.arange(6) % 5}
    loss_fn = lambda m, b: torch.nn.functional.cross_entropy(m(b["pixel_values"]).logits, b["labels"])  # noqa: E731
    from hfprune.pruning.structured.importance import taylor_fo_scores
    scores = taylor_fo_scores(dense, groups, [batch, batch], loss_fn)
    # |dL/dgate| equals |Σ w·∂L/∂w| over the consumer's columns of that unit
    dense.zero_grad()
    loss_fn(dense, batch).backward()
    o_proj = dense.vit.layers[1].attention.o_proj.weight
    expected = (o_proj * o_proj.grad).view(32, 4, 8).sum((0, 2)).abs() * 2
    torch.testing.assert_close(scores["layers.1.heads"].float(), expected, atol=1e-5, rtol=1e-4)
    assert not any(p.grad is not None and p.grad.abs().sum() == 0 for p in [o_proj])


def test_mask_swapping_on_one_instance_equals_separate_copies(dense, adapter):
    from hfprune.pruning.structured.samplers import sample
    groups = adapter.groups(dense.config)
    candidates = sample(groups, expand_ratios(groups, {"heads": 0.5, "ffn": 0.5}), "s", 4, seed=0)
    x, y = _x(8), torch.arange(8) % 5

    def loss(model):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(x).logits, y).item()

    swapped = pruned_losses(dense, groups, [c.mask for c in candidates], loss)
    copies = []
    for candidate in candidates:
        model = copy.deepcopy(dense)
        MaskedParameters(model, parameter_masks(groups, candidate.mask, dict(model.named_parameters()))).apply()
        copies.append(loss(model))
    assert swapped == pytest.approx(copies, abs=1e-5)
    assert len(set(round(v, 6) for v in swapped)) == 4  # the masks really differ
    assert loss(dense) == pytest.approx(pruned_losses(dense, groups, [None], loss)[0], abs=1e-6)


def test_macs_count_every_part(dense, adapter):
    macs = vit_macs(dense.config)
    tokens, d = 17, 32
    assert macs["patch_embedding"] == 16 * 3 * 64 * d
    assert macs["attention_projections"] == 3 * tokens * d * d * 4
    assert macs["attention_matmuls"] == 3 * 2 * tokens * tokens * d
    assert macs["mlp"] == 3 * 2 * tokens * d * 64
    assert macs["classifier"] == d * 5
    pruned = adapter.prune_physically(dense, {f"layers.{i}.heads": (0, 1) for i in range(3)})
    assert vit_macs(pruned.config)["attention_projections"] == macs["attention_projections"] // 2
