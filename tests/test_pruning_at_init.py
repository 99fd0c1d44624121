"""Pruning at initialisation (SNIP, iterative SNIP, FORCE, GraSP, SynFlow, ProsPr): exact budgets, the scores
against hand-derived or by-definition values, data-freedom, one-step equivalences and seeded determinism."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hfprune.train.sections import OptimizerSection, TrainingSection
from hfprune.errors import HfpruneError
from hfprune.pruning.sparse_training import at_init
from hfprune.pruning.sparse_training.at_init import (
    AT_INITIALISATION_METHODS,
    Force,
    Grasp,
    IterSnip,
    Prospr,
    Snip,
    Synflow,
    batch_stream,
)
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.saliency import (
    connection_sensitivity,
    exponential_keeps,
    hessian_gradient_scores,
    keep_highest,
    keep_lowest,
    meta_gradient_scores,
    synflow_scores,
)


@dataclass
class Output:
    logits: torch.Tensor


class MLP(nn.Module):
    """``sizes[0]`` → ... → 1, ReLU between layers; logits [B]."""

    def __init__(self, *sizes: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:] + (1,)))

    def forward(self, inputs: torch.Tensor) -> Output:
        hidden = inputs
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden)
            if index < len(self.layers) - 1:
                hidden = torch.relu(hidden)
        return Output(hidden.squeeze(-1))


class Points(torch.utils.data.Dataset):
    """``n`` 2-D Gaussian points labelled by the sign of x·y."""

    def __init__(self, n: int = 256, seed: int = 0, dtype: torch.dtype = torch.float32):
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(n, 2, generator=generator, dtype=dtype)
        self.labels = (self.inputs[:, 0] * self.inputs[:, 1] > 0).to(dtype)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}


def bce(model: nn.Module, batch: dict) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(model(batch["inputs"]).logits, batch["labels"])


def training(epochs: int = 1, lr: float = 0.05, momentum: float = 0.9) -> TrainingSection:
    return TrainingSection(epochs=epochs, batch_size=64,
                           optimizer=OptimizerSection(lr=lr, momentum=momentum, weight_decay=5e-4))


def make_run(model: nn.Module, seed: int = 0, data: Points | None = None, **section) -> SparseRun:
    weights = {name: param for name, param in model.named_parameters() if name.endswith("weight")}
    return SparseRun(model, weights, data or Points(), training(**section), bce, seed=seed)


def fresh_mlp(seed: int = 0, width: int = 6) -> MLP:
    torch.manual_seed(seed)
    return MLP(2, width, width, width)  # 2·6 + 6·6 + 6·6 + 6·1 = 90 weights


FAST = {"iter_snip": {"steps": 3}, "force": {"steps": 3}, "synflow": {"iterations": 20}}


def method(cls, **options):
    name = cls.model_fields["name"].default
    return cls(**{**FAST.get(name, {}), **options})


# -- exact budgets, pruned weights zero after training ------------------------------------------------------------
@pytest.mark.parametrize("budget", [1, 5, 37, 89])
@pytest.mark.parametrize("cls", AT_INITIALISATION_METHODS, ids=lambda cls: cls.__name__)
def test_each_method_hits_its_budget_and_pruned_weights_stay_zero(cls, budget):
    run = make_run(fresh_mlp())
    assert run.total_weights == 90
    result = method(cls).run(run, budget)
    assert result.nonzeros == budget
    assert result.epochs == 1
    assert set(result.masks) == set(run.weights)
    for name, mask in result.masks.items():
        assert mask.dtype == torch.bool and mask.shape == run.weights[name].shape
        assert torch.all(run.weights[name].detach()[~mask] == 0), name
    kept = torch.cat([run.weights[name].detach()[mask] for name, mask in result.masks.items()])
    assert torch.count_nonzero(kept) == budget  # kept weights were trained, not zeroed


@pytest.mark.parametrize("budget", [0, -3, 90, 91, 2.5, True])
def test_an_impossible_budget_is_one_clear_error(budget):
    for cls in (Snip, Synflow):
        with pytest.raises(HfpruneError, match="budget"):
            method(cls).run(make_run(fresh_mlp()), budget)


# -- scores -> masks ----------------------------------------------------------------------------------------------
def test_keep_highest_is_exact_with_ties_pruned_in_tensor_then_index_order():
    scores = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([[1.0, 1.0], [3.0, 0.0]])}
    masks = keep_highest(scores, 3)
    assert masks["a"].tolist() == [False, False]  # the first ties are pruned
    assert masks["b"].tolist() == [[True, True], [True, False]]
    alive = {"a": torch.tensor([True, False]), "b": torch.tensor([[False, False], [False, True]])}
    only_alive = keep_highest(scores, 1, alive=alive)  # 3.0 is not alive: the best alive one is a[0]
    assert only_alive["a"].tolist() == [True, False] and not only_alive["b"].any()


def test_keep_lowest_keeps_the_most_negative_and_tiny_scores_keep_their_order():
    masks = keep_lowest({"a": torch.tensor([-1.0, 2.0]), "b": torch.tensor([0.5, -3.0])}, 2)
    assert masks["a"].tolist() == [True, False] and masks["b"].tolist() == [False, True]
    tiny = {"a": torch.tensor([1e-300, 3e-300, 2e-300], dtype=torch.float64)}  # float32 would flush them to 0
    assert keep_highest(tiny, 1)["a"].tolist() == [False, True, False]


def test_the_exponential_schedule_ends_at_the_budget():
    assert exponential_keeps(100, 1, 2) == [10, 1]  # 100·(1/100)^(1/2), then the budget
    assert exponential_keeps(100, 4, 1) == [4]
    keeps = exponential_keeps(90, 5, 10)
    assert keeps[-1] == 5 and all(a >= b for a, b in zip(keeps, keeps[1:])) and keeps[0] == round(90 * (5 / 90) ** 0.1)


# -- SNIP -----------------------------------------------------------------------------------------------------------
def test_snip_scores_are_the_hand_gradient_times_the_weight_on_one_layer():
    torch.manual_seed(3)
    model = MLP(3)  # one Linear 3 → 1
    inputs, labels = torch.randn(16, 3), (torch.rand(16) > 0.5).float()
    weight, bias = model.layers[0].weight.detach(), model.layers[0].bias.detach()
    logits = inputs @ weight[0] + bias[0]
    # L = mean_i BCE(z_i, y_i), z_i = w·x_i + b  ⇒  ∂L/∂w = mean_i (σ(z_i) − y_i) x_i
    gradient = ((torch.sigmoid(logits) - labels)[:, None] * inputs).mean(0)
    expected = (gradient * weight[0]).abs()
    scores = connection_sensitivity(model, {"layers.0.weight": model.layers[0].weight}, bce,
                                    [{"inputs": inputs, "labels": labels}])
    torch.testing.assert_close(scores["layers.0.weight"][0], expected.double(), rtol=1e-5, atol=1e-8)


def test_snip_keeps_the_highest_scores_of_the_first_seeded_batch_after_a_xavier_reinit():
    run = make_run(fresh_mlp())
    before = {name: weight.detach().clone() for name, weight in run.weights.items()}
    masks = Snip().prune(run, 20)
    assert all(not torch.equal(before[name], weight.detach()) for name, weight in run.weights.items())  # re-drawn
    batch = next(batch_stream(run))
    by_hand = {}
    for name, weight in run.weights.items():
        grad = torch.autograd.grad(bce(run.model, batch), weight)[0]
        by_hand[name] = (grad * weight).abs().detach()
    assert all(torch.equal(masks[name], keep_highest(by_hand, 20)[name]) for name in masks)


# -- iterative SNIP and FORCE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("one_step", [IterSnip(steps=1), Force(steps=1), Prospr(steps=0)],
                         ids=["iter_snip", "force", "prospr"])
def test_one_step_is_snip_without_reinitialisation(one_step):
    snip = Snip(reinit=False).prune(make_run(fresh_mlp()), 11)
    other = one_step.prune(make_run(fresh_mlp()), 11)
    assert all(torch.equal(snip[name], other[name]) for name in snip)


def _gradient_at(model: nn.Module, masks: dict, batch: dict) -> dict:
    pruned = copy.deepcopy(model)
    parameters = dict(pruned.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)
    grads = torch.autograd.grad(bce(pruned, batch), [parameters[name] for name in masks])
    return dict(zip(masks, grads))


def test_two_rounds_follow_the_definitions_iterative_snip_prunes_among_kept_force_among_all():
    model = fresh_mlp()
    stream = batch_stream(make_run(model))
    first, second = next(stream), next(stream)
    weights = {name: param for name, param in model.named_parameters() if name.endswith("weight")}
    keep_first, budget = exponential_keeps(90, 8, 2)
    dense = {name: torch.ones_like(weight, dtype=torch.bool) for name, weight in weights.items()}
    grads = _gradient_at(model, dense, first)
    round_one = keep_highest({n: (grads[n] * w).abs().detach() for n, w in weights.items()}, keep_first)
    grads = _gradient_at(model, round_one, second)
    # iterative SNIP: |∂L/∂w ⊙ w| of the pruned network, among the weights still kept
    snip_two = keep_highest({n: (grads[n] * w * round_one[n]).abs().detach() for n, w in weights.items()}, budget,
                            alive=round_one)
    # FORCE: |w₀ ⊙ ∂L/∂w| at the pruned point, original weights, among all weights
    force_two = keep_highest({n: (grads[n] * w).abs().detach() for n, w in weights.items()}, budget)
    iterative = IterSnip(steps=2).prune(make_run(fresh_mlp()), 8)
    force = Force(steps=2).prune(make_run(fresh_mlp()), 8)
    assert all(torch.equal(iterative[n], snip_two[n]) for n in weights)
    assert all(torch.equal(force[n], force_two[n]) for n in weights)
    assert all(not (iterative[n] & ~round_one[n]).any() for n in weights)  # pruned stays pruned


@pytest.mark.parametrize("pruner", [IterSnip(steps=3), IterSnip(steps=5)], ids=["steps=3", "steps=5"])
def test_what_an_iterative_snip_round_prunes_stays_pruned(pruner, monkeypatch):
    rounds = []

    def recording(scores, keep, alive=None):
        rounds.append(keep_highest(scores, keep, alive))
        return rounds[-1]

    monkeypatch.setattr(at_init, "keep_highest", recording)
    pruner.prune(make_run(fresh_mlp()), 3)  # late rounds score many kept weights 0, tied with the pruned ones
    assert len(rounds) == pruner.steps
    for before, after in zip(rounds, rounds[1:]):
        assert all(not (after[name] & ~before[name]).any() for name in before)


# -- GraSP ------------------------------------------------------------------------------------------------------------
def test_grasp_scores_are_minus_w_times_the_hessian_gradient_product_of_the_tempered_loss():
    torch.manual_seed(1)
    model = MLP(2, 3).double()
    names = ["layers.0.weight", "layers.1.weight"]
    parameters = dict(model.named_parameters())
    weights = {name: parameters[name] for name in names}
    data = Points(20, seed=4, dtype=torch.float64)
    parts = [{"inputs": data.inputs[:10], "labels": data.labels[:10]},
             {"inputs": data.inputs[10:], "labels": data.labels[10:]}]
    temperature = 5.0
    shapes = [weights[name].shape for name in names]
    sizes = [shape.numel() for shape in shapes]

    def total_loss(flat: torch.Tensor) -> torch.Tensor:  # Σ_parts BCE(logits / T) as a function of the weights
        values = dict(zip(names, (part.reshape(shape) for part, shape in zip(flat.split(sizes), shapes))))
        loss = 0
        for part in parts:
            logits = torch.func.functional_call(model, values, (part["inputs"],)).logits / temperature
            loss = loss + F.binary_cross_entropy_with_logits(logits, part["labels"])
        return loss

    flat = torch.cat([weights[name].detach().reshape(-1) for name in names])
    gradient = torch.autograd.functional.jacobian(total_loss, flat)
    hessian = torch.autograd.functional.hessian(total_loss, flat)
    expected = (-flat * (hessian @ gradient)).split(sizes)
    scores = hessian_gradient_scores(model, weights, bce, parts, temperature)
    for name, value, shape in zip(names, expected, shapes):
        torch.testing.assert_close(scores[name], value.reshape(shape), rtol=1e-6, atol=1e-12)


def test_grasp_reads_a_class_balanced_sample_and_explains_bad_labels():
    grasp = Grasp(samples_per_class=7)
    halves = grasp.halves(make_run(fresh_mlp()))
    assert [len(half["labels"]) for half in halves] == [7, 7]
    assert halves[0]["labels"].eq(0).all() and halves[1]["labels"].eq(1).all()  # class after class, halved
    with pytest.raises(HfpruneError, match="samples_per_class"):
        Grasp(samples_per_class=1000).prune(make_run(fresh_mlp()), 10)
    three_classes = Points()
    three_classes.labels[:5] = 2.0
    with pytest.raises(HfpruneError, match="num_classes"):
        Grasp().prune(make_run(fresh_mlp(), data=three_classes), 10)


# -- SynFlow ----------------------------------------------------------------------------------------------------------
def test_synflow_scores_are_the_path_products_of_a_tiny_two_layer_net():
    torch.manual_seed(2)
    model = MLP(3, 2)  # h = ReLU(W1 x + b1) (2 × 3), y = W2 h + b2 (1 × 2); weights of both signs
    w1, b1 = model.layers[0].weight.detach().abs(), model.layers[0].bias.detach().abs()
    w2 = model.layers[1].weight.detach().abs()[0]
    # Linearised: every parameter → |·|, x = 1, R = Σ_k |W2_k| (Σ_j |W1_kj| + |b1_k|) + |b2|.
    # W1_kj lies on one input→output path (j → k → out): ∂R/∂|W1_kj| = |W2_k|, score |W1_kj|·|W2_k|.
    # W2_k carries every path into k (from each input j and from the bias b1_k): score |W2_k|·(Σ_j |W1_kj| + |b1_k|).
    expected_first = w1 * w2[:, None]
    expected_second = w2 * (w1.sum(1) + b1)
    weights = {"layers.0.weight": model.layers[0].weight, "layers.1.weight": model.layers[1].weight}
    scores = synflow_scores(model, weights, (3,))
    assert scores["layers.0.weight"].dtype == torch.float64
    torch.testing.assert_close(scores["layers.0.weight"], expected_first.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(scores["layers.1.weight"][0], expected_second.double(), rtol=1e-6, atol=0)
    pruned = synflow_scores(model, weights, (3,), masks={"layers.0.weight": torch.tensor([[1, 0, 0], [1, 1, 1]]).bool(),
                                                         "layers.1.weight": torch.tensor([[0, 1]]).bool()})
    assert pruned["layers.0.weight"][0].eq(0).all()  # its only way out (W2_0) is pruned
    torch.testing.assert_close(pruned["layers.1.weight"][0, 1], (w2[1] * (w1[1].sum() + b1[1])).double())


def test_synflow_is_data_free_and_one_iteration_is_one_shot():
    masks = [Synflow(iterations=10).prune(make_run(fresh_mlp(), data=data), 9)
             for data in (Points(seed=0), Points(64, seed=5))]
    assert all(torch.equal(masks[0][name], masks[1][name]) for name in masks[0])
    run = make_run(fresh_mlp())
    one_shot = keep_highest(synflow_scores(run.model, run.weights, (2,)), 9)
    once = Synflow(iterations=1).prune(make_run(fresh_mlp()), 9)
    assert all(torch.equal(one_shot[name], once[name]) for name in once)


# -- ProsPr -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_prospr_meta_gradient_matches_finite_differences_through_one_sgd_step(momentum):
    torch.manual_seed(5)
    model = MLP(2, 3).double()
    names = ["layers.0.weight", "layers.1.weight"]
    data = Points(32, seed=6, dtype=torch.float64)
    first = {"inputs": data.inputs[:16], "labels": data.labels[:16]}
    second = {"inputs": data.inputs[16:], "labels": data.labels[16:]}
    lr = 0.5

    def gradient(net: nn.Module) -> list[torch.Tensor]:
        return list(torch.autograd.grad(bce(net, first), list(net.parameters())))

    frozen = gradient(model)  # with momentum the reference's first step uses a detached copy of this gradient

    def meta_loss(gates: dict) -> float:  # L_second(θ₁), θ₁ = θ₀(c) − lr·g, θ₀(c): weights ⊙ c
        net = copy.deepcopy(model)
        parameters = dict(net.named_parameters())
        with torch.no_grad():
            for name, gate in gates.items():
                parameters[name].mul_(gate)
        step = frozen if momentum else gradient(net)
        with torch.no_grad():
            for param, grad in zip(net.parameters(), step):
                param.sub_(lr * grad)
        return float(bce(net, second).detach())

    weights = dict((name, param) for name, param in model.named_parameters() if name in names)
    scores = meta_gradient_scores(model, weights, bce, [first, second], lr, momentum)
    eps = 1e-6
    for name in names:
        for index in range(weights[name].numel()):
            plus = {n: torch.ones_like(w) for n, w in weights.items()}
            minus = {n: torch.ones_like(w) for n, w in weights.items()}
            plus[name].view(-1)[index] += eps
            minus[name].view(-1)[index] -= eps
            numeric = abs(meta_loss(plus) - meta_loss(minus)) / (2 * eps)
            assert scores[name].view(-1)[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


# -- determinism ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", AT_INITIALISATION_METHODS, ids=lambda cls: cls.__name__)
def test_the_same_seed_gives_the_same_masks(cls):
    first = method(cls).prune(make_run(fresh_mlp(), seed=7), 13)
    second = method(cls).prune(make_run(fresh_mlp(), seed=7), 13)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_the_scoring_batches_follow_the_seed():
    same = [next(batch_stream(make_run(fresh_mlp(), seed=seed)))["inputs"] for seed in (3, 3, 4)]
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], same[2])
