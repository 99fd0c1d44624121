"""The trainer: masks stay exact, schedules follow the recipe, runs are reproducible."""

import pytest
import torch
from accelerate import Accelerator

from hfprune.data import TensorImageSet
from hfprune.evaluation.classification import classification_loss, evaluate_classification
from hfprune.models import get_adapter
from hfprune.pruning.structured.groups import parameter_masks
from hfprune.pruning.masking import MaskedParameters
from hfprune.study.oracle.recipe import RetrainSection
from hfprune.train.sections import ScheduleSection, TrainingSection
from hfprune.train.optim import build_optimizer, build_schedule
from hfprune.train.trainer import train


def _blobs(n=256, seed=0):
    """Ten separable classes: the label decides the mean brightness of a quadrant."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randn(n, 1, 32, 32, generator=generator) * 0.3
    images[:, :, :16, :16] += labels.view(-1, 1, 1, 1) / 3
    return TensorImageSet(images, labels)


def _section(**overrides):
    base = dict(epochs=3, batch_size=32, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3})
    return TrainingSection(**{**base, **overrides})


def _model(seed=0):
    torch.manual_seed(seed)
    adapter = get_adapter("lenet5_mini")
    return adapter, adapter.build(adapter.config(10, 1, 32, {}))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer):
    adapter, model = _model()
    mask = {"conv1": (0, 1, 2), "conv2": (4, 5, 6, 7, 8)}
    masks = parameter_masks(adapter.groups(model.config), mask, dict(model.named_parameters()))
    masked = MaskedParameters(model, masks)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    section = _section(optimizer={"name": optimizer, "lr": 0.01, "weight_decay": 0.1}, grad_clip=1.0)
    train(model, _blobs(), section, classification_loss, seed=0, masks=masked, progress=False)
    assert masked.violations() == 0
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        assert torch.all(params[name][~keep] == 0), name
        assert not torch.equal(params[name][keep], before[name][keep]), f"{name} did not train"


def test_training_learns_and_is_reproducible():
    _, first = _model()
    _, second = _model()
    data = _blobs()
    initial = evaluate_classification(first, data)["loss"]
    train(first, data, _section(), classification_loss, seed=3, progress=False)
    train(second, data, _section(), classification_loss, seed=3, progress=False)
    assert evaluate_classification(first, data)["loss"] < initial
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name


def test_multistep_schedule_changes_lr_at_epoch_milestones():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], _section().optimizer)
    schedule = build_schedule(optimizer, ScheduleSection(name="multistep", milestones=[2, 3], gamma=0.1), 4, 5)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:8] == pytest.approx([0.05] * 8)
    assert lrs[8:12] == pytest.approx([0.005] * 4)
    assert lrs[12:] == pytest.approx([0.0005] * 8)


def test_cosine_schedule_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], _section().optimizer)
    schedule = build_schedule(optimizer, ScheduleSection(name="cosine"), 10, 2)
    for _ in range(20):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_short_retrain_proxy_scales_epochs_and_milestones():
    section = RetrainSection(epochs=120, batch_size=256, optimizer={"name": "sgd", "lr": 0.01},
                             schedule={"name": "multistep", "milestones": [60, 90]}, short_fraction=0.1)
    short = section.scaled(section.short_fraction)
    assert short.epochs == 12
    assert short.schedule.milestones == [6, 9]
    lenet = TrainingSection(epochs=30, batch_size=256, optimizer={"name": "sgd", "lr": 1e-3},
                            schedule={"name": "multistep", "milestones": [20]})
    assert lenet.scaled(0.1).epochs == 3 and lenet.scaled(0.1).schedule.milestones == [2]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_run_cut_into_pieces_equals_the_uninterrupted_run(optimizer):
    """stop_epoch / resume continue the schedule, the optimizer state and the shuffling: 1 + 2 + 2 epochs give
    the weights of 5 epochs in one go, bit for bit (masks kept exact throughout)."""
    adapter, whole = _model()
    _, pieces = _model()
    mask = {"conv1": (0, 1, 2)}
    section = _section(epochs=5, batch_size=64, optimizer={"name": optimizer, "lr": 0.02},
                       schedule={"name": "multistep", "milestones": [2, 4], "gamma": 0.5})
    masks = parameter_masks(adapter.groups(whole.config), mask, dict(whole.named_parameters()))
    data = _blobs(200)
    train(whole, data, section, classification_loss, seed=7, masks=MaskedParameters(whole, masks), progress=False)
    state, steps = None, 0
    for start, stop in ((0, 1), (1, 3), (3, 5)):
        result = train(pieces, data, section, classification_loss, seed=7, masks=MaskedParameters(pieces, masks),
                       progress=False, resume=state, stop_epoch=stop)
        state, steps = result.state, steps + result.steps
        assert state.epoch == stop and result.epochs == stop - start
    assert steps == 5 * 4 and state.schedule["last_epoch"] == 5 * 4
    for (name, a), (_, b) in zip(whole.named_parameters(), pieces.named_parameters()):
        assert torch.equal(a, b), name


def _spiral_mlp(seed=0):
    from hfprune.data.spiral import load_spiral

    torch.manual_seed(seed)
    adapter = get_adapter("sparse_mlp")
    model = adapter.build(adapter.config(0, 0, 0, {"hidden_sizes": [6, 6, 6]}))
    generator = torch.Generator().manual_seed(seed)
    masks = {name: torch.rand(weight.shape, generator=generator) < 0.4
             for name, weight in adapter.prunable_weights(model).items()}
    return model, masks, load_spiral(400).train


@pytest.mark.parametrize("family", ["sparse_mlp", "lenet5_mini"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_lean_loop_gives_the_weights_of_the_accelerate_loop_bit_for_bit(family, optimizer, monkeypatch):
    """One process, fp32, no accumulation: the lean loop (no Accelerate wrappers per step) trains exactly what the
    loop through Accelerate's prepared optimizer, scheduler and loader trains: weights, masks, losses, steps."""
    from hfprune.evaluation.classification import binary_loss
    from hfprune.train import trainer as trainer_module

    if family == "sparse_mlp":
        model, masks, data = _spiral_mlp()
        loss_fn = binary_loss
    else:
        adapter, model = _model()
        masks = parameter_masks(adapter.groups(model.config), {"conv1": (0, 1, 2), "conv2": (4, 5, 6)},
                                dict(model.named_parameters()))
        data, loss_fn = _blobs(100), classification_loss
    section = _section(epochs=2, batch_size=32, optimizer={"name": optimizer, "lr": 0.02, "weight_decay": 5e-4},
                       schedule={"name": "cosine", "warmup_epochs": 0.5}, grad_clip=1.0)
    runs = {}
    for lean in (True, False):
        monkeypatch.setattr(trainer_module, "LEAN_LOOP", lean)
        if lean:  # the lean loop really skips Accelerate's per-step wrappers
            monkeypatch.setattr(Accelerator, "backward", _never)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(trainer_module, "LEAN_LOOP", False)
        copy = type(model)(model.config)
        copy.load_state_dict(model.state_dict())
        steps = []
        result = train(copy, data, section, loss_fn, seed=5, masks=MaskedParameters(copy, masks), progress=False,
                       on_step=steps.append)
        runs[lean] = copy, result, steps
    (lean, lean_result, lean_steps), (wrapped, wrapped_result, wrapped_steps) = runs[True], runs[False]
    assert lean_steps == wrapped_steps == list(range(1, lean_result.steps + 1))
    assert lean_result.last_epoch_loss == wrapped_result.last_epoch_loss
    for (name, a), (_, b) in zip(lean.named_parameters(), wrapped.named_parameters()):
        assert torch.equal(a, b), name
    for name, keep in masks.items():
        assert torch.all(lean.get_parameter(name)[~keep] == 0), name


def _never(*args, **kwargs):
    raise AssertionError("the lean loop called Accelerate's per-step wrapper")


def test_epoch_batches_are_the_loaders_batches_and_leave_its_generator_where_the_loader_does():
    from hfprune.train.trainer import epoch_batches, make_loader

    data = _blobs(70)
    ours, theirs = make_loader(data, 16, shuffle=True, seed=4), make_loader(data, 16, shuffle=True, seed=4)
    for _ in range(3):  # epochs
        mine, loaders = list(epoch_batches(ours)), list(theirs)
        assert len(mine) == len(loaders) == 5
        for a, b in zip(mine, loaders):
            assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(ours.generator.get_state(), theirs.generator.get_state())
