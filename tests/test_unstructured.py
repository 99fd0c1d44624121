"""Unstructured pruning (every registered method; the paper's UMP, GMP, ONP, PNP in detail) on a tiny random
TinyLLaVA and on random tensors. Wanda, OWL, SparseGPT and N:M patterns: test_calibrated_pruning.py."""

from __future__ import annotations

import copy

import pytest
import torch

from hfprune.errors import HfpruneError
from hfprune.models.llava.layout import PHI_DECODER_LINEARS
from hfprune.models.llava.tiny import tiny_llava
from hfprune.pruning.structured.groups import num_pruned
from hfprune.pruning.unstructured import (
    METHODS,
    kth_smallest_abs,
    pca_share,
    prune_smallest,
    select_targets,
    spread_ratios,
    unstructured_masks,
)
from hfprune.report.sparsity import layer_table, live_counts, render_layer_table

S = 0.4375
LAM = 0.08
LM = "model.language_model.layers"


@pytest.fixture(scope="module")
def tiny():
    model, processor = tiny_llava(seed=0, num_layers=4)
    return model, processor


@pytest.fixture
def model(tiny):
    return copy.deepcopy(tiny[0])


def text_batches(tiny):
    """One right-padded batch of two sentences (model inputs of the language model alone)."""
    batch = tiny[1].tokenizer(["The quick brown fox jumps over the lazy dog", "What is in the image?"],
                              return_tensors="pt", padding=True)
    return [{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}]


def calibration_for(method, tiny):
    return text_batches(tiny) if METHODS[method]().needs_calibration else None


def reference_masks(tensors: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Prune the k smallest |w| of the concatenation, ties by position: a stable sort of everything."""
    flat = torch.cat([tensor.detach().float().abs().reshape(-1) for tensor in tensors])
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    return list(keep.split([tensor.numel() for tensor in tensors]))


def random_tensor_sets():
    generator = torch.Generator().manual_seed(1)
    shapes = [(37, 11), (5,), (64, 48), (3, 7, 5)]
    normal = [torch.randn(shape, generator=generator) for shape in shapes]
    tied = [torch.randint(-3, 4, shape, generator=generator).float() * 0.25 for shape in shapes]
    zero_heavy = [torch.where(torch.rand(shape, generator=generator) < 0.8, 0.0,
                              torch.randn(shape, generator=generator))
                  for shape in shapes]
    zero_heavy[1] = -zero_heavy[1]  # -0.0 must count as 0
    return {"normal": normal, "tied": tied, "zero_heavy": zero_heavy}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["normal", "tied", "zero_heavy"])
def test_radix_select_matches_kthvalue(kind, dtype):
    tensors = [tensor.to(dtype) for tensor in random_tensor_sets()[kind]]
    flat = torch.cat([tensor.float().abs().reshape(-1) for tensor in tensors])
    for k in sorted({1, 2, 17, flat.numel() // 3, flat.numel() // 2, int(0.8 * flat.numel()), flat.numel()}):
        threshold = kth_smallest_abs(tensors, k)
        expected = torch.kthvalue(flat, k).values.item()
        assert threshold.value == expected
        assert threshold.below == int((flat < expected).sum())


@pytest.mark.parametrize("kind", ["normal", "tied", "zero_heavy"])
def test_prune_smallest_prunes_exactly_k_with_positional_ties(kind):
    tensors = random_tensor_sets()[kind]
    total = sum(tensor.numel() for tensor in tensors)
    for k in (0, 1, total // 3, total // 2, total - 1, total):
        selection = prune_smallest(tensors, k)
        assert sum(int((~mask).sum()) for mask in selection.masks) == k
        for mask, expected in zip(selection.masks, reference_masks(tensors, k)):
            assert mask.dtype == torch.bool and mask.device.type == "cpu"
            assert torch.equal(mask.reshape(-1), expected)


@pytest.mark.parametrize("kind", ["tied", "zero_heavy"])
def test_prune_smallest_in_small_chunks(monkeypatch, kind):
    import hfprune.pruning.unstructured.radix as selection

    monkeypatch.setattr(selection, "CHUNK", 7)  # ties at the threshold straddle many chunks and tensors
    tensors = random_tensor_sets()[kind]
    total = sum(tensor.numel() for tensor in tensors)
    for k in (total // 3, total // 2, total - 5):
        for mask, expected in zip(prune_smallest(tensors, k).masks, reference_masks(tensors, k)):
            assert torch.equal(mask.reshape(-1), expected)


def test_default_targets_are_the_language_model_decoder_linears(model):
    names = list(select_targets(model))
    assert names == list(select_targets(model, PHI_DECODER_LINEARS))
    assert len(names) == 4 * 6
    assert all(name.startswith(f"{LM}.") for name in names)
    assert {name.rsplit(".", 1)[1] for name in names} == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}


def test_regex_targets_and_ignore(model):
    fc1 = select_targets(model, [r".*mlp\.fc1"])
    assert any("vision_tower" in name for name in fc1) and any(name.startswith(LM) for name in fc1)
    language_only = select_targets(model, [r".*mlp\.fc1"], ignore=[r".*vision_tower.*"])
    assert language_only and all(name.startswith(LM) for name in language_only)
    assert list(select_targets(model, r"model\.multi_modal_projector\.linear_\d")) == [
        "model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"]


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_hits_the_target_sparsity(model, tiny, method):
    result = unstructured_masks(model, method, S, calibration=calibration_for(method, tiny))
    targets = select_targets(model)
    assert set(result.masks) == {f"{name}.weight" for name in targets}
    total = sum(linear.weight.numel() for linear in targets.values())
    assert result.total == total
    per_row = METHODS[method]().options().get("granularity") == "row"
    if method == "gmp":
        assert result.pruned == num_pruned(total, S)
    else:  # ±1/2 weight per Linear, or per row of a Linear whose rows are pruned alike
        rounding = sum(linear.out_features for linear in targets.values()) if per_row else len(targets)
        assert abs(result.pruned - num_pruned(total, S)) <= rounding / 2
        for name, linear in targets.items():
            rows, columns = linear.weight.shape
            pruned = int((~result.masks[f"{name}.weight"]).sum())
            assert pruned == (rows * num_pruned(columns, result.layer_ratios[name]) if per_row
                              else num_pruned(linear.weight.numel(), result.layer_ratios[name]))
    if method in ("ump", "gmp", "onp", "pnp"):
        for name, linear in targets.items():  # magnitude pruning inside each Linear
            mask, weight = result.masks[f"{name}.weight"], linear.weight.abs()
            if (~mask).any() and mask.any():
                assert weight[~mask].max() <= weight[mask].min()


def test_ump_prunes_every_layer_at_the_same_ratio(model):
    result = unstructured_masks(model, "ump", S)
    assert set(result.layer_ratios.values()) == {S}
    for name, mask in result.masks.items():
        assert int((~mask).sum()) == num_pruned(mask.numel(), S)


def test_gmp_is_the_global_kth_value_rule(model):
    result = unstructured_masks(model, "gmp", S)
    weights = [linear.weight for linear in select_targets(model).values()]
    flat = torch.cat([weight.detach().abs().reshape(-1) for weight in weights])
    k = num_pruned(flat.numel(), S)
    assert result.threshold == torch.kthvalue(flat, k).values.item()
    for mask, expected in zip(result.masks.values(), reference_masks(weights, k)):
        assert torch.equal(mask.reshape(-1), expected)


def test_gmp_on_bf16_weights(model):
    model = model.to(torch.bfloat16)
    result = unstructured_masks(model, "gmp", S)
    weights = [linear.weight for linear in select_targets(model).values()]
    k = num_pruned(sum(weight.numel() for weight in weights), S)
    assert result.pruned == k
    for mask, expected in zip(result.masks.values(), reference_masks(weights, k)):
        assert torch.equal(mask.reshape(-1), expected)


def check_spread(result, sizes):
    ratios = {group: result.layer_ratios[names[0]] for group, names in sizes.items()}
    numel = {group: sum(result.masks[f"{name}.weight"].numel() for name in names) for group, names in sizes.items()}
    mean = sum(ratios[group] * numel[group] for group in ratios) / sum(numel.values())
    assert mean == pytest.approx(S, abs=1e-12)
    assert max(ratios.values()) - min(ratios.values()) == pytest.approx(2 * LAM)
    order = sorted(ratios, key=lambda group: result.group_scores[group])
    assert [ratios[group] for group in order] == sorted(ratios.values(), reverse=True)  # higher score, lower sparsity
    return ratios


def layer_groups(model):
    return {f"{LM}.{index}": [name for name in select_targets(model) if name.startswith(f"{LM}.{index}.")]
            for index in range(4)}


@torch.no_grad()
def test_onp_gives_the_layer_with_planted_outliers_the_lowest_sparsity(model):
    generator = torch.Generator().manual_seed(3)
    for name in layer_groups(model)[f"{LM}.2"]:
        weight = model.get_submodule(name).weight
        outliers = torch.rand(weight.shape, generator=generator) < 0.02
        weight[outliers] *= 50
    result = unstructured_masks(model, "onp", S, lam=LAM)
    ratios = check_spread(result, layer_groups(model))
    assert max(result.group_scores, key=result.group_scores.get) == f"{LM}.2"
    assert min(ratios, key=ratios.get) == f"{LM}.2"


@torch.no_grad()
def test_pnp_gives_the_low_rank_layer_the_highest_sparsity(model):
    generator = torch.Generator().manual_seed(4)
    for name in layer_groups(model)[f"{LM}.1"]:
        weight = model.get_submodule(name).weight
        rows, columns = weight.shape
        weight.copy_(torch.randn(rows, 2, generator=generator) @ torch.randn(2, columns, generator=generator))
    result = unstructured_masks(model, "pnp", S, lam=LAM, variance=0.9)
    ratios = check_spread(result, layer_groups(model))
    assert min(result.group_scores, key=result.group_scores.get) == f"{LM}.1"
    assert max(ratios, key=ratios.get) == f"{LM}.1"


def test_onp_activation_score_needs_calibration_and_changes_the_allocation(model, tiny):
    with pytest.raises(HfpruneError, match="calibration"):
        unstructured_masks(model, "onp", S, score="activation")
    with pytest.raises(HfpruneError, match="empty"):
        unstructured_masks(model, "onp", S, score="activation", calibration=[])
    calibration = text_batches(tiny)
    by_weight = unstructured_masks(model, "onp", S)
    by_activation = unstructured_masks(model, "onp", S, score="activation", calibration=calibration)
    assert by_activation.group_scores != by_weight.group_scores
    assert by_activation.layer_ratios != by_weight.layer_ratios
    assert abs(by_activation.pruned - by_weight.pruned) <= len(by_weight.masks)


def test_targets_without_a_layer_index_are_their_own_groups(model):
    result = unstructured_masks(model, "pnp", S, targets=[r"model\.multi_modal_projector\..*", rf"{LM}\.0\.mlp\.fc1"])
    assert set(result.group_scores) == {"model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2",
                                        f"{LM}.0"}


@pytest.mark.parametrize("method", list(METHODS))
def test_applying_masks_leaves_untargeted_parameters_bit_identical(model, tiny, method):
    dense = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    result = unstructured_masks(model, method, S, calibration=calibration_for(method, tiny))
    result.apply(model)
    for name, parameter in model.named_parameters():
        if name in result.masks:
            mask = result.masks[name]
            kept_as_dense = torch.equal(parameter[mask], dense[name][mask])
            assert kept_as_dense != METHODS[method].updates_weights and not parameter[~mask].any()
        else:
            assert torch.equal(parameter.view(torch.int32), dense[name].view(torch.int32)), name
    counts = live_counts(model, result.masks)
    assert sum(pruned for pruned, _ in counts.values()) == result.pruned
    assert all(name.endswith(".weight") for name in counts)


def test_live_counts_count_zeros_and_tabulate_by_layer(model):
    with torch.no_grad():
        model.get_submodule(f"{LM}.0.mlp.fc1").weight[:10] = 0
    fc1, projector = f"{LM}.0.mlp.fc1.weight", "model.multi_modal_projector.linear_1.weight"
    counts = live_counts(model, [f"{LM}.0.mlp.fc1", projector])
    assert counts[fc1][0] == 10 * 64 and counts[projector][0] == 0
    table = layer_table({"live": counts})
    assert [row["layer"] for row in table["rows"]] == [f"{LM}.0", projector]
    assert table["overall"]["live"] == 10 * 64 / (counts[fc1][1] + counts[projector][1])
    text = "\n".join(render_layer_table(table))
    assert text.splitlines()[0].startswith("| layer | live |") and "**overall**" in text
    with pytest.raises(HfpruneError, match="no parameter"):
        live_counts(model, ["nope"])


def test_spread_ratios():
    sizes = {"a": 1, "b": 1, "c": 2}
    assert spread_ratios({"a": 1.0, "b": 1.0, "c": 1.0}, sizes, 0.5, 0.1) == {"a": 0.5, "b": 0.5, "c": 0.5}
    ratios = spread_ratios({"a": 0.0, "b": 1.0, "c": 0.5}, sizes, 0.5, 0.1)
    assert ratios["a"] == pytest.approx(0.6) and ratios["b"] == pytest.approx(0.4) and ratios["c"] == pytest.approx(0.5)
    clipped = spread_ratios({"a": 0.0, "b": 1.0}, {"a": 1, "b": 1}, 0.05, 0.1)
    assert clipped["b"] == 0.0 and clipped["a"] == pytest.approx(0.15)


def test_pca_share():
    assert pca_share(torch.eye(10) * 3, 0.9) == 0.9  # equal variances: 9 of 10 components
    low_rank = torch.randn(40, 3) @ torch.randn(3, 20)
    assert pca_share(low_rank, 0.9) <= 3 / 20
    assert pca_share(torch.ones(5, 4), 0.9) == 0.0  # no variance at all


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "magnitude"}, "ump, gmp, onp, pnp, wanda, owl, sparsegpt"),
    ({"sparsity": 0.0}, "strictly between 0 and 1"),
    ({"sparsity": 1.0}, "strictly between 0 and 1"),
    ({"sparsity": True}, "strictly between 0 and 1"),
    ({"targets": [r"nothing\.here"]}, r"no Linear layer matches.*layers\.N\.self_attn\.q_proj"),
    ({"targets": ["model.(layers"]}, "invalid target regex"),
    ({"ignore": ["["]}, "invalid ignore regex"),
    ({"ignore": [".*"]}, "no Linear layer matches"),
    ({"score": "gradient", "method": "onp"}, "unknown score"),
    ({"score": "activation", "method": "gmp"}, "applies to onp, owl only"),
    ({"variance": 0.0, "method": "pnp"}, "variance"),
    ({"lam": -0.1, "method": "onp"}, "lam"),
])
def test_bad_input_is_an_hfprune_error(model, kwargs, match):
    arguments = {"method": "ump", "sparsity": S, **kwargs}
    with pytest.raises(HfpruneError, match=match):
        unstructured_masks(model, arguments.pop("method"), arguments.pop("sparsity"), **arguments)
