"""The reference code's rules where hfprune reads the paper otherwise, each an option that follows the rule it names:
its Model NNZ (weights + live biases), its loader's drop_last, its final nonzero counts, RigL's rewiring step (no
update, the gradient at the weights the batch saw) and momentum reset, IMP's data order across rounds."""

from __future__ import annotations

import copy

import pytest
import torch

from hfprune.data.spiral import load_spiral
from hfprune.evaluation.classification import binary_loss
from hfprune.models import get_adapter
from hfprune.pruning.connectivity import analyse, live_biases
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.registry import sparse_method_from
from hfprune.study.registry import parse_recipe
from hfprune.study.runner import run_study
from hfprune.train.packed import PackedJob, train_packed
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import make_loader
from test_sparse_study import tiny

MLP = get_adapter("sparse_mlp")
SPIRAL = load_spiral(300).train  # 300 points: 2 full batches of 128 and one of 44


def _mlp(widths=(3, 3, 3), seed=0):
    torch.manual_seed(seed)
    return MLP.build(MLP.config(0, 0, 0, {"hidden_sizes": list(widths)}))


def _section(epochs=2, lr=0.1, **more):
    return TrainingSection(epochs=epochs, batch_size=128, optimizer={"name": "sgd", "lr": lr, "momentum": 0.9,
                                                                     "weight_decay": 5e-4}, **more)


def test_model_nonzeros_counts_weights_and_live_biases_as_the_reference():
    """The reference masks the bias of a unit without a nonzero outgoing weight (keeps the output's) and counts
    the nonzero parameters: its Model NNZ."""
    model = _mlp()
    masks = {"layers.0.weight": torch.tensor([[1, 0], [0, 1], [1, 1]]),  # 3 x 2: 4 kept
             "layers.1.weight": torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]]),  # unit 2 of layer 0 unread
             "layers.2.weight": torch.tensor([[1, 0, 1], [0, 0, 0], [0, 0, 0]]),  # reads units 0 and 2 of layer 1
             "layers.3.weight": torch.tensor([[1, 1, 0]])}  # reads units 0 and 1 of layer 2
    with torch.no_grad():
        for name, mask in masks.items():
            dict(model.named_parameters())[name].mul_(mask)
        model.layers[3].bias.fill_(0.5)
    weights = 4 + 3 + 2 + 2
    # layer 0 biases read by layer 1: units 0, 1 (columns with a one); layer 1: units 0, 2; layer 2: 0, 1; output 1
    live = 2 + 2 + 2 + 1
    assert live_biases(model) == live
    connectivity = analyse(model)
    assert connectivity.nonzeros == weights and connectivity.model_nonzeros == weights + live
    assert connectivity.totals()["model_nonzeros"] == weights + live
    with torch.no_grad():
        model.layers[0].bias[0] = 0.0  # a bias that is zero is not a nonzero parameter
    assert live_biases(model) == live - 1


def test_a_searched_3_3_3_block_counts_37_as_the_reference_bench():
    from hfprune.study.sparse.search import SearchCandidate

    model = _mlp((16, 16, 16))
    masks = SearchCandidate(1, (3, 3, 3)).masks(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.mul_(masks[name])
    # the reference's bench: (2*3)+(3*3)+(3*3)+(3*1)+(3+3+3+1)
    assert analyse(model).model_nonzeros == 37


def test_residual_and_batchnorm_networks_count_no_live_biases():
    resnet = get_adapter("resnet_cifar")
    model = resnet.build(resnet.config(10, 3, 16, {"depth": 8}))
    assert live_biases(model) is None and analyse(model).model_nonzeros is None


def test_drop_last_takes_the_loaders_batches_without_the_last_smaller_one():
    seen: list = []
    model = _mlp()
    job = PackedJob(model, _section(epochs=2), seed=11)
    job.on_step = lambda step: seen.append(job.batch["inputs"].clone())
    results = train_packed([job], SPIRAL, binary_loss, drop_last=True, progress=False)
    assert results[0].steps == 2 * (300 // 128)  # the reference: floor(points / batch) steps per epoch
    generator = torch.Generator().manual_seed(11)  # the solo run's loader, with the reference's drop_last
    loader = torch.utils.data.DataLoader(SPIRAL, batch_size=128, shuffle=True, generator=generator, drop_last=True,
                                         collate_fn=make_loader(SPIRAL, 128, shuffle=True, seed=0).collate_fn)
    expected = [batch["inputs"] for _ in range(2) for batch in loader]
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected))


@pytest.mark.parametrize("method, shortfall", [("gradual_magnitude", 2), ("imp", 1), ("synflow", 1),
                                               ("iter_snip", 1), ("force", 1), ("snip", 0), ("rigl", 0)])
def test_reference_counts_end_where_the_references_thresholds_end(method, shortfall):
    from hfprune.study.sparse.candidates import MethodTrial

    entry = MethodTrial(sparse_method_from(method), 20)
    assert entry.target("exact") == 20 and entry.target("reference") == 20 - shortfall


def test_a_study_with_reference_counts_ends_each_method_below_its_budget(tmp_path):
    recipe = tiny(methods=["gradual_magnitude", {"name": "imp", "rounds": 2}, "synflow", "snip"], budgets=[12],
                  search=None, final_count="reference")
    result = run_study(parse_recipe(recipe), tmp_path / "s", progress=False)
    ended = {r["setting"]: (r["target_nonzeros"], r["budget"]) for r in result.records if r["setting"] != "dense"}
    assert ended == {"gradual_magnitude": (10, 12), "imp": (11, 12), "synflow": (11, 12), "snip": (12, 12)}
    from hfprune.study.registry import report_study

    assert report_study(tmp_path / "s", plots=False)["final_count"] == "reference"
    assert "as the reference code's thresholds leave (sparse.final_count: reference)" in \
        (tmp_path / "s" / "report.md").read_text()


def _reference_sgd(model, masks_by_step, section, batches, skip, reset):
    """A hand-written loop of the reference's rules: SGD with masked gradients; a skipped step takes no update
    (weights and momentum as they were); after a step the momentum of pruned weights is zeroed (``reset``)."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=section.optimizer.lr, momentum=0.9, weight_decay=5e-4)
    masks = dict(masks_by_step[0])
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    for step, batch in enumerate(batches, start=1):
        optimizer.zero_grad()
        binary_loss(model, batch).backward()
        for name, mask in masks.items():
            params[name].grad.mul_(mask)
        if step not in skip:
            optimizer.step()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
                buffer = optimizer.state[params[name]].get("momentum_buffer")
                if reset and buffer is not None:
                    buffer.mul_(mask)
        if step in masks_by_step:
            masks = dict(masks_by_step[step])
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask)
    return model


def test_skipped_updates_and_momentum_resets_follow_the_reference_rigl_loop():
    """RigL's reference: a rewiring step changes the mask instead of updating (``gradient: before_update``), and the
    momentum of pruned weights is zeroed after every step (``reset_momentum``), so a regrown weight starts from
    zero momentum."""
    start = _mlp()
    names = list(MLP.prunable_weights(start))
    full = {name: torch.ones_like(p, dtype=torch.bool) for name, p in MLP.prunable_weights(start).items()}
    pruned = {**full, names[1]: torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=torch.bool)}
    regrown = {**full, names[1]: torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.bool)}
    # after step 2 (whose update is skipped) weights trained so far are dropped; after step 3 they grow back
    masks_by_step = {0: pruned, 2: regrown, 3: pruned}
    section = _section(epochs=2)

    model = copy.deepcopy(start)
    masked = MaskedParameters(model, pruned)
    job = PackedJob(model, section, seed=3, masks=masked, skip_update=lambda step: step == 2, reset_momentum=True)
    job.on_step = lambda step: masked.update(masks_by_step[step]) if step in (2, 3) else None
    train_packed([job], SPIRAL, binary_loss, progress=False)

    generator = torch.Generator().manual_seed(3)
    loader = make_loader(SPIRAL, 128, shuffle=True, seed=3)
    loader.generator.set_state(generator.get_state())
    batches = [batch for _ in range(2) for batch in loader]
    expected = _reference_sgd(copy.deepcopy(start), masks_by_step, section, batches, skip={2}, reset=True)
    for (name, a), b in zip(model.named_parameters(), expected.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    without_reset = _reference_sgd(copy.deepcopy(start), masks_by_step, section, batches, skip={2}, reset=False)
    # without the reset a regrown weight keeps a stale momentum
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), without_reset.parameters()))


def test_rigl_reference_options_rewire_at_the_weights_the_batch_saw():
    run = SparseRun(_mlp((4, 4, 4)), {}, SPIRAL, _section(epochs=4), binary_loss, 5)
    run.weights.update(MLP.prunable_weights(run.model))
    seen = []
    method = sparse_method_from("rigl", delta=2, gradient="before_update", reset_momentum=True)
    phases = method.phases(run, 30)
    phase = next(phases)
    update = phase.on_step

    def watch(step):
        seen.append((step, {n: w.detach().clone() for n, w in phase.step_model.named_parameters()}))
        update(step)

    phase.on_step = watch
    assert phase.skip_update(2) and not phase.skip_update(3) and phase.reset_momentum and phase.needs_engine
    from hfprune.pruning.sparse_training.phases import train_phase

    try:
        phases.send(train_phase(phase))
    except StopIteration as stop:
        result = stop.value
    weights = dict(seen)
    # step 2 rewires: its update was skipped, so the weights it rewired from are those after step 1 (masked)
    for name in run.weights:
        assert torch.equal(weights[2][name], weights[1][name]), name
    assert result.facts["updates"] >= 1 and result.nonzeros == 30


def test_imp_rounds_see_a_fresh_data_order_with_round_order_fresh(monkeypatch):
    from hfprune.pruning.sparse_training import phases

    seeds = []
    original = phases.train_phase
    monkeypatch.setattr(phases, "train_phase", lambda phase: seeds.append(phase.seed) or original(phase))
    run = SparseRun(_mlp(), {}, SPIRAL, _section(epochs=1), binary_loss, 9)
    run.weights.update(MLP.prunable_weights(run.model))
    sparse_method_from("imp", rounds=3).run(run, 10)
    same, seeds[:] = list(seeds), []
    run = SparseRun(_mlp(), {}, SPIRAL, _section(epochs=1), binary_loss, 9)
    run.weights.update(MLP.prunable_weights(run.model))
    sparse_method_from("imp", rounds=3, round_order="fresh").run(run, 10)
    assert same == [9, 9, 9]  # our reading: every round the run's order
    assert seeds[0] == 9 and len(set(seeds)) == 3  # the reference's loader goes on shuffling: a new order a round
