"""Wanda, OWL over Wanda, SparseGPT, N:M patterns and layer-by-layer calibration.

Expected values come from the methods' definitions (docs/studies.md §7): Wanda's score |W_ij|·‖X_j‖₂ compared
within each output row, SparseGPT's layer-wise reconstruction, "in every group of M consecutive input weights of
a row exactly N are zero", computed by hand on small known inputs or checked as properties on a tiny LLaVA.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llava_fixtures import write_llava_fixture
from hfprune.data.llava import load_llava_instructions
from hfprune.errors import HfpruneError
from hfprune.models.llava.tiny import tiny_llava
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured import (
    activation_norms,
    method_from,
    select_targets,
    sparsegpt_prune,
    unstructured_masks,
)
from hfprune.train.trainer import make_loader

LM = "model.language_model.layers"


# -- a two-layer stack with known inputs --------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(weight)

    def forward(self, hidden, scale=None):
        return self.proj(hidden) * scale


class Stack(nn.Module):
    """layers.0 and layers.1, each one Linear; ``scale`` is a keyword the stack passes every layer."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor):
        super().__init__()
        self.layers = nn.ModuleList([Block(first), Block(second)])

    def forward(self, inputs, attention_mask=None):
        hidden = inputs
        for layer in self.layers:
            hidden = layer(hidden, scale=2.0)
        return hidden


X = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]]])  # column norms 1, 2, 3, 4
W0 = torch.tensor([[1.0, 1.0, 1.0, 1.0],
                   [5.0, 1.0, 0.5, 0.6],
                   [0.1, 4.0, 0.2, 3.0],
                   [2.0, 0.3, 0.9, 0.1]])
W1 = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                   [4.0, 3.0, 2.0, 1.0],
                   [1.0, -1.0, 1.0, -1.0],
                   [0.5, 0.25, 2.0, 1.0]])


def keep_lowest_out(scores: torch.Tensor, per_row: int) -> torch.Tensor:
    """Hand rule: in every row, drop the ``per_row`` lowest scores (no ties in these matrices)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    for row in range(scores.shape[0]):
        for column in scores[row].argsort()[:per_row]:
            keep[row, column] = False
    return keep


def wanda_masks(stack, calibration, **options):
    return unstructured_masks(stack, "wanda", 0.5, targets=r"layers\.\d+\.proj", calibration=calibration,
                              **options).masks


def test_wanda_scores_and_masks_equal_the_hand_computation_layer_by_layer():
    stack = Stack(W0, W1)
    masks = wanda_masks(stack, [{"inputs": X}])
    norms0 = X[0].square().sum(0).sqrt()
    assert norms0.tolist() == [1.0, 2.0, 3.0, 4.0]
    scores0 = W0.abs() * norms0  # row 1: [5, 2, 1.5, 2.4] -> columns 1 and 2 go; magnitude would drop 2 and 3
    expected0 = keep_lowest_out(scores0, 2)
    assert expected0[1].tolist() == [True, False, False, True]
    assert torch.equal(masks["layers.0.proj.weight"], expected0)
    # Layer 1 sees the outputs of the *pruned* layer 0, scaled by the keyword the stack passes every layer.
    inputs1 = 2.0 * X[0] @ (W0 * expected0).T
    expected1 = keep_lowest_out(W1.abs() * inputs1.square().sum(0).sqrt(), 2)
    assert torch.equal(masks["layers.1.proj.weight"], expected1)
    dense_inputs1 = 2.0 * X[0] @ W0.T
    assert not torch.equal(keep_lowest_out(W1.abs() * dense_inputs1.square().sum(0).sqrt(), 2), expected1)
    one_pass = wanda_masks(stack, [{"inputs": X}], sequential=False)  # every layer scored on the dense model
    assert torch.equal(one_pass["layers.0.proj.weight"], expected0)
    assert torch.equal(one_pass["layers.1.proj.weight"],
                       keep_lowest_out(W1.abs() * dense_inputs1.square().sum(0).sqrt(), 2))
    assert torch.equal(stack.layers[0].proj.weight, W0) and torch.equal(stack.layers[1].proj.weight, W1)


def test_padding_positions_are_not_calibration_tokens():
    padded = torch.cat([X, torch.full((1, 1, 4), 100.0)], dim=1)
    attention_mask = torch.tensor([[1, 1, 1, 0]])
    stack = Stack(W0, W1)
    assert all(torch.equal(a, b) for a, b in zip(wanda_masks(stack, [{"inputs": X}]).values(),
                                                 wanda_masks(stack, [{"inputs": padded,
                                                                      "attention_mask": attention_mask}]).values()))
    norms = activation_norms(stack, select_targets(stack, r"layers\.0\.proj"),
                             [{"inputs": padded, "attention_mask": attention_mask}])
    assert norms["layers.0.proj"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_n_of_m_masks_by_hand():
    stack = Stack(W0, W1)
    masks = unstructured_masks(stack, "wanda", 0.5, targets=r"layers\.0\.proj", calibration=[{"inputs": X}],
                               granularity="2:4").masks
    assert torch.equal(masks["layers.0.proj.weight"], keep_lowest_out(W0.abs() * torch.tensor([1., 2., 3., 4.]), 2))
    weight = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    magnitude = unstructured_masks(Stack(weight, W1), "ump", 0.5, targets=r"layers\.0\.proj",
                                   granularity="1:2").masks
    pairs = weight.abs().reshape(4, 4, 2)  # in every pair of neighbouring inputs of a row, the smaller |w| goes
    expected = (pairs == pairs.max(dim=-1, keepdim=True).values).reshape(4, 8)
    assert torch.equal(magnitude["layers.0.proj.weight"], expected)


# -- the tiny LLaVA, calibrated on LLaVA-1.5 conversations with their images --------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return tiny_llava(seed=0, num_layers=3)


@pytest.fixture(scope="module")
def calibration(tiny, tmp_path_factory):
    """Batches of LLaVA-1.5-format conversations (with images and right padding), as a study feeds them."""
    json_path, image_root = write_llava_fixture(tmp_path_factory.mktemp("calibration"), n=8)
    data = load_llava_instructions(json_path, image_root, tiny[1], max_length=256,
                                   image_seq_length=tiny[0].config.image_seq_length)
    return list(make_loader(data, 4, shuffle=False, seed=0))


@pytest.fixture
def model(tiny):
    return copy.deepcopy(tiny[0])


def test_calibration_batches_have_images_and_padding(calibration):
    assert any("pixel_values" in batch for batch in calibration)
    assert any(not batch["attention_mask"].all() for batch in calibration)


def test_wanda_keeps_exactly_the_asked_share_of_every_row(model, calibration):
    result = unstructured_masks(model, "wanda", 0.4375, calibration=calibration)
    targets = select_targets(model)
    assert set(result.masks) == {f"{name}.weight" for name in targets}
    for name, linear in targets.items():
        pruned_per_row = (~result.masks[f"{name}.weight"]).sum(dim=1)
        assert (pruned_per_row == num_pruned(linear.in_features, 0.4375)).all(), name


@pytest.mark.parametrize("method, pattern", [("ump", "2:4"), ("wanda", "2:4"), ("sparsegpt", "2:4"),
                                             ("wanda", "4:8"), ("sparsegpt", "4:8")])
def test_every_n_of_m_group_is_exact(model, calibration, method, pattern):
    n, m = map(int, pattern.split(":"))
    result = unstructured_masks(model, method, n / m, calibration=calibration, granularity=pattern)
    for name, mask in result.masks.items():
        rows, columns = mask.shape
        pruned = (~mask).reshape(rows, columns // m, m).sum(dim=-1)
        assert (pruned == n).all(), name
    assert result.pruned == result.total * n // m


@pytest.mark.parametrize("method", ["wanda", "owl", "sparsegpt"])
def test_untargeted_parameters_stay_bit_identical(model, calibration, method):
    dense = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    result = unstructured_masks(model, method, 0.5, calibration=calibration)
    result.apply(model)
    updated = 0
    for name, parameter in model.named_parameters():
        if name in result.masks:
            mask = result.masks[name]
            assert not parameter[~mask].any(), name
            updated += not torch.equal(parameter[mask], dense[name][mask])
        else:
            assert torch.equal(parameter.view(torch.int32), dense[name].view(torch.int32)), name
    assert updated == (len(result.masks) if method == "sparsegpt" else 0)  # only SparseGPT updates kept weights


def test_layer_by_layer_calibration_sees_the_images_and_the_pruned_layers_before(model, calibration):
    sequential = unstructured_masks(model, "wanda", 0.5, calibration=calibration).masks
    one_pass = unstructured_masks(model, "wanda", 0.5, calibration=calibration, sequential=False).masks
    first = [name for name in sequential if name.startswith(f"{LM}.0.")]
    later = [name for name in sequential if not name.startswith(f"{LM}.0.")]
    assert all(torch.equal(sequential[name], one_pass[name]) for name in first)  # both see the dense layer 0
    assert any(not torch.equal(sequential[name], one_pass[name]) for name in later)
    text_only = []  # the same conversations without their images: the image tokens read as another token
    for batch in calibration:
        batch = {key: value for key, value in batch.items() if key != "pixel_values"}
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.image_token_index, 0)
        text_only.append(batch)
    without_images = unstructured_masks(model, "wanda", 0.5, calibration=text_only).masks
    assert any(not torch.equal(sequential[name], without_images[name]) for name in first)


def test_a_generator_of_batches_serves_every_pass(model, calibration):
    from_list = unstructured_masks(model, "owl", 0.5, calibration=calibration)
    from_generator = unstructured_masks(model, "owl", 0.5, calibration=(batch for batch in calibration))
    assert from_list.layer_ratios == from_generator.layer_ratios
    assert all(torch.equal(from_list.masks[name], from_generator.masks[name]) for name in from_list.masks)


def test_owl_spreads_layer_sparsities_by_wanda_outliers_and_prunes_rows(model, calibration):
    owl = unstructured_masks(model, "owl", 0.5, calibration=calibration)
    onp_activation = unstructured_masks(model, "onp", 0.5, calibration=calibration, score="activation")
    assert owl.group_scores == onp_activation.group_scores  # the outlier profile of |W|·‖X‖ on the dense model
    assert owl.layer_ratios == onp_activation.layer_ratios
    assert max(owl.layer_ratios.values()) - min(owl.layer_ratios.values()) == pytest.approx(0.16)
    for name, linear in select_targets(model).items():
        pruned_per_row = (~owl.masks[f"{name}.weight"]).sum(dim=1)
        assert (pruned_per_row == num_pruned(linear.in_features, owl.layer_ratios[name])).all(), name


def test_global_threshold_over_wanda_scores(model, calibration, monkeypatch):
    import hfprune.pruning.unstructured.radix as selection

    monkeypatch.setattr(selection, "CHUNK", 1000)  # lazily computed scores read in many chunks
    targets = select_targets(model)
    norms = activation_norms(model, targets, calibration)
    scores = [linear.weight.detach().abs() * norms[name] for name, linear in targets.items()]
    flat = torch.cat([score.reshape(-1) for score in scores])
    k = num_pruned(flat.numel(), 0.4375)
    result = unstructured_masks(model, "gmp", 0.4375, calibration=calibration, prune_score="activation")
    assert result.threshold == torch.kthvalue(flat, k).values.item()
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    assert torch.equal(torch.cat([mask.reshape(-1) for mask in result.masks.values()]), keep)


# -- SparseGPT --------------------------------------------------------------------------------------------------

def dense_inputs(model, linears, calibration) -> dict[str, torch.Tensor]:
    """Every target Linear's inputs on the calibration batches (padding left out), from the dense model."""
    inputs: dict[str, list] = {name: [] for name in linears}
    current = {}

    def hook(name):
        def keep(module, args):
            rows = args[0][current["mask"]] if args[0].shape[:2] == current["mask"].shape else args[0].flatten(0, -2)
            inputs[name].append(rows.detach())
        return keep

    handles = [linear.register_forward_pre_hook(hook(name)) for name, linear in linears.items()]
    with torch.no_grad():
        for batch in calibration:
            current["mask"] = batch["attention_mask"].bool()
            model(**batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(rows) for name, rows in inputs.items()}


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_sparsegpt_reconstructs_every_layer_better_than_magnitude_and_wanda(model, calibration, pattern):
    sparsity = 0.5
    linears = select_targets(model)
    inputs = dense_inputs(model, linears, calibration)
    granularity = {"granularity": pattern} if pattern else {}
    layer_rule = method_from("ump", granularity=pattern or "layer")
    wanda = method_from("wanda", granularity=pattern or "row").comparison()
    for name, linear in linears.items():
        weight, x = linear.weight.detach(), inputs[name]
        hessian = 2 * x.T @ x / x.shape[0]
        updated, keep = sparsegpt_prune(weight, hessian, sparsity, method_from("sparsegpt", **granularity)._nm())
        assert (updated[~keep] == 0).all() and int((~keep).sum()) == num_pruned(weight.numel(), sparsity)
        magnitude = layer_rule.comparison().select([weight], num_pruned(weight.numel(), sparsity), sparsity).masks[0]
        activation = wanda.select([weight.abs() * x.square().sum(0).sqrt()], 0, sparsity).masks[0]

        def error(new_weight):
            return float(torch.linalg.norm(x @ weight.T - x @ new_weight.T))

        assert error(updated) < error(weight * magnitude), name
        assert error(updated) < error(weight * activation), name


def test_sparsegpt_prunes_the_model_in_place_layer_by_layer(model, calibration):
    result = unstructured_masks(model, "sparsegpt", 0.5, calibration=calibration)
    for name, mask in result.masks.items():
        weight = model.get_parameter(name)
        assert not weight[~mask].any() and int((~mask).sum()) == num_pruned(mask.numel(), 0.5)
    assert result.layer_ratios == {name.removesuffix(".weight"): 0.5 for name in result.masks}


def test_sparsegpt_gives_the_exact_count_of_every_linear_block_by_block():
    torch.manual_seed(0)
    weight, x = torch.randn(6, 10), torch.randn(40, 10)
    for sparsity in (0.3, 0.4375, 0.5, 0.9):
        _, keep = sparsegpt_prune(weight, 2 * x.T @ x / 40, sparsity, block_size=4)
        assert int((~keep).sum()) == num_pruned(60, sparsity)


@pytest.mark.parametrize("method, options, sparsity, match", [
    ("wanda", {}, 0.5, "needs calibration"),
    ("sparsegpt", {}, 0.5, "needs calibration"),
    ("wanda", {"granularity": "2:4"}, 0.4375, "set the sparsity to 0.5"),
    ("sparsegpt", {"granularity": "2:4"}, 0.4375, "set the sparsity to 0.5"),
    ("wanda", {"granularity": "3:2"}, 0.5, "0 < N < M"),
    ("wanda", {"granularity": "rows"}, 0.5, "'layer', 'row' or an N:M pattern"),
    ("sparsegpt", {"granularity": "row"}, 0.5, "'block' or an N:M pattern"),
    ("sparsegpt", {"granularity": "2:4", "block_size": 6}, 0.5, "multiple of the pattern's M"),
    ("gmp", {"granularity": "row"}, 0.5, "one budget over every target"),
    ("onp", {"granularity": "2:4"}, 0.5, "uniform method"),
    ("gmp", {"prune_score": "activation", "sequential": True}, 0.5, "set sequential false"),
    ("wanda", {"prune_score": "gradient"}, 0.5, "unknown score"),
    ("ump", {"block_size": 64}, 0.5, "sparsegpt only"),
])
def test_bad_options_are_one_line_errors(model, method, options, sparsity, match):
    with pytest.raises(HfpruneError, match=match):
        unstructured_masks(model, method, sparsity, **options)


def test_layer_by_layer_targets_must_lie_in_one_stack_of_decoder_layers(model, calibration):
    with pytest.raises(HfpruneError, match="multi_modal_projector.linear_1' is in none"):
        unstructured_masks(model, "wanda", 0.5, targets=r"model\.multi_modal_projector\..*", calibration=calibration)
    with pytest.raises(HfpruneError, match="one stack of decoder layers"):
        unstructured_masks(model, "wanda", 0.5, targets=r".*layers\.0\.mlp\.fc1", calibration=calibration)


def test_an_unquoted_yaml_pattern_reads_back():
    import yaml

    entry = yaml.safe_load("{name: wanda, granularity: 2:4}")
    assert entry["granularity"] == 124  # YAML 1.1 sexagesimal
    assert method_from("wanda", granularity=entry["granularity"]).pattern == "2:4"
    assert method_from("sparsegpt", granularity=248).pattern == "4:8"


def test_hfprune_methods_lists_the_new_methods_with_their_options_and_needs():
    from typer.testing import CliRunner

    from hfprune.cli import app

    lines = {line.split()[0]: line for line in CliRunner().invoke(app, ["methods"]).output.splitlines()}
    assert "needs --calibration-data" in lines["wanda"] and "granularity='row'" in lines["wanda"]
    assert "needs --calibration-data" in lines["sparsegpt"] and "block_size=128" in lines["sparsegpt"]
    assert "needs --calibration-data" in lines["owl"] and "needs" not in lines["ump"]
