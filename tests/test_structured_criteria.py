"""Structured criteria and allocations on tiny LLMs, a VLM's language model and a ViT-like encoder: every criterion
reaches the asked widths under every allocation, and each score is what its paper defines — recomputed here from
hooks, autograd and the hidden states transformers returns, not from hfprune's own statistics."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from tiny_models import ARCHITECTURES, calibration_batches
from hfprune.errors import HfpruneError
from hfprune.models.transformer.groups import block_groups
from hfprune.models.transformer.surgery import checkpoint_kind, prune_model
from hfprune.pruning.structured.gates import UnitGates
from hfprune.pruning.structured.importance import IMPORTANCES
from hfprune.pruning.structured.masks import criterion_scores, structured_mask, token_loss

WIDTH_METHODS = ["random", "l1", "l2", "wanda", "flap", "taylor_fo", "llm_pruner_taylor"]
D, HEADS, KV, FFN, LAYERS = 16, 4, 2, 96, 3  # tests/tiny_models.py


@functools.cache
def _model(name: str = "llama"):
    return ARCHITECTURES[name].build()


@functools.cache
def _batches(name: str = "llama"):
    return calibration_batches(ARCHITECTURES[name], _model(name), batches=2)


def _fresh(name: str = "llama"):
    return copy.deepcopy(_model(name))


def _tokens(batch) -> torch.Tensor:
    return batch["attention_mask"].bool()


def _inputs_of(model, module_name: str, batches) -> torch.Tensor:
    """The inputs of a module over every non-padding position of ``batches`` (positions × features)."""
    rows = []
    module = model.get_submodule(module_name)

    def hook(_, args):
        rows.append(args[0])

    handle = module.register_forward_pre_hook(hook)
    with torch.no_grad():
        for batch in batches:
            model(**batch)
            x = rows.pop()
            rows.append(x[_tokens(batch)] if x.shape[:2] == batch["attention_mask"].shape else x.reshape(-1, x.shape[-1]))
    handle.remove()
    return torch.cat(rows).double()


def _kept_per_layer(mask, kind, layers=LAYERS, size=None):
    return [len(mask[f"layers.{i}.{kind}"]) if f"layers.{i}.{kind}" in mask else size for i in range(layers)]


# -- every criterion, every allocation: the asked widths ------------------------------------------------------------

@pytest.mark.parametrize("allocation", ["uniform", "global", "owl"])
@pytest.mark.parametrize("method", WIDTH_METHODS)
def test_every_criterion_reaches_the_asked_widths(method, allocation):
    model = _fresh()
    groups = block_groups(model)
    mask = structured_mask(model, groups, {"heads": 0.5, "ffn": 0.25}, method, allocation=allocation,
                           batches=_batches(), seed=1)
    heads, ffn = _kept_per_layer(mask, "heads"), _kept_per_layer(mask, "ffn")
    assert sum(heads) == LAYERS * HEADS // 2 and sum(ffn) == LAYERS * FFN - round(0.25 * LAYERS * FFN)
    for i in range(LAYERS):  # grouped-query attention: each key/value group keeps as many query heads, at least one
        per_group = [sum(1 for h in mask[f"layers.{i}.heads"] if h // (HEADS // KV) == g) for g in range(KV)]
        assert per_group[0] == per_group[1] >= 1
    if allocation == "uniform":
        assert heads == [2] * LAYERS and ffn == [72] * LAYERS
    pruned = prune_model(model, groups, mask)
    batch = _batches()[0]
    with UnitGates(model, groups) as gates:
        gates.set_mask(mask)
        gated = model(**batch).logits
    torch.testing.assert_close(pruned(**batch).logits, gated, atol=1e-5, rtol=0)
    uniform = len(set(heads)) == 1 and len(set(ffn)) == 1
    assert checkpoint_kind(pruned.config) == ("native" if uniform else "own_code")


@pytest.mark.parametrize("name, ratios", [("qwen2_5_vl", {"kv_groups": 0.5, "ffn": 0.5}),
                                          ("llava", {"heads": 0.5, "layers": 0.34}),
                                          ("deit", {"heads": 0.5, "ffn": 0.5})])
@pytest.mark.parametrize("method", ["l2", "wanda", "flap", "llm_pruner_taylor"])
def test_criteria_prune_a_vlms_language_model_and_an_encoder(name, ratios, method):
    if name == "deit" and method == "llm_pruner_taylor":  # an encoder's loss needs labels
        batches = [{**batch, "labels": torch.tensor([0, 1])} for batch in _batches(name)]
    else:
        batches = _batches(name)
    if method == "flap" and "layers" in ratios:
        ratios = {key: value for key, value in ratios.items() if key != "layers"}
    model = _fresh(name)
    groups = block_groups(model)
    mask = structured_mask(model, groups, ratios, method, batches=batches)
    for key, ratio in ratios.items():
        for group in (g for g in groups.values() if g.kind == key):
            assert len(mask[group.name]) == group.size - math.floor(ratio * group.size + 0.5)
    batch = _batches(name)[0]
    with UnitGates(model, groups) as gates:
        gates.set_mask(mask)
        gated = model(**batch)
    pruned = prune_model(model, groups, mask)
    first = lambda out: out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state  # noqa
    torch.testing.assert_close(first(pruned(**batch)), first(gated), atol=1e-5, rtol=0)


# -- each score as its paper defines it -----------------------------------------------------------------------------

def test_l2_is_the_norm_of_everything_a_head_owns():
    model = _model()
    attention = model.model.layers[0].self_attn
    scores = criterion_scores("l2", model, block_groups(model), ["layers.0.heads"])["layers.0.heads"]
    rows = slice(D, 2 * D)  # query head 1 (GQA: a query head owns its query rows and output columns)
    expected = math.sqrt(attention.q_proj.weight[rows].double().pow(2).sum() + attention.o_proj.weight[:, rows]
                         .double().pow(2).sum())
    assert scores[1].item() == pytest.approx(expected, rel=1e-9)


def test_wanda_sums_weight_times_input_norm_over_a_units_weights():
    model, batches = _model(), _batches()
    groups = block_groups(model)
    scores = criterion_scores("wanda", model, groups, ["layers.1.heads", "layers.1.ffn"], batches=batches)
    layer = model.model.layers[1]
    q_norm = _inputs_of(model, "model.layers.1.self_attn.q_proj", batches).pow(2).sum(0).sqrt()
    o_norm = _inputs_of(model, "model.layers.1.self_attn.o_proj", batches).pow(2).sum(0).sqrt()
    rows = slice(2 * D, 3 * D)
    head = (layer.self_attn.q_proj.weight[rows].double().abs() * q_norm).sum() + \
        (layer.self_attn.o_proj.weight[:, rows].double().abs() * o_norm[rows]).sum()
    assert scores["layers.1.heads"][2].item() == pytest.approx(head.item(), rel=1e-6)
    up_norm = _inputs_of(model, "model.layers.1.mlp.up_proj", batches).pow(2).sum(0).sqrt()
    down_norm = _inputs_of(model, "model.layers.1.mlp.down_proj", batches).pow(2).sum(0).sqrt()
    mlp, j = layer.mlp, 5
    neuron = (mlp.gate_proj.weight[j].double().abs() * up_norm).sum() + (mlp.up_proj.weight[j].double().abs()
                                                                         * up_norm).sum() + \
        (mlp.down_proj.weight[:, j].double().abs() * down_norm[j]).sum()
    assert scores["layers.1.ffn"][j].item() == pytest.approx(neuron.item(), rel=1e-6)


def test_flap_is_input_variance_times_squared_column_norm_at_the_consumer():
    model, batches = _model(), _batches()
    scores = criterion_scores("flap", model, block_groups(model), ["layers.0.heads", "layers.2.ffn"],
                              batches=batches)
    x = _inputs_of(model, "model.layers.0.self_attn.o_proj", batches)
    metric = x.var(0, unbiased=True) * model.model.layers[0].self_attn.o_proj.weight.double().pow(2).sum(0)
    torch.testing.assert_close(scores["layers.0.heads"], metric.view(HEADS, D).sum(1), rtol=1e-6, atol=0)
    x = _inputs_of(model, "model.layers.2.mlp.down_proj", batches)
    metric = x.var(0, unbiased=True) * model.model.layers[2].mlp.down_proj.weight.double().pow(2).sum(0)
    torch.testing.assert_close(scores["layers.2.ffn"], metric, rtol=1e-6, atol=0)


def test_flap_compensation_folds_the_removed_channels_mean_into_the_bias():
    model, batches = _fresh(), _batches()
    groups = block_groups(model)
    down = "model.layers.0.mlp.down_proj"
    x = _inputs_of(model, down, batches)
    dense_mean = (x @ model.get_submodule(down).weight.double().T).mean(0)
    assert model.get_submodule(down).bias is None
    mask = structured_mask(model, groups, {"layers.0.ffn": 0.5}, "flap", options={"compensate": True},
                           batches=batches)
    removed = sorted(set(range(FFN)) - set(mask["layers.0.ffn"]))
    layer = model.get_submodule(down)
    expected = layer.weight.double()[:, removed] @ x[:, removed].mean(0)
    torch.testing.assert_close(layer.bias.double(), expected, rtol=1e-5, atol=1e-6)
    # what the pruned layer adds on average over the calibration positions is what the dense one added
    pruned = prune_model(model, groups, mask)
    pruned_down = pruned.get_submodule(down)
    kept_mean = (x[:, list(mask["layers.0.ffn"])] @ pruned_down.weight.double().T).mean(0) + pruned_down.bias.double()
    torch.testing.assert_close(kept_mean, dense_mean, rtol=1e-5, atol=1e-5)
    assert checkpoint_kind(pruned.config) == "own_code"  # Llama's down_proj has no bias in its config
    batch = batches[0]
    with UnitGates(model, groups) as gates:
        gates.set_mask(mask)
        gated = model(**batch).logits
    torch.testing.assert_close(pruned(**batch).logits, gated, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["element", "vector"])
def test_llm_pruner_taylor_is_weight_times_accumulated_gradient(variant):
    model, batches = _fresh(), _batches()
    scores = criterion_scores("llm_pruner_taylor", model, block_groups(model), ["layers.2.heads"], batches=batches,
                              options={"variant": variant})["layers.2.heads"]
    attention = model.model.layers[2].self_attn
    weights = [attention.q_proj.weight, attention.o_proj.weight]
    grads = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    for batch in batches:
        for total, grad in zip(grads, torch.autograd.grad(token_loss(model, batch), weights)):
            total += grad.double()
    rows = slice(3 * D, 4 * D)
    q = weights[0].double()[rows] * grads[0][rows]
    o = weights[1].double()[:, rows] * grads[1][:, rows]
    expected = q.abs().sum() + o.abs().sum() if variant == "element" else q.sum().abs() + o.sum().abs()
    assert scores[3].item() == pytest.approx(expected.item(), rel=1e-5)


def test_block_influence_is_one_minus_the_mean_cosine_of_a_blocks_hidden_states():
    model, batches = _fresh(), _batches()
    with torch.no_grad():  # block 1 adds nothing: its output is its input
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    groups = block_groups(model)
    influence = criterion_scores("block_influence", model, groups, ["layers"], batches=batches)["layers"]
    cos, count = torch.zeros(LAYERS - 1, dtype=torch.float64), 0
    for batch in batches:
        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states  # inputs of each block, then normed
        tokens = _tokens(batch)
        for i in range(LAYERS - 1):
            cos[i] += torch.nn.functional.cosine_similarity(hidden[i].double(), hidden[i + 1].double(),
                                                            dim=-1)[tokens].sum()
        count += int(tokens.sum())
    torch.testing.assert_close(influence[:LAYERS - 1], 1 - cos / count, rtol=1e-6, atol=1e-9)
    assert influence[1].item() == pytest.approx(0.0, abs=1e-9)
    mask = structured_mask(model, groups, {"layers": 0.34}, "block_influence", batches=batches)
    assert mask["layers"] == (0, 2)


def test_owl_gives_the_block_with_more_outliers_a_lower_ratio():
    model, batches = _fresh(), _batches()
    with torch.no_grad():  # outliers in block 2: a few weights far above the rest
        model.model.layers[2].mlp.up_proj.weight[:, :4] *= 20
    groups = block_groups(model)
    mask = structured_mask(model, groups, {"ffn": 0.25}, "l1", allocation="owl", batches=batches, lam=0.08)
    # OWL: D_l = share of |W|·‖X‖ above 5 × the block's mean, over the block's Linears
    ratios = []
    for i in range(LAYERS):
        layer, scores = model.model.layers[i], []
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            norm = _inputs_of(model, f"model.layers.{i}.{name}", batches).pow(2).sum(0).sqrt()
            scores.append((layer.get_submodule(name).weight.double().abs() * norm).flatten())
        score = torch.cat(scores)
        ratios.append(float((score > 5 * score.mean()).double().mean()))
    low, high = min(ratios), max(ratios)
    spread = [0.25 + 0.08 - 0.16 * (r - low) / (high - low) for r in ratios]
    spread = [r + 0.25 - sum(spread) / LAYERS for r in spread]  # mean S over equally wide layers
    removed = [FFN - kept for kept in _kept_per_layer(mask, "ffn")]
    assert sum(removed) == round(0.25 * LAYERS * FFN)
    assert all(abs(r - s * FFN) < 1 for r, s in zip(removed, spread))  # rounded to whole neurons
    assert removed.index(min(removed)) == ratios.index(high) == 2


def test_global_removes_the_lowest_scores_over_all_layers():
    model = _model()
    groups = block_groups(model)
    mask = structured_mask(model, groups, {"ffn": 0.25}, "l1", allocation="global")
    scores = criterion_scores("l1", model, groups, [f"layers.{i}.ffn" for i in range(LAYERS)])
    everything = sorted((float(scores[f"layers.{i}.ffn"][j]), i, j) for i in range(LAYERS) for j in range(FFN))
    lowest = {(i, j) for _, i, j in everything[:round(0.25 * LAYERS * FFN)]}
    removed = {(i, j) for i in range(LAYERS) for j in set(range(FFN)) - set(mask[f"layers.{i}.ffn"])}
    assert removed == lowest


# -- bad input: one line, before any work ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, ratios, allocation, options, calibrated, message", [
    ("wanda", {"heads": 0.5}, "uniform", {}, False, "needs calibration data"),
    ("flap", {"layers": 0.34}, "uniform", {}, True, "flap scores heads, kv_groups, ffn, not layers"),
    ("block_influence", {"heads": 0.5}, "uniform", {}, True, "scores layers, not heads"),
    ("l1", {"layers.0.ffn": 0.5}, "global", {}, False, "'layers.0.ffn' is no kind"),
    ("l1", {"ffn": 0.5}, "owl", {}, False, "owl needs calibration data"),
    ("l1", {"ffn": 0.5}, "best", {}, False, "unknown allocation 'best'"),
    ("flap", {"ffn": 0.5}, "uniform", {"compensation": True}, True, "option compensation"),
    ("l1", {"heads": 0.25}, "global", {}, False, "not a multiple of the 2 key/value groups"),
])
def test_bad_requests_are_one_line(method, ratios, allocation, options, calibrated, message):
    model = _model()
    with pytest.raises(HfpruneError, match=message) as error:
        structured_mask(model, block_groups(model), ratios, method, allocation=allocation, options=options,
                        batches=_batches() if calibrated else None)
    assert "\n" not in str(error.value)


def test_the_registry_names_each_criterion_once():
    assert set(IMPORTANCES) == {*WIDTH_METHODS, "block_influence"}
    assert all(importance.name == name for name, importance in IMPORTANCES.items())
