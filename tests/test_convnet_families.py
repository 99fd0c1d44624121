"""ConvNet families (resnet_cifar, vgg_cifar, hf_resnet): paper definitions, groups, ratios by stage, and
gated == weight-masked == physically pruned == fresh-process logits with exactly the asked widths."""

import copy
import json
import re
import subprocess
import sys

import pytest
import torch

from convnet_fixtures import tiny_model
from fresh_process import assert_loads_in_fresh_process
from hfprune.errors import HfpruneError
from hfprune.models import adapter_for_model_type, get_adapter
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.structured.gates import UnitGates
from hfprune.pruning.structured.groups import expand_ratios, kept_counts, parameter_masks
from hfprune.pruning.structured.importance import criterion_mask
from waiting import patience

KINDS = ["resnet_cifar", "vgg_cifar", "hf_resnet18", "hf_resnet50"]
FAMILY = {"resnet_cifar": "resnet_cifar", "vgg_cifar": "vgg_cifar", "hf_resnet18": "hf_resnet",
          "hf_resnet50": "hf_resnet"}


def _x(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("depth, params", [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018),
                                           (110, 1_727_962)])
def test_cifar_resnets_have_the_reference_parameter_counts(depth, params):
    # the counts of the reference CIFAR ResNets (option-A shortcut, 10 classes): 0.27M ... 1.7M
    adapter = get_adapter("resnet_cifar")
    model = adapter.build(adapter.config(10, 3, 32, {"depth": depth}))
    assert _trainable(model) == params
    assert len(adapter.groups(model.config)) == 3 * (depth - 2) // 6
    assert model(_x(2)).logits.shape == (2, 10)


def test_vgg19_matches_the_paper_definition():
    adapter = get_adapter("vgg_cifar")
    model = adapter.build(adapter.config(10, 3, 32, {}))
    assert _trainable(model) == 20_035_018  # VGG19-BN for CIFAR-10, GAP + Linear(512, 10): 20.04M
    assert model.config.conv_widths == [64, 64, 128, 128, *[256] * 4, *[512] * 8]
    groups = adapter.groups(model.config)
    assert list(groups) == [f"conv{i}" for i in range(1, 17)]
    assert groups["conv16"].owned[-1].param == "classifier.weight"
    assert [len(adapter.groups(adapter.config(100, 3, 32, {"depth": d}))) for d in (11, 13, 16)] == [8, 10, 13]


def test_resnet_ratios_by_stage_block_and_kind():
    adapter = get_adapter("resnet_cifar")
    groups = adapter.groups(adapter.config(10, 3, 32, {"depth": 56}))
    assert len(groups) == 27 and groups["stage2.block0"].sets == ("stage2",)
    # Table A2: ResNet56 stages [0, 0.5, 0.5, 0.5] (stage 0 is the stem, never pruned)
    counts = kept_counts(groups, {"stage1": 0.5, "stage2": 0.5, "stage3": 0.5})
    assert counts == kept_counts(groups, {"filters": 0.5})
    assert [counts[f"stage{s}.block3"] for s in (1, 2, 3)] == [8, 16, 32]
    # a group's own ratio wins over its stage's, a stage's over the kind's
    mixed = kept_counts(groups, {"filters": 0.25, "stage3": 0.5, "stage3.block8": 0.75})
    assert (mixed["stage1.block0"], mixed["stage3.block0"], mixed["stage3.block8"]) == (12, 32, 16)
    assert set(kept_counts(groups, {"stage2": 0.5})) == {f"stage2.block{b}" for b in range(9)}
    with pytest.raises(HfpruneError, match=r"unknown structure 'stage4'.*a set \(stage1, stage2, stage3\)"):
        expand_ratios(groups, {"stage4": 0.5})


def test_hf_resnet_groups_are_first_convs_or_bottleneck_convs():
    adapter = get_adapter("hf_resnet")
    basic, bottleneck = tiny_model("hf_resnet18"), tiny_model("hf_resnet50")
    assert list(adapter.groups(basic.config)) == [
        "stage1.block0.conv1", "stage1.block1.conv1", "stage2.block0.conv1", "stage3.block0.conv1",
        "stage4.block0.conv1"]
    groups = adapter.groups(bottleneck.config)
    assert list(groups)[:4] == ["stage1.block0.conv1", "stage1.block0.conv2", "stage2.block0.conv1",
                                "stage2.block0.conv2"]
    assert len(groups) == 10 and groups["stage2.block1.conv2"].size == 3  # 12 // reduction 4
    for model in (basic, bottleneck):
        names = dict(model.state_dict())
        assert all(piece.param in names for g in adapter.groups(model.config).values() for piece in g.owned)


def _mask(groups, seed=0):
    """Keep a random, non-empty, proper subset of every other group's units."""
    generator = torch.Generator().manual_seed(seed)
    mask = {}
    for index, (name, group) in enumerate(groups.items()):
        if index % 2 == 0 or group.size < 2:
            continue
        keep = 1 + int(torch.randint(group.size - 1, (1,), generator=generator))
        mask[name] = tuple(sorted(torch.randperm(group.size, generator=generator)[:keep].tolist()))
    return mask


@pytest.mark.parametrize("kind", KINDS)
def test_gated_equals_masked_equals_pruned_equals_fresh_process(kind, tmp_path):
    model, adapter = tiny_model(kind), get_adapter(FAMILY[kind])
    groups, x = adapter.groups(model.config), _x()
    mask = _mask(groups)
    assert mask
    with UnitGates(model, groups) as gates:
        gates.set_mask(mask)
        gated = model(x).logits.detach()
    masked = copy.deepcopy(model)
    MaskedParameters(masked, parameter_masks(groups, mask, dict(masked.named_parameters()))).apply()
    torch.testing.assert_close(masked(x).logits, gated, atol=1e-5, rtol=0)
    pruned = adapter.prune_physically(model, mask).eval()
    torch.testing.assert_close(pruned(x).logits, gated, atol=1e-5, rtol=0)
    pruned_groups = adapter.groups(pruned.config)
    assert {name: g.size for name, g in pruned_groups.items()} == {
        name: len(mask.get(name, range(g.size))) for name, g in groups.items()}
    for name, group in pruned_groups.items():  # the weights have the widths the config records
        conv = pruned.get_parameter(group.owned[0].param)
        assert conv.shape[0] == group.size, name
    pruned.save_pretrained(tmp_path / "ckpt")
    widths = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert adapter_for_model_type(widths["model_type"]).name == FAMILY[kind]
    assert_loads_in_fresh_process(tmp_path / "ckpt", x, gated, f"""
        assert type(model).__name__ == {type(pruned).__name__!r}, type(model).__name__
        assert sum(p.numel() for p in model.parameters()) == {sum(p.numel() for p in pruned.parameters())}
    """)


@pytest.mark.parametrize("kind", ["resnet_cifar", "hf_resnet50"])
def test_pruned_models_prune_further(kind):
    model, adapter = tiny_model(kind), get_adapter(FAMILY[kind])
    first = adapter.prune_physically(model, _mask(adapter.groups(model.config), seed=1)).eval()
    groups = adapter.groups(first.config)
    second_mask = _mask(groups, seed=2)
    with UnitGates(first, groups) as gates:
        gates.set_mask(second_mask)
        gated = first(_x()).logits.detach()
    second = adapter.prune_physically(first, second_mask).eval()
    torch.testing.assert_close(second(_x()).logits, gated, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_criteria_and_macs(kind):
    model, adapter = tiny_model(kind), get_adapter(FAMILY[kind])
    groups = adapter.groups(model.config)
    mask = criterion_mask("l1", model, groups, {"filters": 0.5}, seed=0)
    pruned = adapter.prune_physically(model, mask)
    assert {n: g.size for n, g in adapter.groups(pruned.config).items()} == kept_counts(groups, {"filters": 0.5})
    assert 0 < adapter.macs(pruned.config) < adapter.macs(model.config)
    assert adapter.card_rows(pruned.config)


def test_resnet_cifar_macs_count_every_conv():
    adapter = get_adapter("resnet_cifar")
    # ResNet56 on 32x32: about 125M multiply-accumulates (0.13 GFLOPs in the literature)
    assert 124e6 < adapter.macs(adapter.config(10, 3, 32, {"depth": 56})) < 127e6


@pytest.mark.parametrize("kind, structure, widths", [
    ("resnet_cifar", "stage2=0.5,stage3=0.5", ("block_widths", [[4], [3], [4]])),
    ("vgg_cifar", "filters=0.5,conv8=0.25", ("conv_widths", [2, 3, 4, 4, 4, 4, 3, 4])),
    ("hf_resnet50", "stage2=0.5", ("block_widths", [[[2, 2]], [[1, 1], [1, 1]], [[4, 4]], [[5, 5]]])),
])
def test_cli_prune_of_a_tiny_checkpoint(kind, structure, widths, tmp_path):
    tiny_model(kind).save_pretrained(tmp_path / "dense")
    result = subprocess.run([sys.executable, "-m", "hfprune", "prune", str(tmp_path / "dense"), "--structure",
                             structure, "--method", "l1", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=patience(600))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config[widths[0]] == widths[1]
    facts = json.loads((tmp_path / "out" / "hfprune_pruning.json").read_text())
    assert facts["params_after"] < facts["params_before"]
    assert "MACs per image" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize("family", ["resnet_cifar", "vgg_cifar", "lenet5_mini", "hf_resnet"])
def test_saved_configs_keep_their_number_of_labels(family, tmp_path):
    adapter = get_adapter(family)
    config = adapter.config(7, 3, 32, {})
    config.save_pretrained(tmp_path)
    assert adapter.load_config(str(tmp_path)).num_labels == 7


@pytest.mark.parametrize("family, overrides, check", [
    ("resnet_cifar", {"depth": 20}, lambda c: c.block_widths == [[16] * 3, [32] * 3, [64] * 3] and c.num_labels == 10),
    ("resnet_cifar", {"depth": 110, "stage_widths": [8, 16, 32], "num_labels": 4},
     lambda c: c.block_widths[2] == [32] * 18 and c.num_labels == 4),
    ("vgg_cifar", {"depth": 16, "stage_widths": [8, 8, 8, 16, 16]},
     lambda c: len(c.conv_widths) == 13 and c.conv_widths[-1] == 16 and c.num_labels == 10),
    ("vgg_cifar", {"conv_widths": [8] * 16}, lambda c: c.depth == 19 and c.conv_widths == [8] * 16),
    ("hf_resnet", {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [8, 16, 24, 32],
                   "embedding_size": 8}, lambda c: c.block_widths[3] == [[32], [32]]),
])
def test_recipes_build_families_from_model_config_overrides(family, overrides, check):
    from types import SimpleNamespace

    from hfprune.study.registry import parse_recipe
    from hfprune.study.dense import dense_config
    from study_helpers import tiny_recipe

    recipe = parse_recipe(tiny_recipe(model={"family": family, "config": overrides}))
    task = SimpleNamespace(data_shape=lambda: (10, 3, 32))
    config = dense_config(recipe, get_adapter(family), task)
    assert check(config), config
    assert get_adapter(family).build(config).eval()(_x(1)).logits.shape == (1, config.num_labels)


@pytest.mark.parametrize("family, overrides, expected", [
    ("resnet_cifar", {"depth": 57}, "depth must be 6n+2"),
    ("vgg_cifar", {"depth": 12}, "depth must be one of 11, 13, 16, 19"),
    ("resnet_cifar", {"block_widths": [[16], [32], [64]]}, "block_widths must list 3 stages of 9"),
])
def test_bad_model_config_overrides_are_one_clear_error(family, overrides, expected):
    from types import SimpleNamespace

    from hfprune.study.registry import parse_recipe
    from hfprune.study.dense import dense_config
    from study_helpers import tiny_recipe

    recipe = parse_recipe(tiny_recipe(model={"family": family, "config": overrides}))
    task = SimpleNamespace(data_shape=lambda: (10, 3, 32))
    with pytest.raises(HfpruneError, match=re.escape(f"model.config: {expected}")):
        dense_config(recipe, get_adapter(family), task)
