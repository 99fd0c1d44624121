"""Sparse-training methods that change masks during training (GMP, IMP, RigL) and the random and magnitude
baselines: each ends at exactly its budget with the pruned weights exactly zero, follows its schedule, and is
built from the registry; plus the trainer's step hook and MaskedParameters.update they stand on.

Expected values come from the methods' definitions (the reference's formulas), worked out by hand below.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from pydantic import BaseModel, ValidationError

from hfprune.train.sections import TrainingSection
from hfprune.errors import HfpruneError
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training import lottery
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.registry import SPARSE_METHODS, SparseMethodEntry, sparse_method_from
from hfprune.pruning.sparse_training.rigl import erk_counts, erk_densities, rewire
from hfprune.train.trainer import train

WIDTH = 4  # 2-4-4-4-1: 8 + 16 + 16 + 4 = 44 prunable weights
TOTAL = 44
POINTS = 512  # 4 steps of 128 per epoch


class TinyMLP(torch.nn.Module):
    """2 → w → w → w → 1 with ReLU; ``forward(inputs)`` returns an object whose ``.logits`` is [B]."""

    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(2, width), torch.nn.Linear(width, width),
                                           torch.nn.Linear(width, width), torch.nn.Linear(width, 1)])

    def forward(self, inputs):
        hidden = inputs
        for layer in self.layers[:-1]:
            hidden = torch.relu(layer(hidden))
        return SimpleNamespace(logits=self.layers[-1](hidden).squeeze(-1))


class PointSet(torch.utils.data.Dataset):
    """2-D points and 0/1 labels; a list of indices gives a whole batch."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor):
        self.points, self.labels = points, labels

    def __len__(self):
        return len(self.labels)

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return {"inputs": self.points[index], "labels": self.labels[index]}


def bce(model, batch):
    return torch.nn.functional.binary_cross_entropy_with_logits(model(batch["inputs"]).logits, batch["labels"])


def make_run(epochs: int = 2, seed: int = 0) -> SparseRun:
    torch.manual_seed(seed)
    model = TinyMLP()
    points = torch.randn(POINTS, 2, generator=torch.Generator().manual_seed(1))
    labels = (points[:, 0] * points[:, 1] > 0).float()
    training = TrainingSection(epochs=epochs, batch_size=128,
                               optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4})
    weights = {name: param for name, param in model.named_parameters() if name.endswith("weight")}
    return SparseRun(model, weights, PointSet(points, labels), training, bce, seed)


def pruned_nonzeros(run: SparseRun, masks) -> int:
    return sum(int(torch.count_nonzero(run.weights[name].detach()[~mask])) for name, mask in masks.items())


SMALL = {"gradual_magnitude": {}, "imp": {"rounds": 2}, "rigl": {"delta": 2}, "random_at_init": {}, "magnitude": {}}
EPOCHS = {"gradual_magnitude": 2, "imp": 4, "rigl": 2, "random_at_init": 2, "magnitude": 4}  # of 2-epoch trainings


# -- every method -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [5, 17, 43])
@pytest.mark.parametrize("name", list(SMALL))
def test_every_method_ends_at_exactly_its_budget_with_pruned_weights_zero(name, budget):
    run = make_run()
    result = sparse_method_from(name, **SMALL[name]).run(run, budget)
    assert list(result.masks) == list(run.weights)
    assert all(result.masks[key].shape == run.weights[key].shape for key in run.weights)
    assert result.nonzeros == budget
    assert pruned_nonzeros(run, result.masks) == 0
    assert result.epochs == EPOCHS[name]


@pytest.mark.parametrize("budget", [0, -3, TOTAL, TOTAL + 1, 2.5, True])
def test_a_budget_outside_1_to_total_minus_1_is_one_clear_error(budget):
    with pytest.raises(HfpruneError, match=r"budget .* \[1, 43\]"):
        sparse_method_from("gradual_magnitude").run(make_run(), budget)


def test_a_numpy_integer_budget_is_a_budget():
    numpy = pytest.importorskip("numpy")
    assert sparse_method_from("random_at_init").run(make_run(epochs=1), numpy.int64(7)).nonzeros == 7


def test_random_mask_is_seeded_and_pruned_at_initialisation():
    first = sparse_method_from("random_at_init").run(make_run(seed=3), 9).masks
    again = sparse_method_from("random_at_init").run(make_run(seed=3), 9).masks
    other = sparse_method_from("random_at_init").run(make_run(seed=4), 9).masks
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)
    assert SPARSE_METHODS["random_at_init"].at_initialisation and not SPARSE_METHODS["gradual_magnitude"].at_initialisation


def test_magnitude_prunes_the_smallest_trained_weights_then_fine_tunes(monkeypatch):
    from hfprune.pruning.sparse_training import baselines, phases

    seen = []
    original = phases.train_phase
    run = make_run()

    def spy(phase):
        seen.append(torch.cat([weight.detach().abs().reshape(-1) for weight in run.weights.values()]))
        return original(phase)

    monkeypatch.setattr(phases, "train_phase", spy)
    after_dense = []
    monkeypatch.setattr(baselines, "magnitude_masks",
                        lambda r, k: after_dense.append(torch.cat([w.detach().abs().reshape(-1)
                                                                   for w in r.weights.values()]))
                        or lottery.magnitude_masks(r, k))
    result = sparse_method_from("magnitude").run(run, 12)
    kept = torch.cat([mask.reshape(-1) for mask in result.masks.values()])
    # the 12 kept are the 12 largest |w| after dense training
    assert kept.sum() == 12 and after_dense[0][kept].min() > after_dense[0][~kept].max()
    assert len(seen) == 2


# -- GMP --------------------------------------------------------------------------------------------------------
def spy_updates(monkeypatch):
    """Record the masks of every MaskedParameters.update, and the weights right after it."""
    records = []
    original = MaskedParameters.update

    def update(self, masks):
        before = {name: mask.clone() for name, mask in zip(self.names, self.masks)}
        original(self, masks)
        weights = {name: param.detach().clone() for name, param in zip(self.names, self.params)}
        records.append(SimpleNamespace(before=before, after={k: v.clone() for k, v in masks.items()},
                                       weights=weights))

    monkeypatch.setattr(MaskedParameters, "update", update)
    return records


def test_gradual_magnitude_follows_the_cubic_schedule_at_its_pruning_events(monkeypatch):
    records = spy_updates(monkeypatch)
    run = make_run(epochs=3)  # 12 steps; 3 events cut them into 4 intervals of 3: prune after steps 3, 6, 9
    result = sparse_method_from("gradual_magnitude", events=3).run(run, 10)
    # nnz(e) = floor(10 + 34 (1 - e/3)^3): e=1: 10 + 34·8/27 = 20.07 -> 20; e=2: 10 + 34/27 = 11.26 -> 11; e=3: 10
    assert [sum(int(m.sum()) for m in record.after.values()) for record in records] == [20, 11, 10]
    assert [step for step, _ in result.facts["pruned_at"]] == [3, 6, 9]
    for record in records:  # masks nest: a pruned weight never returns
        assert all(not (record.after[k] & ~record.before[k]).any() for k in record.after)
        assert all(int(torch.count_nonzero(record.weights[k][~record.after[k]])) == 0 for k in record.after)
    assert result.nonzeros == 10 and pruned_nonzeros(run, result.masks) == 0


def test_gradual_magnitude_prunes_the_globally_smallest_kept_weights(monkeypatch):
    captured = []
    from hfprune.pruning.sparse_training import gradual

    original = gradual.magnitude_masks

    def spy(run, keep, current):
        captured.append(torch.cat([w.detach().abs().reshape(-1) for w in run.weights.values()]))
        return original(run, keep, current)

    monkeypatch.setattr(gradual, "magnitude_masks", spy)
    records = spy_updates(monkeypatch)
    sparse_method_from("gradual_magnitude", events=1).run(make_run(), 7)  # one event, after step 4 of 8
    kept = torch.cat([m.reshape(-1) for m in records[0].after.values()])
    assert kept.sum() == 7 and captured[0][kept].min() > captured[0][~kept].max()


def test_gradual_magnitude_needs_two_steps():
    run = make_run(epochs=1)
    run = dataclasses.replace(run, training=run.training.model_copy(update={"batch_size": POINTS}))
    with pytest.raises(HfpruneError, match="gradual_magnitude: .*at least 2"):
        sparse_method_from("gradual_magnitude").run(run, 10)


# -- IMP --------------------------------------------------------------------------------------------------------
def test_imp_rewinds_every_parameter_to_initialisation_and_keeps_the_largest_trained(monkeypatch):
    from hfprune.pruning.sparse_training import phases

    rounds = []
    original = phases.train_phase

    def spy(phase):
        entry = {name: value.clone() for name, value in phase.model.state_dict().items()}
        masks = {name: mask.clone() for name, mask in zip(phase.masks.names, phase.masks.masks)}
        result = original(phase)
        rounds.append(SimpleNamespace(entry=entry, masks=masks, seed=phase.seed,
                                      exit={name: value.clone() for name, value in phase.model.state_dict().items()}))
        return result

    monkeypatch.setattr(phases, "train_phase", spy)
    run = make_run()
    initial = {name: value.clone() for name, value in run.model.state_dict().items()}
    result = sparse_method_from("imp", rounds=3).run(run, 6)
    assert len(rounds) == 3 and result.epochs == 6
    # kept after round r of R-1 = 2 prunings: floor(44 (6/44)^(r/2)): r=1: floor(sqrt(264)) = floor(16.25) = 16
    assert result.facts["nonzeros_per_round"] == [16, 6]
    assert [sum(int(m.sum()) for m in r.masks.values()) for r in rounds] == [TOTAL, 16, 6]
    for before, after in zip(rounds, rounds[1:]):
        assert all(torch.equal(after.entry[name], initial[name]) for name in initial)  # biases included
        trained = torch.cat([before.exit[name].abs().reshape(-1) for name in run.weights])
        kept = torch.cat([after.masks[name].reshape(-1) for name in run.weights])
        old = torch.cat([before.masks[name].reshape(-1) for name in run.weights])
        assert not (kept & ~old).any()
        assert trained[kept].min() > trained[old & ~kept].max()
    assert pruned_nonzeros(run, result.masks) == 0
    assert not all(torch.equal(run.model.state_dict()[k], initial[k]) for k in initial)  # the last round trained


# -- RigL -------------------------------------------------------------------------------------------------------
def test_erk_densities_match_hand_worked_cases():
    shapes = [torch.Size(s) for s in ((4, 2), (4, 4), (4, 4), (1, 4))]
    # raw (fan-in + fan-out)/size: 6/8, 8/16, 8/16, 5/4; ε = 5 / (0.75·8 + 0.5·16·2 + 1.25·4) = 5/27
    assert erk_densities(shapes, 5 / 44) == pytest.approx([0.75 * 5 / 27, 0.5 * 5 / 27, 0.5 * 5 / 27, 1.25 * 5 / 27])
    # density 0.9: the last layer (1.25 ε > 1), then the first (0.75 ε > 1) go dense; ε = 27.6/16 for the rest
    assert erk_densities(shapes, 0.9) == pytest.approx([1.0, 0.5 * 27.6 / 16, 0.5 * 27.6 / 16, 1.0])


def test_erk_counts_are_exact_with_one_weight_per_layer_where_the_budget_allows():
    shapes = [torch.Size(s) for s in ((4, 2), (4, 4), (4, 4), (1, 4))]
    # shares 1.11, 1.48, 1.48, 0.93 -> floors 1, 1, 1, 0 -> at least one each -> the largest remainder, layer 2
    assert erk_counts(shapes, 5) == [1, 2, 1, 1]
    assert erk_counts(shapes, 3) == [1, 1, 1, 0]  # fewer weights than layers: the smallest share goes empty
    for budget in range(1, TOTAL):
        counts = erk_counts(shapes, budget)
        assert sum(counts) == budget and all(0 <= c <= math.prod(s) for c, s in zip(counts, shapes))


def test_rewire_drops_smallest_magnitude_and_grows_largest_gradient():
    mask = torch.tensor([True, True, True, False, False])
    weight = torch.tensor([0.5, -0.1, 0.3, 0.0, 0.0])
    # int(3 · 0.34) = 1 dropped: -0.1; grown: the largest |g| outside the survivors, index 4
    assert rewire(mask, weight, torch.tensor([0.0, 0.5, 0.0, 1.0, -2.0]), 0.34).tolist() == [True, False, True,
                                                                                              False, True]
    # a just-dropped weight with the largest gradient comes back
    assert torch.equal(rewire(mask, weight, torch.tensor([0.0, 9.0, 0.0, 1.0, 2.0]), 0.34), mask)
    assert torch.equal(rewire(mask, weight, torch.ones(5), 0.3), mask)  # int(0.9) = 0 dropped


def test_rigl_keeps_each_layers_count_and_changes_the_mask(monkeypatch):
    records = spy_updates(monkeypatch)
    run = make_run(epochs=3)  # 12 steps; T_end = int(0.75 · 12) = 9: updates after steps 2, 4, 6, 8
    result = sparse_method_from("rigl", delta=2).run(run, 24)
    assert result.facts["updates"] == 4 and len(records) == 4
    expected = erk_counts([w.shape for w in run.weights.values()], 24)
    for record in records:
        assert [int(m.sum()) for m in record.after.values()] == expected
        grown = {k: record.after[k] & ~record.before[k] for k in record.after}
        assert all(torch.count_nonzero(record.weights[k][grown[k]]) == 0 for k in grown)  # grown start at 0
        assert all(torch.count_nonzero(record.weights[k][~record.after[k]]) == 0 for k in grown)
    assert sum(int((r.after[k] != r.before[k]).sum()) for r in records for k in r.after) > 0
    assert result.facts["grown"] > 0 and result.nonzeros == 24 and pruned_nonzeros(run, result.masks) == 0


# -- registry ---------------------------------------------------------------------------------------------------
class Study(BaseModel):
    methods: list[SparseMethodEntry]


def test_registry_takes_names_and_validated_options():
    study = Study(methods=["gradual_magnitude", {"name": "rigl", "delta": 50}, "imp"])
    assert [m.name for m in study.methods] == ["gradual_magnitude", "rigl", "imp"]
    assert study.methods[0].events == 199 and study.methods[1].delta == 50 and study.methods[1].alpha == 0.3
    assert study.methods[2].rounds == 5
    with pytest.raises(ValidationError):
        Study(methods=[{"name": "rigl", "delta": 0}])
    with pytest.raises(ValidationError):
        Study(methods=["nope"])
    assert sparse_method_from(sparse_method_from("rigl"), alpha=0.5).alpha == 0.5


@pytest.mark.parametrize("name, options, message", [
    ("snipe", {}, r"unknown sparse-training method 'snipe'; choose one of: gradual_magnitude, imp, rigl"),
    ("gradual_magnitude", {"delta": 3}, r"'gradual_magnitude' has no option 'delta' \(its options: events\); "
                                   r"'delta' applies to rigl only"),
    ("gmp", {}, r"'gmp' is global magnitude pruning, an unstructured method.*'gradual_magnitude'"),
    ("random", {}, r"'random' is the structured criterion.*'random_at_init'"),
    ("rigl", {"alpha": 2}, r"invalid options of sparse-training method 'rigl': alpha"),
    ("imp", {"rounds": 1}, r"rounds"),
])
def test_registry_errors_are_one_line(name, options, message):
    with pytest.raises(HfpruneError, match=message) as error:
        sparse_method_from(name, **options)
    assert "\n" not in str(error.value)


# -- the trainer's step hook and MaskedParameters.update --------------------------------------------------------
def test_on_step_sees_every_step_counted_from_epoch_0_also_after_resume():
    run = make_run(epochs=3)
    steps = []
    first = train(run.model, run.train_set, run.training, bce, seed=0, progress=False, stop_epoch=1,
                  on_step=steps.append)
    train(run.model, run.train_set, run.training, bce, seed=0, progress=False, resume=first.state,
          on_step=steps.append)
    assert steps == list(range(1, 13))


def test_update_refreshes_masks_hooks_and_cached_copies():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    given = {"weight": torch.ones(2, 3, dtype=torch.bool)}
    masked = MaskedParameters(layer, given)
    masked.attach()
    assert masked.attached and not masked._hooks  # a mask keeping everything needs no hook, until it prunes

    def gradient():
        layer.zero_grad()
        layer(torch.ones(4, 3)).sum().backward()
        return layer.weight.grad.clone()

    new = torch.tensor([[True, False, True], [False, True, True]])
    masked.update({"weight": new})
    assert len(masked._hooks) == 1 and not given["weight"].logical_not().any()  # the caller's tensor untouched
    assert torch.count_nonzero(layer.weight.detach()[~new]) == 0  # newly pruned weights zeroed
    assert torch.count_nonzero(gradient()[~new]) == 0 and torch.count_nonzero(gradient()[new]) == 4
    # the hook made a float copy on the CPU; a second update must replace it (regrow one, prune another)
    newer = torch.tensor([[True, True, False], [False, True, True]])
    masked.update({"weight": newer})
    assert len(masked._hooks) == 1
    grad = gradient()
    assert torch.count_nonzero(grad[~newer]) == 0 and torch.count_nonzero(grad[newer]) == 4
    with torch.no_grad():
        layer.weight.fill_(1.0)
    masked.apply()
    assert torch.equal(layer.weight.detach() != 0, newer)
    with pytest.raises(KeyError):
        masked.update({"bias": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError):
        masked.update({"weight": torch.ones(3, 2, dtype=torch.bool)})
    masked.detach()
