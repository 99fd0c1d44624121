"""LeNet5-Mini, structured filter groups, masks and physical surgery."""

import math

import pytest
import torch

from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.pruning.structured.groups import num_pruned, parameter_masks
from hfprune.pruning.masking import MaskedParameters, pruned_l1
from hfprune.pruning.structured.samplers import candidates_for, count_combinations, exhaustive, mask_id, sample
from fresh_process import assert_loads_in_fresh_process


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    adapter = get_adapter("lenet5_mini")
    return adapter, adapter.build(adapter.config(10, 1, 32, {})).eval()


def test_lenet_matches_the_paper_definition(lenet):
    _, model = lenet
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "conv1.weight": (10, 1, 5, 5), "conv1.bias": (10,),
        "conv2.weight": (10, 10, 5, 5), "conv2.bias": (10,),
        "conv3.weight": (10, 10, 5, 5), "conv3.bias": (10,),
        "hidden.0.weight": (10, 10), "hidden.0.bias": (10,),
        "classifier.weight": (10, 10), "classifier.bias": (10,),
    }
    assert model(torch.zeros(3, 1, 32, 32)).logits.shape == (3, 10)


def test_width_and_depth_variants_build():
    adapter = get_adapter("lenet5_mini")
    wide = adapter.build(adapter.config(10, 1, 32, {"conv_filters": [40, 10, 10]}))
    deep = adapter.build(adapter.config(10, 1, 32, {"hidden_sizes": [10, 10, 10, 10]}))
    assert wide.conv1.out_channels == 40 and adapter.groups(wide.config)["conv1"].size == 40
    assert len(deep.hidden) == 4  # 3 conv + 4 hidden + classifier = 8 layers


@pytest.mark.parametrize("mask", [
    {"conv1": (0, 2, 4, 6, 8)},
    {"conv2": (1, 9)},
    {"conv3": (3,)},
    {"conv1": (1, 2, 3), "conv2": (0, 5, 7, 8), "conv3": (0, 1, 2, 4, 9)},
])
def test_masked_model_equals_physically_pruned_model(lenet, mask):
    adapter, model = lenet
    masks = parameter_masks(adapter.groups(model.config), mask, dict(model.named_parameters()))
    MaskedParameters(model, masks).apply()
    pruned = adapter.prune_physically(model, mask)
    x = torch.randn(8, 1, 32, 32)
    torch.testing.assert_close(pruned(x).logits, model(x).logits, atol=1e-6, rtol=0)
    for index, name in enumerate(("conv1", "conv2", "conv3")):
        expected = len(mask[name]) if name in mask else 10
        assert pruned.config.conv_filters[index] == expected
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_masks_cover_the_next_layers_inputs(lenet):
    adapter, model = lenet
    masks = parameter_masks(adapter.groups(model.config), {"conv1": (0, 1, 2, 3, 4)}, dict(model.named_parameters()))
    assert masks["conv1.weight"][5:].sum() == 0 and masks["conv1.weight"][:5].all()
    assert masks["conv1.bias"].tolist() == [True] * 5 + [False] * 5
    assert masks["conv2.weight"][:, 5:].sum() == 0 and masks["conv2.weight"][:, :5].all()
    assert pruned_l1(model, masks) == pytest.approx(
        model.conv1.weight[5:].abs().sum().item() + model.conv1.bias[5:].abs().sum().item()
        + model.conv2.weight[:, 5:].abs().sum().item(), rel=1e-6)


def test_pruned_checkpoint_loads_with_plain_transformers_in_a_fresh_process(lenet, tmp_path):
    adapter, model = lenet
    mask = {"conv1": (0, 3, 5, 7, 9), "conv3": (2, 4)}
    pruned = adapter.prune_physically(model, mask)
    pruned.save_pretrained(tmp_path / "ckpt")
    x = torch.randn(4, 1, 32, 32)
    assert_loads_in_fresh_process(tmp_path / "ckpt", x, pruned(x).logits,
                                  "assert model.config.conv_filters == [5, 10, 2], model.config.conv_filters")


def test_exhaustive_enumerates_every_combination_once(lenet):
    adapter, model = lenet
    groups = adapter.groups(model.config)
    candidates = exhaustive(groups, {"conv1": 0.5}, "s")
    assert len(candidates) == math.comb(10, 5) == 252
    assert len({c.mask_id for c in candidates}) == 252
    assert all(len(c.mask["conv1"]) == 5 for c in candidates)
    assert count_combinations(groups, {"conv1": 0.5, "conv2": 0.5}) == 252 * 252


def test_random_sampling_is_seeded_distinct_and_stable(lenet):
    adapter, model = lenet
    groups = adapter.groups(model.config)
    ratios = {"conv1": 0.5, "conv2": 0.5}
    first = sample(groups, ratios, "pairs", 50, seed=1)
    assert [c.mask_id for c in first] == [c.mask_id for c in sample(groups, ratios, "pairs", 50, seed=1)]
    assert [c.mask_id for c in first] != [c.mask_id for c in sample(groups, ratios, "pairs", 50, seed=2)]
    assert len({c.mask_id for c in first}) == 50
    # auto enumerates when the draw would cover everything
    assert len(candidates_for(groups, {"conv1": 0.8}, "s", "auto", 1000, 0)) == math.comb(10, 2)


def test_mask_id_ignores_order():
    assert mask_id({"conv1": (3, 1, 2), "conv2": (0,)}) == mask_id({"conv2": (0,), "conv1": (1, 2, 3)})
    assert mask_id({"conv1": (1, 2)}) != mask_id({"conv1": (1, 3)})


@pytest.mark.parametrize("size, ratio, removed", [(10, 0.5, 5), (10, 0.2, 2), (10, 0.25, 3), (10, 0.8, 8), (16, 0.5, 8)])
def test_ratio_rounding(size, ratio, removed):
    assert num_pruned(size, ratio) == removed


def test_impossible_settings_are_refused_with_the_group_named(lenet):
    adapter, model = lenet
    groups = adapter.groups(model.config)
    with pytest.raises(HfpruneError, match="removes every unit"):
        exhaustive(groups, {"conv1": 0.99}, "s")
    with pytest.raises(HfpruneError, match="unknown group 'fc9'.*conv1, conv2, conv3"):
        exhaustive(groups, {"fc9": 0.5}, "s")
