"""The training loop: Accelerate for devices, mixed precision, accumulation and processes.

One loop for every backend Accelerate launches: one CPU or GPU, DDP, and DeepSpeed ZeRO-1/2/3 (``accelerate
launch --config_file accelerate_configs/deepspeed_zero2.yaml ...``). A run with nothing for Accelerate to do per
step (one process, no DeepSpeed, no mixed precision, no accumulation, no compilation) takes the lean loop: the same
optimizer, schedule, batches and masks, without Accelerate's per-step wrappers (its optimizer step looks a package
up on disk twice per step, its ``zero_grad`` reads a signature, its loader prefetches), which cost more per step
than a tiny model's whole forward and backward; the weights it gives are bit for bit those of the wrapped loop.

Pruning masks stay exact on all of them (:mod:`hfprune.pruning.masking`): pruned weights are zeroed before
``accelerator.prepare`` (so DeepSpeed's fp32 master copies start at zero), gradient hooks mask every gradient
before it is accumulated, reduced or partitioned, and the masks are re-applied after every optimiser step.

Under DeepSpeed the recipe is the source of truth for what it says: micro-batch size, gradient accumulation,
gradient clipping and mixed precision are written into the DeepSpeed config of each run; ZeRO stage, offload
and the rest come from the Accelerate/DeepSpeed config. At the end of a run the engine is taken apart again:
the model gets its (fp32 master) weights back, in its own dtype, unpartitioned, without DeepSpeed's hooks, so
that it evaluates, saves and trains again like any model.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import (DistributedDataParallelKwargs, DistributedType, DynamoBackend, InitProcessGroupKwargs,
                               send_to_device)
from tqdm.auto import tqdm

from hfprune.errors import HfpruneError
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.sections import TrainingSection
from hfprune.train.optim import build_optimizer, build_schedule

LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


# How long processes wait for each other at a barrier: the main process alone answers a benchmark suite on a
# multi-billion-parameter model (hours) while the others wait; torch's default (10 min for NCCL) would kill them.
DISTRIBUTED_TIMEOUT = timedelta(hours=6)


@functools.lru_cache(maxsize=None)
def get_accelerator() -> Accelerator:
    """The process's Accelerator for coordination (main process, barriers, device); its state is process-wide.

    Created first (it sets up the process group, with :data:`DISTRIBUTED_TIMEOUT`); later Accelerators share it.
    It trains nothing, so it takes no mixed precision: each training run sets its own (:func:`_use_precision`).
    """
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=DISTRIBUTED_TIMEOUT)])
    _honour_zero3_init_flag(accelerator)
    return accelerator


def _honour_zero3_init_flag(accelerator: Accelerator) -> None:
    """Under ZeRO-3 with ``zero3_init_flag: false``, let transformers build and load models whole.

    Accelerate registers its DeepSpeed config with transformers whatever the flag says, and transformers then
    builds every model under ``deepspeed.zero.Init`` (partitioned at construction). hfprune copies the dense
    model for every trial and lets each run partition its copy at ``prepare``, so it needs whole models.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.is_zero3_init_enabled() is False:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def _use_precision(mixed_precision: str) -> None:
    """Let the next Accelerator of this process train in ``mixed_precision``, whatever an earlier run used.

    Accelerate keeps one mixed precision per process and refuses an Accelerator that asks for another
    ("AcceleratorState has already been initialized and cannot be changed"); a study pretrains and retrains
    in one process, each stage with its own. Forgetting the accelerator-level state (not the process group,
    device or DeepSpeed config, which live in PartialState or are re-read) lets the next Accelerator set it
    again. Under DeepSpeed the precision comes from the DeepSpeed config of each run instead.
    """
    state = AcceleratorState._shared_state
    if (state.get("_mixed_precision") not in (None, mixed_precision)
            and state.get("distributed_type") != DistributedType.DEEPSPEED):
        AcceleratorState._reset_state(reset_partial_state=False)


def _identity(batch):
    return batch


# The lean loop is taken whenever it may be; False sends every run through Accelerate's wrapped objects (kept for
# the tests and benchmarks that compare the two).
LEAN_LOOP = True


def _is_lean(accelerator: Accelerator, section: TrainingSection) -> bool:
    """Whether Accelerate has nothing to do per step: one process (no DDP, DeepSpeed or FSDP), no mixed precision
    or fp8, no gradient accumulation and no torch.compile (the lean loop then computes what the wrapped one does)."""
    dynamo = getattr(accelerator.state, "dynamo_plugin", None)
    return (LEAN_LOOP and accelerator.distributed_type == DistributedType.NO and accelerator.num_processes == 1
            and section.mixed_precision == "no" and not accelerator.native_amp and accelerator.scaler is None
            and section.gradient_accumulation_steps == 1 and accelerator.gradient_accumulation_steps == 1
            and (dynamo is None or dynamo.backend == DynamoBackend.NO))


def epoch_batches(loader: torch.utils.data.DataLoader):
    """One pass over a :func:`make_loader` loader: its batches, in its order, drawing from its generator exactly
    what iterating it draws (the iterator's base seed, the sampler's permutation and its empty remainder), so
    the generator ends where the loader leaves it; without the DataLoader's per-batch machinery.

    A loader this cannot mirror (workers, another sampler) is iterated as it is.
    """
    sampler = loader.sampler
    if (loader.num_workers or loader.pin_memory or loader.drop_last or loader.batch_sampler is None
            or type(loader.batch_sampler) is not torch.utils.data.BatchSampler
            or type(sampler) is not torch.utils.data.RandomSampler or sampler.replacement
            or sampler.generator is not loader.generator or loader.generator is None
            or sampler._num_samples is not None or isinstance(loader.dataset, torch.utils.data.IterableDataset)):
        yield from loader
        return
    dataset, collate, size = loader.dataset, loader.collate_fn, loader.batch_size
    order = shuffled_order(len(dataset), loader.generator)
    fetch_many = getattr(dataset, "__getitems__", None)
    for start in range(0, len(order), size):
        indices = order[start:start + size].tolist()
        yield collate(fetch_many(indices) if fetch_many else [dataset[index] for index in indices])


def shuffled_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """The order in which one epoch of a shuffling :func:`make_loader` loader visits ``n`` items, drawn from its
    ``generator`` exactly as iterating the loader draws (base seed, permutation, the sampler's empty remainder)."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the DataLoader iterator's base seed
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)  # RandomSampler draws a last permutation for its (empty) remainder
    return order


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int,
                batched: bool | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader that fetches whole batches at once when the dataset can (``__getitems__``; ``batched``
    says so for wrappers such as ``Subset``, which always have it), with the
    workers a dataset decoded on access asks for (:func:`hfprune.data.workers.loader_options`)."""
    from hfprune.data.workers import loader_options

    generator = torch.Generator().manual_seed(seed)
    batched = hasattr(dataset, "__getitems__") if batched is None else batched
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
        collate_fn=_identity if batched else None, **loader_options(dataset),
    )


def batches_in_order(dataset, batch_size: int, device: torch.device | None = None) -> Iterator[dict]:
    """``dataset``'s batches in order (no shuffling), each tensor moved to ``device`` where one is given."""
    for batch in make_loader(dataset, batch_size, shuffle=False, seed=0):
        yield {key: value.to(device) if device is not None else value for key, value in batch.items()}


@dataclass
class TrainState:
    """Where a run stopped, to continue it as if it had never stopped: the epochs done, the optimizer's and the
    schedule's state, torch's RNG and the shuffling generator."""

    epoch: int
    optimizer: dict
    schedule: dict
    rng: torch.Tensor
    shuffle: torch.Tensor

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TrainResult:
    epochs: int
    steps: int
    seconds: float
    last_epoch_loss: float
    state: TrainState | None = None  # where the run stopped (with ``stop_epoch``)


# -- gradient checkpointing -------------------------------------------------------------------------------------
def _enable_gradient_checkpointing(model: torch.nn.Module) -> Callable[[], None]:
    """Turn on (non-reentrant) activation checkpointing and off the KV cache; returns how to undo both."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise HfpruneError(f"{type(model).__name__} does not support gradient checkpointing; "
                           "set gradient_checkpointing: false in the recipe's pretrain/retrain section")
    was_on = any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    configs = [model.config] + [getattr(model.config, key) for key in ("text_config", "vision_config")
                                if getattr(model.config, key, None) is not None]
    caches = [(config, getattr(config, "use_cache", None)) for config in configs]
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for config, _ in caches:
        config.use_cache = False

    def undo() -> None:
        for config, value in caches:
            if value is None:
                config.__dict__.pop("use_cache", None)
            else:
                config.use_cache = value
        if not was_on:
            (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()

    return undo


# -- DeepSpeed ----------------------------------------------------------------------------------------------------
def _configure_deepspeed(plugin, section: TrainingSection) -> None:
    """Write the recipe's batch size, accumulation, clipping and precision into this run's DeepSpeed config.

    Accelerate fills a config's ``auto`` entries in place at ``prepare``; the config as first seen is kept on
    the plugin and restored before each run, so one run's values never leak into the next.
    """
    config = plugin.deepspeed_config
    template = getattr(plugin, "_hfprune_template", None)
    if template is None:
        template = plugin._hfprune_template = copy.deepcopy(config)
        for key, value in (("gradient_accumulation_steps", section.gradient_accumulation_steps),
                           ("gradient_clipping", float(section.grad_clip or 0.0))):
            given = template.get(key, "auto")
            if given not in ("auto", value) and not (key == "gradient_accumulation_steps" and given == 1):
                warnings.warn(f"the DeepSpeed config sets {key}={given}; hfprune uses the recipe's value "
                              f"({value} in this run)", stacklevel=3)
    config.clear()
    config.update(copy.deepcopy(template))
    config["gradient_accumulation_steps"] = section.gradient_accumulation_steps
    config["gradient_clipping"] = float(section.grad_clip or 0.0)
    config["train_micro_batch_size_per_gpu"] = section.batch_size
    config["train_batch_size"] = "auto"
    for precision in ("fp16", "bf16"):
        entry = config.get(precision)
        config[precision] = {**(entry if isinstance(entry, dict) else {}),
                             "enabled": section.mixed_precision == precision}


def _release_deepspeed(engine, parameters: dict[torch.nn.Parameter, tuple[torch.dtype, set[str]]]) -> None:
    """Give the model back its weights, whole and in their own dtype, and remove DeepSpeed's hooks.

    ``parameters`` maps each parameter to its dtype and instance attributes before ``prepare``. The weights
    are the optimiser's fp32 master copies (gathered across ranks: every rank must call this).
    """
    from deepspeed import zero
    from deepspeed.utils import safe_get_full_fp32_param

    for param, (dtype, _) in parameters.items():
        full = safe_get_full_fp32_param(param) if param.requires_grad else None
        if full is None and hasattr(param, "ds_id"):  # a frozen ZeRO-3 parameter: gather its 16-bit values
            with zero.GatheredParameters([param]):
                full = param.data.clone()
        if full is not None:
            param.data = full.reshape(getattr(param, "ds_shape", param.shape)).to(dtype)
        elif param.dtype != dtype:
            param.data = param.data.to(dtype)
    engine.destroy()  # removes ZeRO's gradient hooks and, for ZeRO-3, its module hooks
    for param, (_, attributes) in parameters.items():
        for name in set(vars(param)) - attributes:  # ZeRO-3's ds_* partition state, ZeRO-1/2's _hp_mapping
            delattr(param, name)


def freeze(model: torch.nn.Module, patterns: list[str]) -> list[torch.nn.Parameter]:
    """Turn off the gradients of the parameters whose names fully match a pattern; returns them."""
    if not patterns:
        return []
    compiled = [re.compile(pattern) for pattern in patterns]
    frozen = [param for name, param in model.named_parameters()
              if param.requires_grad and any(pattern.fullmatch(name) for pattern in compiled)]
    for param in frozen:
        param.requires_grad_(False)
    return frozen


def train(
    model: torch.nn.Module,
    dataset,
    section: TrainingSection,
    loss_fn: LossFn,
    *,
    seed: int,
    masks: MaskedParameters | None = None,
    progress: bool = True,
    description: str = "train",
    find_unused_parameters: bool = False,
    resume: TrainState | None = None,
    stop_epoch: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``section.epochs`` epochs, keeping ``masks`` exact.

    Parameters matching ``section.freeze`` stay as they are (no gradient, not in the optimizer). A run can be
    cut into pieces: ``stop_epoch`` stops after that many epochs of the schedule and returns its ``state``;
    ``resume`` (with the model's weights as the piece before left them) continues from there, the schedule,
    optimizer and shuffling going on as in one uninterrupted run. ``on_step(step)`` is called after every
    optimizer step (and the masks' re-application) with the number of steps taken since epoch 0; it may change
    the masks (:meth:`MaskedParameters.update`), as methods that prune during training do.
    """
    # A fresh Accelerator per run (cheap: the process state is shared) holds the prepared objects only
    # as long as this run; free_memory() would cost a full gc.collect() per trial instead.
    # DDP must tolerate parameters without gradients in a step (a text-only batch never reaches a VLM's
    # vision tower or connector); it costs one graph traversal per step, so only where asked.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    _use_precision(section.mixed_precision)
    accelerator = Accelerator(mixed_precision=section.mixed_precision,
                              gradient_accumulation_steps=section.gradient_accumulation_steps, kwargs_handlers=handlers)
    # accelerate launch exports a DeepSpeed config's gradient_accumulation_steps, which overrides the argument
    accelerator.gradient_accumulation_steps = section.gradient_accumulation_steps
    plugin = accelerator.state.deepspeed_plugin  # None unless DeepSpeed
    if plugin is not None:
        _honour_zero3_init_flag(accelerator)
        _configure_deepspeed(plugin, section)
    torch.manual_seed(seed)
    loader = make_loader(dataset, section.batch_size, shuffle=True, seed=seed)
    shuffle = loader.generator
    if resume is not None:
        torch.set_rng_state(resume.rng)
        shuffle.set_state(resume.shuffle)
    first, last = (resume.epoch if resume else 0), min(section.epochs, stop_epoch or section.epochs)
    steps_per_epoch = math.ceil(len(loader) / section.gradient_accumulation_steps)
    undo_checkpointing = _enable_gradient_checkpointing(model) if section.gradient_checkpointing else None
    if masks is not None:
        masks.apply()  # before prepare: DeepSpeed copies the weights into its fp32 master partitions there
    # DeepSpeed changes parameters in place (dtype, ZeRO-3 partitioning, attributes); a model that came
    # partitioned (built under zero.Init) is left to its engine.
    parameters = {param: (param.dtype, set(vars(param))) for param in model.parameters()}
    release = plugin is not None and not any(hasattr(param, "ds_id") for param in parameters)
    frozen = freeze(model, section.freeze)
    if not any(param.requires_grad for param in model.parameters()):
        for param in frozen:
            param.requires_grad_(True)
        raise HfpruneError(f"{description}: freeze {section.freeze} leaves no parameter to train; freeze fewer "
                           "parameters, or set epochs: 0")
    lean = plugin is None and _is_lean(accelerator, section)
    if lean:  # on its device before the optimizer is built, as prepare leaves it (one process: nothing else)
        model = accelerator.prepare_model(model)
    optimizer = build_optimizer([param for param in model.parameters() if param.requires_grad], section.optimizer)
    schedule = build_schedule(optimizer, section.schedule, steps_per_epoch, section.epochs)
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)  # onto the parameters' device
        schedule.load_state_dict(resume.schedule)
    if lean:
        prepared = model
    else:
        prepared, optimizer, loader, schedule = accelerator.prepare(model, optimizer, loader, schedule)
    started, steps, epoch_loss = time.perf_counter(), 0, float("nan")
    try:
        if masks is not None:
            masks.apply()
            masks.attach()
        bar = tqdm(range(first, last), desc=description, leave=False,
                   disable=not (progress and accelerator.is_main_process))
        prepared.train()
        for _ in bar:
            total, batches = torch.zeros((), device=accelerator.device), 0
            if lean:
                device = None if accelerator.device.type == "cpu" else accelerator.device
                for batch in epoch_batches(loader):
                    loss = loss_fn(prepared, batch if device is None else send_to_device(batch, device))
                    loss.backward()
                    if section.grad_clip:
                        torch.nn.utils.clip_grad_norm_(prepared.parameters(), section.grad_clip)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    if masks is not None:
                        masks.apply()
                    total += loss.detach().float()
                    batches += 1
                    steps += 1
                    if on_step is not None:
                        on_step(first * steps_per_epoch + steps)
            else:
                for batch in loader:
                    with accelerator.accumulate(prepared):
                        loss = loss_fn(prepared, batch)
                        accelerator.backward(loss)  # DeepSpeed: also clips and steps at accumulation boundaries
                        if accelerator.sync_gradients and section.grad_clip and plugin is None:
                            accelerator.clip_grad_norm_(prepared.parameters(), section.grad_clip)
                        optimizer.step()
                        schedule.step()
                        optimizer.zero_grad(set_to_none=True)
                        if masks is not None and accelerator.sync_gradients:
                            masks.apply()
                    total += loss.detach().float()
                    batches += 1
                    if accelerator.sync_gradients:
                        steps += 1
                        if on_step is not None:
                            on_step(first * steps_per_epoch + steps)
            epoch_loss = (total / max(1, batches)).item()
            bar.set_postfix(loss=f"{epoch_loss:.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
    finally:
        for param in frozen:
            param.requires_grad_(True)
        if masks is not None:
            masks.detach()  # a MaskedParameters serves several runs: hooks never stack
        if undo_checkpointing is not None:
            undo_checkpointing()
    if release:  # after a run that finished (a collective under ZeRO: every rank gets here)
        _release_deepspeed(accelerator.deepspeed_engine_wrapped.engine, parameters)
        accelerator.deepspeed_engine_wrapped = None
        if masks is not None:
            masks.apply()
    state = None
    if stop_epoch is not None:
        state = TrainState(last, copy.deepcopy(optimizer.state_dict()), copy.deepcopy(schedule.state_dict()),
                           torch.get_rng_state(), shuffle.get_state())
    return TrainResult(last - first, steps, time.perf_counter() - started, epoch_loss, state)
