"""``train_packed``: K jobs of one architecture trained together, each as ``train()`` would train it alone.

Per step, for the whole pack: every job's batch in its own solo order (:mod:`.batches`), every job's gradients
(:mod:`.mlp` for the sparse MLPs, :mod:`.generic` for any other model), masked gradients, per-job clipping,
every job's own optimizer step and schedule (:mod:`.optim`), masked weights; then each job's ``on_step``, whose
mask changes the pack follows (:mod:`.masks`).
"""

from __future__ import annotations

import time
from typing import Callable, Literal

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from hfprune.errors import HfpruneError
import hfprune.train.packed.mlp as mlp
from hfprune.train.packed.batches import PackedBatches, RngStreams
from hfprune.train.packed.generic import VmappedModel
from hfprune.train.packed.jobs import PackedJob, check_pack
from hfprune.train.packed.masks import StackedMasks
from hfprune.train.packed.optim import PackedOptimizer
from hfprune.train.packed.stack import FlatStack
from hfprune.train.trainer import LossFn, TrainResult, get_accelerator

TOLERANCE = 1e-5
"""Largest difference between a packed job's weights and its solo run's that the tests accept where the two are
not bit for bit equal (float32, runs of a few dozen steps).

On the CPU the mlp engine gives every job its solo run's weights, masks and losses bit for bit: data order, masks,
schedules and the optimizer's arithmetic are the solo run's element for element, and each product runs in a
batched form only where that sums as the job's own product does (:mod:`.mlp`). The generic engine's products are
vmapped (a convolution becomes a grouped one) and sum in another order, as any engine's do on a GPU: there the
weights differ in their last bits, as they do between thread counts, and such differences grow over long runs as
any rounding difference does (through BatchNorm of a nearly constant channel, fast).
"""


def _clip(stack: FlatStack, max_norm: float) -> None:
    """Clip each job's gradients to total norm ``max_norm`` as ``clip_grad_norm_`` clips one model's."""
    grad = stack.grad
    norms = torch.stack([torch.linalg.vector_norm(stack.view(grad, name).reshape(stack.size, -1), 2, dim=1)
                         for name in stack.trained], dim=1)
    total = torch.linalg.vector_norm(norms, 2, dim=1, keepdim=True)
    grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))


def _transform(batch: dict, transform: Callable[[dict], dict], streams: RngStreams) -> dict:
    outputs = []
    for k in range(next(iter(batch.values())).shape[0]):
        with streams.job(k):
            outputs.append(transform({key: value[k] for key, value in batch.items()}))
    return {key: torch.stack([output[key] for output in outputs]) for key in outputs[0]}


def train_packed(
    jobs: list[PackedJob],
    dataset,
    loss_fn: LossFn,
    *,
    device: torch.device | str | None = None,
    engine: Literal["auto", "mlp", "generic"] = "auto",
    batch_transform: Callable[[dict], dict] | None = None,
    progress: bool = True,
    description: str = "train packed",
    drop_last: bool = False,
) -> list[TrainResult]:
    """Train every job's model in place, as ``train(job.model, dataset, job.section, loss_fn, seed=job.seed,
    masks=job.masks, on_step=job.on_step)`` would alone, all of them together; returns their results in order.

    Each job keeps its own initial weights, masks (pruned weights exactly zero throughout, masks identical to the
    solo run's), data order (its loader's generator seeded with its seed), optimizer state and schedule; jobs may
    differ in optimizer lr, momentum, weight_decay, betas and schedule, and share everything else (one clear error
    otherwise). On the CPU the mlp engine gives the solo runs' weights bit for bit, the generic engine within float
rounding (see :data:`TOLERANCE`). ``engine``
    "mlp" (the sparse_mlp family with ``binary_loss``: batched matrix products) or "generic" (any model:
    ``vmap`` over ``functional_call``); "auto" takes the first that fits. ``batch_transform(batch) -> batch``
    transforms each job's batch with that job's own stream of torch's random numbers (augmentation), the stream a
    solo run's ``torch.manual_seed(seed)`` starts; afterwards torch's global generators are where the last job's
    solo run would leave them. A job's ``seconds`` is its share of the pack's time. One process only (no DDP or
    DeepSpeed), on ``device`` (default: the one ``train()`` uses).

    ``drop_last`` leaves each epoch's last, smaller batch out (a DataLoader's ``drop_last``; ``train()`` has no
    such option: a job that asks for it is defined by this engine, alone or packed). A job's ``skip_update`` and
    ``reset_momentum`` (SGD) skip the update of chosen steps and zero the momentum of its pruned weights.
    """
    check_pack(jobs)
    if PartialState().num_processes > 1:
        raise HfpruneError("train_packed: packed training runs in one process; under accelerate launch or torchrun "
                           "train the jobs one at a time with train()")
    models, section = [job.model for job in jobs], jobs[0].section
    if engine == "auto":
        engine = "mlp" if mlp.fits(models[0], loss_fn) else "generic"
    elif engine == "mlp" and not mlp.fits(models[0], loss_fn):
        raise HfpruneError(f"train_packed: the mlp engine trains the sparse_mlp family's model with binary_loss, not "
                           f"{type(models[0]).__name__} with {getattr(loss_fn, '__name__', loss_fn)}; use "
                           "engine='generic' (or 'auto')")
    elif engine not in ("mlp", "generic"):
        raise HfpruneError(f"train_packed: engine must be 'auto', 'mlp' or 'generic', got {engine!r}")
    device = torch.device(device) if device is not None else get_accelerator().device
    batches = PackedBatches(dataset, [job.seed for job in jobs], section.batch_size, device, drop_last)
    streams = RngStreams([job.seed for job in jobs], device)
    for job in jobs:
        if job.masks is not None:
            job.masks.apply()  # as the solo run: pruned weights zero before anything copies them
        job.model.train()
    started = time.perf_counter()
    stack = FlatStack(models, device, autograd=engine == "generic")
    compute = mlp.StackedMLP(stack) if engine == "mlp" else VmappedModel(stack, loss_fn)
    masks = StackedMasks(stack, [job.masks for job in jobs])
    optimizer = PackedOptimizer(stack, [job.section for job in jobs], batches.steps, section.epochs)
    weights = stack.flat.detach()
    watched = [k for k, job in enumerate(jobs) if job.on_step is not None]
    skippers = [k for k, job in enumerate(jobs) if job.skip_update is not None]
    resets = [k for k, job in enumerate(jobs) if job.reset_momentum]
    steps, losses = 0, torch.full((len(jobs),), float("nan"))
    try:
        stack.bind()
        masks.apply(weights)
        for _ in tqdm(range(section.epochs), desc=description, leave=False, disable=not progress):
            total, count = torch.zeros(len(jobs), device=device), 0
            for batch in batches.epoch():
                if batch_transform is not None:
                    batch = _transform(batch, batch_transform, streams)
                total += compute.gradients(batch).float()
                count += 1
                masks.apply(stack.grad)
                if section.grad_clip:
                    _clip(stack, section.grad_clip)
                skipped = [k for k in skippers if jobs[k].skip_update(steps + 1)]
                kept = optimizer.snapshot(skipped) if skipped else None
                optimizer.step(steps)
                if kept is not None:
                    optimizer.restore(skipped, kept)
                masks.apply(weights)
                for k in resets:
                    optimizer.mask_momentum(k, masks)
                steps += 1
                for k in watched:
                    job = jobs[k]
                    job._step_batch = (batch, k)
                    job.on_step(steps)
                    job._step_batch = None
                    masks.refresh(k)  # an update() zeroed the job's newly pruned weights itself
            losses = (total / max(1, count)).cpu()
    finally:
        stack.release()
        for job in jobs:
            job._step_batch = None
            if job.masks is not None:
                job.masks.detach()
    streams.leave(len(jobs) - 1)
    seconds = (time.perf_counter() - started) / len(jobs)
    return [TrainResult(section.epochs, steps, seconds, float(loss)) for loss in losses.tolist()]
