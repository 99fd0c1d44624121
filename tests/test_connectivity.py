"""Disconnected paths and effective sparsity, on hand-made masks whose expected sets are derived by hand."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.errors import HfpruneError
from hfprune.models.sparse_mlp.modeling_sparse_mlp import SparseMLPConfig, SparseMLPForBinaryClassification
from hfprune.pruning.connectivity import analyse

NAMES = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]


def _mlp(*supports):
    """A 2→3→3→1 sparse MLP with random nonzero weights (both signs) and nonzero biases, cut to ``supports``."""
    torch.manual_seed(0)
    model = SparseMLPForBinaryClassification(SparseMLPConfig(hidden_sizes=[3, 3]))
    with torch.no_grad():
        for layer, support in zip(model.layers, supports):
            signs = torch.where(torch.rand_like(layer.weight) < 0.5, -1.0, 1.0)
            layer.weight.copy_((0.5 + torch.rand_like(layer.weight)) * signs * torch.tensor(support))
            layer.bias.fill_(0.3)
    return model


def _row(connectivity, name):
    return next(row for row in connectivity.layers if row.name == name)


# Hidden layer 1: a0 ← x0, x1; a1 ← x1; a2 ← nothing (it has outputs but no inputs).
# Hidden layer 2: b0 ← a0, a2; b1 ← a1; b2 ← a0 (b2 has inputs but no outputs).
# Output ← b0, b1.
W0 = [[1, 1], [0, 1], [0, 0]]
W1 = [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
W2 = [[1, 1, 0]]


def test_mlp_with_a_unit_without_outputs_and_one_without_inputs():
    result = analyse(_mlp(W0, W1, W2))
    effective = result.effective_masks()
    # effective: every W0 nonzero (a0, a1 reach the output through b0, b1); W1[0,0] (a0→b0), W1[1,1] (a1→b1);
    # both W2 nonzeros. W1[0,2] (a2→b0) reads a unit that receives nothing: no path from input.
    # W1[2,0] (a0→b2) feeds b2, which reaches no output: no path to output.
    assert effective["layers.0.weight"].tolist() == [[True, True], [False, True], [False, False]]
    assert effective["layers.1.weight"].tolist() == [[True, False, False], [False, True, False],
                                                     [False, False, False]]
    assert effective["layers.2.weight"].tolist() == [[True, True, False]]
    assert result.no_path_from_input["layers.1.weight"].tolist() == [[False, False, True], [False] * 3, [False] * 3]
    assert result.no_path_to_output["layers.1.weight"].tolist() == [[False] * 3, [False] * 3, [True, False, False]]
    assert not result.no_path_from_input["layers.0.weight"].any()
    assert not result.no_path_to_output["layers.2.weight"].any()
    assert (result.nonzeros, result.effective_nonzeros, result.removable) == (9, 7, 2)
    assert result.total == 6 + 9 + 3
    assert result.sparsity == pytest.approx(1 - 9 / 18) and result.effective_sparsity == pytest.approx(1 - 7 / 18)
    # dead units: a2 (layer 0), b2 (layer 1: its only incoming weight is not effective), none at the output
    assert [_row(result, name).dead_units for name in NAMES] == [1, 1, 0]
    row = _row(result, "layers.1.weight")
    assert (row.total, row.nonzero, row.effective, row.no_path_to_output, row.no_path_from_input) == (9, 4, 2, 1, 1)


def test_weights_argument_stands_in_for_the_model_and_leaves_it_unchanged():
    model = _mlp([[1, 1]] * 3, [[1, 1, 1]] * 3, [[1, 1, 1]])
    before = [p.clone() for p in model.parameters()]
    masks = {name: torch.tensor(support, dtype=torch.bool) for name, support in zip(NAMES, (W0, W1, W2))}
    result = analyse(model, weights=masks)
    assert (result.nonzeros, result.effective_nonzeros) == (9, 7)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    only = analyse(model, weights={"layers.1.weight": masks["layers.1.weight"]})
    assert [row.name for row in only.layers] == ["layers.1.weight"]
    # the others dense: all of W1's 4 nonzeros now have paths (a2 gets input, b2 reaches the output)
    assert only.effective_nonzeros == 4
    with pytest.raises(HfpruneError, match="layers.9.weight"):
        analyse(model, weights={"layers.9.weight": masks["layers.1.weight"]})


def test_fully_cut_layer_disconnects_everything():
    result = analyse(_mlp([[1, 1]] * 3, [[0, 0, 0]] * 3, [[1, 1, 1]]))
    # W0's 6 weights receive the input but reach no output; W2's 3 read units that receive nothing
    assert result.effective_nonzeros == 0 and result.nonzeros == 9
    assert _row(result, "layers.0.weight").no_path_to_output == 6
    assert _row(result, "layers.2.weight").no_path_from_input == 3
    assert result.effective_sparsity == 1.0
    assert [_row(result, name).dead_units for name in NAMES] == [3, 3, 1]


def test_dense_mlp_is_all_effective():
    torch.manual_seed(1)
    result = analyse(SparseMLPForBinaryClassification(SparseMLPConfig(hidden_sizes=[3, 3])))
    assert result.nonzeros == result.effective_nonzeros == result.total == 18
    assert result.removable == 0 and result.sparsity == 0.0 and result.effective_sparsity == 0.0
    assert all(mask.all() for mask in result.effective_masks().values())


def test_conv_chain_with_a_zeroed_and_an_unused_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 3, padding=1))
    with torch.no_grad():
        model[0].weight[1] = 0  # channel 1 receives nothing: conv2's 9 weights reading it have no path from input
        model[2].weight[:, 2] = 0  # channel 2 is read by nobody: conv1's 9 weights making it reach no output
    result = analyse(model, example_input=torch.randn(4, 1, 5, 5))
    first, second = _row(result, "0.weight"), _row(result, "2.weight")
    assert (first.total, first.nonzero, first.effective, first.no_path_to_output, first.no_path_from_input) == \
        (27, 18, 9, 9, 0)
    assert (second.total, second.nonzero, second.effective, second.no_path_to_output, second.no_path_from_input) == \
        (27, 18, 9, 0, 9)
    assert result.effective["0.weight"][0].all() and not result.effective["0.weight"][2].any()
    assert result.no_path_from_input["2.weight"][:, 1].all()
    assert (first.dead_units, second.dead_units) == (2, 0)


class _ResidualNet(nn.Module):
    """x → a → ReLU → h + c(ReLU(b(h))) → ReLU → out."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.out = nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.out(torch.relu(h + self.c(torch.relu(self.b(h)))))


@pytest.mark.parametrize("cut", ["b", "c"])
def test_cut_residual_branch_keeps_the_identity_path(cut):
    torch.manual_seed(0)
    model = _ResidualNet()
    with torch.no_grad():
        getattr(model, cut).weight.zero_()
    result = analyse(model, example_input=torch.randn(2, 2))
    # a and out stay effective through the identity; the uncut branch weights lose their path:
    # b cut → c reads units that receive nothing (no path from input); c cut → b's outputs reach nothing
    assert result.effective["a.weight"].all() and result.effective["out.weight"].all()
    other = "c" if cut == "b" else "b"
    row = _row(result, f"{other}.weight")
    assert row.effective == 0 and row.nonzero == 9
    assert (row.no_path_from_input, row.no_path_to_output) == ((9, 0) if cut == "b" else (0, 9))
    assert result.effective_nonzeros == 6 + 3


def test_pooling_and_batchnorm_families_count_paths(tmp_path):
    """lenet5_mini: max-pooling averages, so every conv weight of a dense model is effective."""
    from hfprune.models import get_adapter

    torch.manual_seed(0)
    adapter = get_adapter("lenet5_mini")
    model = adapter.build(adapter.config(10, 1, 32, {"conv_filters": [3, 3, 3], "hidden_sizes": [4]}))
    with torch.no_grad():
        model.hidden[0].weight[:, :] = model.hidden[0].weight.sign() * 0.1  # nonzero everywhere
        model.conv3.weight[1] = 0  # conv3 filter 1 makes flat features [1·span, 2·span): hidden.0 reads nothing there
    result = analyse(model)
    span = model.config.final_spatial_size ** 2
    assert _row(result, "hidden.0.weight").no_path_from_input == 4 * span
    assert _row(result, "conv1.weight").effective == _row(result, "conv1.weight").nonzero


def test_resnet_cifar_checkpoint_through_the_cli(tmp_path):
    from convnet_fixtures import tiny_model

    model = tiny_model("resnet_cifar")
    with torch.no_grad():
        model.stages[0][0].conv1.weight[0] = 0  # filter 0 of the first block's conv1: 4 in-channels × 9
    model.save_pretrained(tmp_path / "ckpt")
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "ckpt"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["name"]: row for row in payload["layers"]}
    conv1, conv2 = rows["stages.0.0.conv1.weight"], rows["stages.0.0.conv2.weight"]
    # conv1 [4, 4, 3, 3]: filter 0 zeroed → 36 zeros; conv2 [4, 4, 3, 3] reads channel 0 (a BN bias constant at
    # most): its 4 × 9 weights on that channel have no path from input; everything else is effective
    assert conv1["total"] - conv1["nonzero"] == 36 and conv1["effective"] == conv1["nonzero"]
    assert conv2["no_path_from_input"] == 36 and conv2["effective"] == conv2["nonzero"] - 36
    totals = payload["totals"]
    assert totals["removable"] == 36 and totals["no_path_to_output"] == 0
    assert totals["effective_nonzeros"] == totals["nonzeros"] - 36
    assert rows["classifier.weight"]["effective"] == rows["classifier.weight"]["total"]
    table = CliRunner().invoke(app, ["diagnose", str(tmp_path / "ckpt")])
    assert table.exit_code == 0 and "stages.0.0.conv2.weight" in table.stdout and "effective sparsity" in table.stdout
    plot = CliRunner().invoke(app, ["diagnose", str(tmp_path / "ckpt"), "--plot", str(tmp_path / "x.png")])
    assert isinstance(plot.exception, HfpruneError) and "MLP" in str(plot.exception)


def test_diagnose_finds_a_study_trial_and_draws_an_mlp(tmp_path):
    model = _mlp(W0, W1, W2)
    model.save_pretrained(tmp_path / "study" / "checkpoints" / "s0_m1")
    (tmp_path / "study" / "best.json").write_text(json.dumps({"trial_id": "s0:m1"}))
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "study"), "--trial", "s0:m1", "--json",
                                      "--plot", str(tmp_path / "mlp.png")])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout.strip().splitlines()[-1])["totals"]
    assert (totals["nonzeros"], totals["effective_nonzeros"]) == (9, 7)
    assert (tmp_path / "mlp.png").read_bytes()[:4] == b"\x89PNG"
    missing = CliRunner().invoke(app, ["diagnose", str(tmp_path / "study"), "--trial", "s9:m9"])
    assert isinstance(missing.exception, HfpruneError) and "s0_m1" in str(missing.exception)
    bare = CliRunner().invoke(app, ["diagnose", str(tmp_path / "study")])
    assert isinstance(bare.exception, HfpruneError) and "--trial" in str(bare.exception)
    nowhere = CliRunner().invoke(app, ["diagnose", str(tmp_path / "nope")])
    assert isinstance(nowhere.exception, HfpruneError) and "does not exist" in str(nowhere.exception)


def test_transformers_are_refused_and_diagnose_names_the_supported_families(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from vit_fixtures import TINY_VIT

    model = ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=3))
    with pytest.raises(HfpruneError, match="positive-homogeneous layers.*is a ViTAttention"):
        analyse(model)
    model.save_pretrained(tmp_path / "vit")
    refused = CliRunner().invoke(app, ["diagnose", str(tmp_path / "vit")])
    assert isinstance(refused.exception, HfpruneError)
    assert "model family 'vit'" in str(refused.exception)
    assert "supported families: lenet5_mini, resnet_cifar, vgg_cifar, hf_resnet, sparse_mlp" in str(refused.exception)
    with pytest.raises(HfpruneError, match="LayerNorm"):
        analyse(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), example_input=torch.ones(1, 2))
    from transformers import ResNetConfig, ResNetForImageClassification

    gelu = ResNetForImageClassification(ResNetConfig(hidden_act="gelu", embedding_size=4, hidden_sizes=[4, 4, 4, 4],
                                                     depths=[1, 1, 1, 1]))
    with pytest.raises(HfpruneError, match="GELU"):  # an hf_resnet family model, but not with ReLU
        analyse(gelu, example_input=torch.ones(1, 3, 32, 32))


def test_max_pooling_counts_every_window_position():
    """Conv 3×3 (padding 1) on a 2×2 input, then a 2×2 max-pool: the four conv outputs tie, so max-pooling's
    gradient would reach only the top-left one, whose window misses the kernel's first row and column. Every
    one of the 9 weights reads a real pixel at some output position the pool may pick: all are effective."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 1))
    result = analyse(model, example_input=torch.randn(1, 1, 2, 2))
    assert _row(result, "0.weight").effective == 9


@pytest.mark.parametrize("kind", ["resnet_cifar", "vgg_cifar", "hf_resnet18", "hf_resnet50"])
def test_dense_convnet_families_are_all_effective(kind):
    from convnet_fixtures import tiny_model

    model = tiny_model(kind)
    result = analyse(model, example_input=torch.randn(1, 3, 64, 64))
    assert result.nonzeros == result.total and result.effective_nonzeros == result.total


def _reachability(masks):
    """The definition on the layer graph: unit sets reached from the input (forward) and reaching the output
    (backward); a weight is effective iff nonzero, its input unit is reached and its output unit reaches."""
    forward = [torch.ones(masks[0].shape[1], dtype=torch.bool)]
    for mask in masks:
        forward.append((mask.double() @ forward[-1].double()) > 0)
    backward = [torch.ones(masks[-1].shape[0], dtype=torch.bool)]
    for mask in reversed(masks):
        backward.insert(0, (mask.double().T @ backward[0].double()) > 0)
    effective = [mask & forward[l][None, :] & backward[l + 1][:, None] for l, mask in enumerate(masks)]
    no_input = [mask & ~forward[l][None, :] for l, mask in enumerate(masks)]
    return effective, no_input


@pytest.mark.parametrize("depth, width, keep, seed", [(3, 6, 0.3, 0), (4, 5, 0.5, 1), (8, 4, 0.45, 2),
                                                      (400, 4, 0.6, 3)])
def test_random_sparse_mlps_match_graph_reachability(depth, width, keep, seed):
    generator = torch.Generator().manual_seed(seed)
    widths = [2, *[width] * depth, 1]
    layers = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    masks = [torch.rand(layer.weight.shape, generator=generator) < keep for layer in layers]
    model = nn.Sequential(*[part for layer in layers for part in (layer, nn.ReLU())][:-1])
    with torch.no_grad():
        for layer, mask in zip(layers, masks):
            layer.weight.mul_(mask)
    names = [f"{index}.weight" for index in range(0, 2 * len(layers), 2)]
    result = analyse(model, example_input=torch.ones(1, 2))
    effective, no_input = _reachability(masks)
    for name, expected, expected_no_input in zip(names, effective, no_input):
        assert torch.equal(result.effective[name], expected), name
        assert torch.equal(result.no_path_from_input[name], expected_no_input), name
    assert result.effective_nonzeros == sum(int(mask.sum()) for mask in effective)
    if depth == 400:
        assert result.effective_nonzeros > 0, "the deep chain keeps some paths at this density"


def test_a_thin_path_through_400_layers_beside_wide_rows_stays_effective():
    """Each hidden layer: unit 0 reads only unit 0 (the one path), unit 1 reads all 8 units. Scaled by a constant
    per layer, the path would carry 8^-400 (below float64's range); its 401 weights are effective, and unit 1's
    row reads 7 units that receive nothing."""
    width, depth = 8, 400
    widths = [2, *[width] * depth, 1]
    layers = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    with torch.no_grad():
        for index, layer in enumerate(layers):
            layer.weight.zero_()
            layer.weight[0, 0] = 0.5
            if 0 < index < depth:
                layer.weight[1, :] = 0.5
    model = nn.Sequential(*[part for layer in layers for part in (layer, nn.ReLU())][:-1])
    result = analyse(model, example_input=torch.ones(1, 2))
    # effective: the [0, 0] weight of each of the 401 layers (unit 1 feeds only rows 1, never unit 0 or the output).
    # In layers[1] (module "2"), row 1 reads unit 0 (reached) and units 1..7, which layers[0] leaves empty.
    assert result.effective_nonzeros == depth + 1
    assert result.no_path_from_input["2.weight"][1].tolist() == [False] + [True] * 7


def test_oracle_study_records_and_reports_nominal_and_effective_nonzeros(tmp_path):
    """Every trial of an oracle study of a supported family records its trained model's nonzero weights; the
    report tabulates nominal against effective per setting. A physically pruned LeNet keeps every remaining
    weight on a path, so the two agree."""
    from study_helpers import tiny_recipe

    from hfprune.study.registry import parse_recipe
    from hfprune.study.registry import report_study
    from hfprune.study.runner import run_study

    recipe = tiny_recipe(pruning={"settings": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random", "num": 2}}]})
    recipe["retrain"] = {**recipe["retrain"], "epochs": 1, "short_fraction": None}
    result = run_study(parse_recipe(recipe), tmp_path, progress=False)
    (n,) = {record["nonzeros"] for record in result.records}  # conv1 at 0.5: the same widths in every trial
    for record in result.records:
        assert record["effective_nonzeros"] == n > 0 and record["disconnected_weights"] == 0
    report_study(tmp_path, plots=False)
    report = (tmp_path / "report.md").read_text()
    assert "## Nominal vs effective nonzero weights" in report
    assert f"| conv1@0.5 | 2 | {n:,.1f} | {n:,.1f} | 0 | 0 |" in report


def test_an_hf_resnet_checkpoint_is_diagnosed_at_the_input_size_given(tmp_path):
    from convnet_fixtures import tiny_model

    model = tiny_model("hf_resnet18")
    model.save_pretrained(tmp_path / "resnet")
    without = CliRunner().invoke(app, ["diagnose", str(tmp_path / "resnet")])
    assert isinstance(without.exception, HfpruneError) and "--input-size" in str(without.exception)
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "resnet"), "--input-size", "32", "--json"])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout.strip().splitlines()[-1])["totals"]
    from hfprune.models import get_adapter

    expected = analyse(get_adapter("hf_resnet").load_pretrained(str(tmp_path / "resnet")),
                       example_input=torch.zeros(1, 3, 32, 32)).totals()
    assert totals == expected and totals["nonzeros"] > 0


def _mlp_checkpoint(folder, hidden_sizes):
    from hfprune.models import get_adapter

    adapter = get_adapter("sparse_mlp")
    adapter.build(adapter.config(2, 2, 0, {"hidden_sizes": hidden_sizes})).save_pretrained(folder)
    return folder


def test_weights_of_another_model_are_an_error_never_a_wrong_analysis(tmp_path):
    """A folder whose config and weights do not belong together (weights of a smaller MLP under a config of a
    larger one): transformers would initialise the rest at random, which hfprune refuses to analyse."""
    import shutil

    target = _mlp_checkpoint(tmp_path / "wide", [4, 4, 4])
    other = _mlp_checkpoint(tmp_path / "narrow", [2, 2])
    shutil.copy(other / "model.safetensors", target / "model.safetensors")
    result = CliRunner().invoke(app, ["diagnose", str(target)])
    assert isinstance(result.exception, HfpruneError), result.output
    assert "do not load exactly" in str(result.exception) or "do not fit its config" in str(result.exception)
    assert "sparsity" not in result.output


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\xff" * 64,
                                     (2**60).to_bytes(8, "little") + b"{}"])
def test_garbage_or_truncated_weights_are_one_line(tmp_path, content):
    target = _mlp_checkpoint(tmp_path / "mlp", [3, 3, 3])
    (target / "model.safetensors").write_bytes(content)
    result = CliRunner().invoke(app, ["diagnose", str(target)])
    assert isinstance(result.exception, HfpruneError), result.output
    assert "\n" not in str(result.exception) and "diagnose" in str(result.exception)
