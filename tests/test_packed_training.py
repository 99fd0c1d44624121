"""Packed training: every job of a pack ends as its solo ``train()`` run ends (sparse MLPs: weights and losses bit
for bit on the CPU; the generic engine: within the stated tolerance; masks identical, pruned weights exactly zero
throughout), for fixed masks, masks that change during training (GMP, RigL), per-job optimizers and schedules,
LeNet5-Mini and a BatchNorm ResNet through the generic engine; bad packs are refused with one line."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from hfprune.train.sections import TrainingSection
from hfprune.data import TensorImageSet
from hfprune.data.spiral import load_spiral
from hfprune.errors import HfpruneError
from hfprune.evaluation.classification import binary_loss
from hfprune.evaluation.classification import classification_loss
from hfprune.models import get_adapter
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.gradual import GradualMagnitude, cubic_nonzeros
from hfprune.pruning.sparse_training.loop import total_steps
from hfprune.pruning.sparse_training.masks import dense_masks, magnitude_masks, random_masks
from hfprune.pruning.sparse_training.rigl import RigL, dense_gradients, erk_random_masks, rewire
from hfprune.pruning.structured.groups import parameter_masks
import hfprune.train.packed.calibrate as calibrate
from hfprune.train.packed import TOLERANCE, PackedJob, calibrate_pack_size, pack_key, train_packed
from hfprune.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SPIRAL = load_spiral(300).train  # 3 batches of 128 (the last one smaller)
MLP = get_adapter("sparse_mlp")


def _section(epochs=2, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule=None, name="sgd", **more):
    optimizer = {"name": name, "lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        optimizer["momentum"] = momentum
    return TrainingSection(epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                           schedule=schedule or {"name": "constant"}, **more)


def _mlp(seed: int, widths=(6, 6, 6)):
    torch.manual_seed(seed)
    return MLP.build(MLP.config(0, 0, 0, {"hidden_sizes": list(widths)}))


def _assert_close(solo: torch.nn.Module, packed: torch.nn.Module, exact: bool = False) -> None:
    """Parameters and buffers equal bit for bit (``exact``) or within the stated tolerance."""
    for (name, a), (_, b) in zip(solo.state_dict().items(), packed.state_dict().items()):
        assert a.shape == b.shape, name
        assert torch.equal(a, b) if exact else (a.float() - b.float()).abs().max() <= TOLERANCE, name


def _zero_watch(model, masked: MaskedParameters, seen: list):
    """An on_step that checks, after every step, that the pruned weights of ``model`` are exactly zero."""
    def check(step: int) -> None:
        assert masked.violations() == 0, f"step {step}: a pruned weight is not zero"
        seen.append(step)
    return check


def _sweep():
    """The study's kind of sweep: lr {0.05, 0.1, 0.2} x {cosine, multistep, constant}, momentum and weight decay
    differing too (some jobs without either)."""
    schedules = [{"name": "cosine", "warmup_epochs": 0.5}, {"name": "multistep", "milestones": [1]},
                 {"name": "constant"}]
    return [_section(lr=lr, schedule=schedule, momentum=0.9 if index % 2 else 0.0,
                     weight_decay=5e-4 if index % 3 else 0.0)
            for index, (lr, schedule) in enumerate((lr, s) for lr in (0.05, 0.1, 0.2) for s in schedules)]


@pytest.mark.parametrize("engine", ["mlp", "generic"])
def test_a_pack_of_masked_mlps_with_their_own_optimizers_and_schedules_equals_their_solo_runs(engine):
    sections = _sweep()
    solos, jobs, masks, watched = [], [], [], []
    for k, section in enumerate(sections):
        start = _mlp(k)
        mask = random_masks(SparseRun(start, MLP.prunable_weights(start), SPIRAL, section, binary_loss, k), 40,
                            torch.Generator().manual_seed(k))
        solo = copy.deepcopy(start)
        solo_result = train(solo, SPIRAL, section, binary_loss, seed=100 + k, masks=MaskedParameters(solo, mask),
                            progress=False)
        model = copy.deepcopy(start)
        masked = MaskedParameters(model, mask)
        seen: list = []
        jobs.append(PackedJob(model, section, 100 + k, masked, on_step=_zero_watch(model, masked, seen)))
        solos.append((solo, solo_result)), masks.append(mask), watched.append(seen)
    results = train_packed(jobs, SPIRAL, binary_loss, engine=engine, progress=False)
    exact = engine == "mlp"
    for (solo, solo_result), job, mask, seen, result in zip(solos, jobs, masks, watched, results):
        _assert_close(solo, job.model, exact)
        assert seen == list(range(1, 7)) and result.steps == solo_result.steps == 6
        if exact:
            assert result.last_epoch_loss == solo_result.last_epoch_loss
        else:
            assert result.last_epoch_loss == pytest.approx(solo_result.last_epoch_loss, abs=TOLERANCE)
        assert [name for name in job.masks.names] == list(mask) and all(
            torch.equal(a, b) for a, b in zip(job.masks.masks, mask.values()))
        weights = MLP.prunable_weights(job.model)
        assert sum(int((weights[name] != 0).sum()) for name in mask) == 40  # nonzeros: exactly the kept weights
        assert not job.masks.attached and job.batch is None


def test_adamw_with_gradient_clipping_packs_like_its_solo_runs():
    sections = [_section(name="adamw", lr=lr, weight_decay=wd, grad_clip=0.5) for lr, wd in
                ((0.01, 0.1), (0.02, 0.0), (0.01, 0.1))]
    solos, jobs = [], []
    for k, section in enumerate(sections):
        start = _mlp(k)
        mask = {name: torch.rand(w.shape, generator=torch.Generator().manual_seed(k)) < 0.5
                for name, w in MLP.prunable_weights(start).items()}
        solo, model = copy.deepcopy(start), copy.deepcopy(start)
        train(solo, SPIRAL, section, binary_loss, seed=k, masks=MaskedParameters(solo, mask), progress=False)
        jobs.append(PackedJob(model, section, k, MaskedParameters(model, mask)))
        solos.append(solo)
    train_packed(jobs, SPIRAL, binary_loss, progress=False)
    for solo, job in zip(solos, jobs):
        _assert_close(solo, job.model, exact=True)
        assert job.masks.violations() == 0


def _gmp_job(model, section, seed, budget, events) -> PackedJob:
    """GradualMagnitude.run's pruning schedule as a packed job's on_step (the method's own functions)."""
    run = SparseRun(model, MLP.prunable_weights(model), SPIRAL, section, binary_loss, seed)
    steps = total_steps(run)
    interval, total = steps // (events + 1), run.total_weights
    masked = MaskedParameters(model, dense_masks(run))

    def prune(step: int) -> None:
        event, rest = divmod(step, interval)
        if rest or not 1 <= event <= events:
            return
        keep = cubic_nonzeros(event, events, total, budget)
        masked.update(magnitude_masks(run, keep, dict(zip(masked.names, masked.masks))))
        assert masked.violations() == 0

    return PackedJob(model, section, seed, masked, on_step=prune)


def test_gradual_magnitude_pruning_changes_each_jobs_masks_as_its_solo_run_does():
    section = _section(epochs=3)
    budgets, events = (30, 50, 70), 3
    jobs, solos = [], []
    for k, budget in enumerate(budgets):
        start = _mlp(k)
        solo = copy.deepcopy(start)
        run = SparseRun(solo, MLP.prunable_weights(solo), SPIRAL, section, binary_loss, 7 + k)
        solos.append(GradualMagnitude(events=events).run(run, budget))
        solos[-1].model = solo
        jobs.append(_gmp_job(copy.deepcopy(start), section, 7 + k, budget, events))
    train_packed(jobs, SPIRAL, binary_loss, progress=False)
    for solo, job, budget in zip(solos, jobs, budgets):
        packed_masks = dict(zip(job.masks.names, job.masks.masks))
        assert all(torch.equal(solo.masks[name], packed_masks[name]) for name in solo.masks)
        assert sum(int(mask.sum()) for mask in packed_masks.values()) == budget
        _assert_close(solo.model, job.model, exact=True)
        weights = MLP.prunable_weights(job.model)
        assert sum(int((weights[name] != 0).sum()) for name in packed_masks) == budget


def test_rigl_rewires_each_job_from_its_own_model_and_batch():
    """RigL's update reads the job's live model and the batch of the step (``job.batch``) for its dense gradient."""
    section, budget, method = _section(epochs=3), 60, RigL(delta=2, alpha=0.5)
    jobs, solos = [], []
    for k in range(3):
        start = _mlp(k)
        solo = copy.deepcopy(start)
        solos.append((solo, method.run(SparseRun(solo, MLP.prunable_weights(solo), SPIRAL, section, binary_loss, k),
                                       budget)))
        model = copy.deepcopy(start)
        run = SparseRun(model, MLP.prunable_weights(model), SPIRAL, section, binary_loss, k)
        end = int(method.t_end * total_steps(run))
        masked = MaskedParameters(model, erk_random_masks(run, budget, method.erk_power,
                                                          torch.Generator().manual_seed(k)))
        job = PackedJob(model, section, k, masked)

        def update(step, run=run, masked=masked, job=job, end=end):
            if step % method.delta or step >= end:
                return
            gradients = dense_gradients(run, masked, job.model, job.batch)
            old = dict(zip(masked.names, masked.masks))
            masked.update({name: rewire(old[name], weight.detach().cpu(), gradients[name],
                                        method.drop_fraction(step, end)) for name, weight in run.weights.items()})

        job.on_step = update
        jobs.append(job)
    train_packed(jobs, SPIRAL, binary_loss, progress=False)
    for (solo, result), job in zip(solos, jobs):
        assert result.facts["updates"] == 2 and result.facts["grown"] > 0
        packed_masks = dict(zip(job.masks.names, job.masks.masks))
        assert all(torch.equal(result.masks[name], packed_masks[name]) for name in result.masks)
        _assert_close(solo, job.model, exact=True)


def _blobs(n=96, size=32, channels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randn(n, channels, size, size, generator=generator) * 0.3
    images[:, :, :size // 2, :size // 2] += labels.view(-1, 1, 1, 1) / 3
    return TensorImageSet(images, labels)


def test_lenet5_mini_packs_through_the_generic_engine_as_its_solo_runs():
    adapter, data = get_adapter("lenet5_mini"), _blobs()
    sections = [_section(batch_size=32, lr=lr, weight_decay=1e-4) for lr in (0.02, 0.05, 0.05)]
    solos, jobs, masks = [], [], []
    for k, section in enumerate(sections):
        torch.manual_seed(k)
        start = adapter.build(adapter.config(10, 1, 32, {}))
        kept = tuple(sorted(torch.randperm(10, generator=torch.Generator().manual_seed(k))[:5].tolist()))
        mask = parameter_masks(adapter.groups(start.config), {"conv1": kept, "conv2": (0, 2, 4, 6, 8)},
                               dict(start.named_parameters()))
        solo, model = copy.deepcopy(start), copy.deepcopy(start)
        train(solo, data, section, classification_loss, seed=k, masks=MaskedParameters(solo, mask), progress=False)
        jobs.append(PackedJob(model, section, k, MaskedParameters(model, mask)))
        solos.append(solo), masks.append(mask)
    train_packed(jobs, data, classification_loss, progress=False)
    for solo, job, mask in zip(solos, jobs, masks):
        _assert_close(solo, job.model)
        params = dict(job.model.named_parameters())
        assert all(torch.all(params[name][~keep] == 0) for name, keep in mask.items())


def test_batchnorm_running_statistics_stay_per_job():
    adapter, data = get_adapter("resnet_cifar"), _blobs(64, size=16, channels=3)
    section = _section(epochs=1, batch_size=32, lr=0.05)
    solos, jobs = [], []
    for k in range(2):
        torch.manual_seed(k)
        start = adapter.build(adapter.config(10, 3, 16, {"depth": 8}))
        solo = copy.deepcopy(start)
        train(solo, data, section, classification_loss, seed=k, progress=False)
        solos.append(solo), jobs.append(PackedJob(copy.deepcopy(start), section, k))
    train_packed(jobs, data, classification_loss, progress=False)
    for solo, job in zip(solos, jobs):
        _assert_close(solo, job.model)  # parameters and buffers (running means, variances, batch counts)
        assert int(job.model.stem.bn.num_batches_tracked) == 2
    assert not torch.equal(jobs[0].model.stem.bn.running_mean, jobs[1].model.stem.bn.running_mean)


def test_a_batch_transform_draws_from_each_jobs_own_random_stream():
    """Augmentation drawn from torch's global generator inside the solo run's loss = the same transform per job
    in the pack (each job's stream as its solo run's torch.manual_seed(seed) starts it)."""
    def jitter(batch):
        return {**batch, "inputs": batch["inputs"] + 0.05 * torch.randn(batch["inputs"].shape)}

    def jittered_loss(model, batch):
        return binary_loss(model, jitter(batch))

    section = _section()
    solos, jobs = [], []
    for k in range(3):
        start = _mlp(k)
        solo = copy.deepcopy(start)
        train(solo, SPIRAL, section, jittered_loss, seed=20 + k, progress=False)
        solos.append((solo, torch.get_rng_state()))
        jobs.append(PackedJob(copy.deepcopy(start), section, 20 + k))
    train_packed(jobs, SPIRAL, binary_loss, batch_transform=jitter, progress=False)
    for (solo, _), job in zip(solos, jobs):
        _assert_close(solo, job.model, exact=True)
    assert torch.equal(torch.get_rng_state(), solos[-1][1])  # left where the last job's solo run leaves it


def test_bad_packs_are_refused_with_one_line():
    def refused(jobs, loss_fn=binary_loss, dataset=SPIRAL, **kwargs) -> str:
        with pytest.raises(HfpruneError) as error:
            train_packed(jobs, dataset, loss_fn, progress=False, **kwargs)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "batch_size" in refused([PackedJob(_mlp(0), _section(), 0), PackedJob(_mlp(1), _section(batch_size=64), 1)])
    assert "epochs" in refused([PackedJob(_mlp(0), _section(), 0), PackedJob(_mlp(1), _section(epochs=3), 1)])
    assert "optimizer" in refused([PackedJob(_mlp(0), _section(), 0), PackedJob(_mlp(1), _section(name="adam"), 1)])
    assert "architecture" in refused([PackedJob(_mlp(0), _section(), 0), PackedJob(_mlp(1, (6, 8, 6)), _section(), 1)])
    model = _mlp(0)
    assert "own copy" in refused([PackedJob(model, _section(), 0), PackedJob(model, _section(), 1)])
    assert "mixed_precision" in refused([PackedJob(_mlp(0), _section(mixed_precision="bf16"), 0)])
    assert "no jobs" in refused([])
    other = MaskedParameters(_mlp(1), {"layers.0.weight": torch.ones(6, 2, dtype=torch.bool)})
    assert "MaskedParameters" in refused([PackedJob(_mlp(0), _section(), 0, other)])
    assert "engine" in refused([PackedJob(_mlp(0), _section(), 0)], loss_fn=lambda m, b: m(**b).loss, engine="mlp")
    dropout = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    assert "random" in refused([PackedJob(dropout, _section(), 0)],
                               loss_fn=lambda model, batch: model(batch["inputs"]).square().mean())


def test_pack_keys_group_the_jobs_that_may_share_a_pack():
    sweep = {pack_key(_mlp(k), section) for k, section in enumerate(_sweep())}
    assert len(sweep) == 1  # lr, momentum, weight decay and schedule may differ within a pack
    assert pack_key(_mlp(0), _section(batch_size=64)) not in sweep
    assert pack_key(_mlp(0, (6, 8, 6)), _section()) not in sweep
    assert pack_key(_mlp(0), _section(name="adam")) not in sweep


def test_calibration_measures_every_pack_size_and_picks_the_fastest():
    calibration = calibrate_pack_size(_mlp(0), SPIRAL, _section(), binary_loss, sizes=(1, 2, 4), steps=2,
                                      repeats=1, every_size=True)
    assert set(calibration.jobs_per_second) == {1, 2, 4} and all(r > 0 for r in calibration.jobs_per_second.values())
    assert calibration.jobs_per_second[calibration.best] == max(calibration.jobs_per_second.values())


def test_calibration_stops_at_the_first_size_slower_than_a_smaller_one(monkeypatch):
    """Where a pack of two trains slower per job than one at a time (a ConvNet on a CPU), four is never tried."""
    clock = [0.0]

    def alone(*args, **kwargs):
        clock[0] += 1.0

    def packed(jobs, *args, **kwargs):
        clock[0] += 2.0 * len(jobs)

    monkeypatch.setattr(calibrate, "train", alone)
    monkeypatch.setattr(calibrate, "train_packed", packed)
    monkeypatch.setattr(calibrate, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    calibration = calibrate_pack_size(_mlp(0), SPIRAL, _section(), binary_loss, sizes=(1, 2, 4), steps=2, repeats=1)
    assert calibration.jobs_per_second == {1: 1.0, 2: 0.5} and calibration.best == 1


@pytest.mark.slow
def test_the_packed_trials_benchmark_runs_its_cpu_dry_run(tmp_path):
    out = tmp_path / "packed.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "packed_trials.py"), "--cpu-dry-run",
                             "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": "", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["sparse_mlp"]) == {"1", "2"} and figures["sparse_mlp"]["2"]["ratio"] > 0
    assert set(figures["lenet5_mini"]) == {"2"}
    assert set(figures["convnets"]) == {"lenet5_mini", "resnet8"}
    assert "packed/seq" in result.stdout
