"""One job of a pack, and which jobs may share a pack (one clear error for those that may not)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from hfprune.train.sections import TrainingSection  # the packed engine's one import of the training section
from hfprune.errors import HfpruneError
from hfprune.pruning.masking import MaskedParameters

# Optimizer settings jobs of one pack may differ in (their schedules may differ too); everything else is shared.
PER_JOB_OPTIMIZER = ("lr", "momentum", "weight_decay", "betas")
# Config entries that name or describe a checkpoint without changing what the model computes.
_CONFIG_METADATA = {"_name_or_path", "transformers_version", "architectures", "_commit_hash", "torch_dtype", "dtype",
                    "id2label", "label2id", "auto_map", "_attn_implementation_autoset"}


@dataclass(eq=False)
class PackedJob:
    """One run of a pack: what ``train(model, dataset, section, loss_fn, seed=seed, masks=masks, on_step=on_step)``
    would run alone.

    While the pack trains, ``model``'s parameters and buffers are views into the pack's stacked tensors, so
    ``masks`` (a :class:`MaskedParameters` over ``model``) and ``on_step`` read and write this job's own live
    weights; ``on_step(step)`` may change the masks (:meth:`MaskedParameters.update`) and the pack follows.
    During ``on_step``, :attr:`batch` is the batch this job's loss saw in that step, for methods that need it
    (RigL's dense gradient: ``run.loss_fn(job.model, job.batch)``). ``on_step`` runs with torch's global random
    generators as they are: a callback that draws random numbers uses its own generator, seeded from ``seed``.

    Beyond ``train()`` (SGD): ``skip_update(step)`` True skips that step's update of this job (its weights and
    momentum stay as they were, as if the optimizer had not stepped: the reference RigL's rewiring steps), and
    ``reset_momentum`` zeroes the momentum of the job's pruned weights after every step (the reference RigL).
    """

    model: nn.Module
    section: TrainingSection
    seed: int
    masks: MaskedParameters | None = None
    on_step: Callable[[int], None] | None = None
    skip_update: Callable[[int], bool] | None = None
    reset_momentum: bool = False
    _step_batch: tuple[dict, int] | None = field(default=None, init=False, repr=False)

    @property
    def batch(self) -> dict | None:
        """This job's batch of the step just taken, on the pack's device (None outside ``on_step``)."""
        if self._step_batch is None:
            return None
        batch, k = self._step_batch
        return {key: value[k] for key, value in batch.items()}


def _config(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}
    return {key: value for key, value in config.to_dict().items() if key not in _CONFIG_METADATA}


def _shapes(model: nn.Module) -> list[tuple]:
    return ([(name, tuple(p.shape), p.dtype, p.requires_grad) for name, p in model.named_parameters()]
            + [(name, tuple(b.shape), b.dtype) for name, b in model.named_buffers()])


def unsupported(section: TrainingSection) -> str | None:
    """What in ``section`` packed training does not do (None when it does all of it)."""
    if section.mixed_precision != "no":
        return f"mixed_precision {section.mixed_precision!r}"
    if section.gradient_accumulation_steps != 1:
        return f"gradient_accumulation_steps {section.gradient_accumulation_steps}"
    if section.gradient_checkpointing:
        return "gradient_checkpointing"
    if section.freeze:
        return f"freeze {section.freeze}"
    if section.mixup or section.cutmix:
        return "mixup/cutmix (a random mix per batch)"
    return None


def _shared(section: TrainingSection) -> dict:
    """The settings of a section every job of a pack must share, by name."""
    shared = section.model_dump(exclude={"optimizer", "schedule"})
    optimizer = section.optimizer.model_dump(exclude=set(PER_JOB_OPTIMIZER))
    return {**shared, **{f"optimizer.{key}": value for key, value in optimizer.items()}}


def pack_key(model: nn.Module, section: TrainingSection) -> str:
    """A key two jobs share exactly when they may train in one pack (architecture, shapes, shared settings; not
    lr, momentum, weight decay, betas or schedule): group trials by it, then cut the groups to the pack size."""
    return json.dumps([type(model).__qualname__, _shapes(model), _config(model), _shared(section)], sort_keys=True,
                      default=str)


def check_pack(jobs: list[PackedJob]) -> None:
    """Refuse, in one line, a pack whose jobs cannot train together."""
    if not jobs:
        raise HfpruneError("train_packed: no jobs given; pass one PackedJob or more")
    first = jobs[0]
    first_shapes, first_config, first_shared = _shapes(first.model), _config(first.model), _shared(first.section)
    seen: set[int] = set()
    for index, job in enumerate(jobs):
        if not isinstance(job, PackedJob):
            raise HfpruneError(f"train_packed: job {index} is a {type(job).__name__}, not a PackedJob")
        if id(job.model) in seen:
            raise HfpruneError(f"train_packed: job {index} trains a model another job of the pack trains too; give "
                               "every job its own copy (copy.deepcopy)")
        seen.add(id(job.model))
        problem = unsupported(job.section)
        if problem:
            raise HfpruneError(f"train_packed: job {index} asks for {problem}, which packed training does not "
                               "do (fp32 steps, no accumulation, checkpointing, freezing or mixing); train it alone "
                               "with train()")
        if type(job.model) is not type(first.model) or _shapes(job.model) != first_shapes \
                or _config(job.model) != first_config:
            raise HfpruneError(f"train_packed: job {index} ({type(job.model).__name__}) has another architecture than "
                               f"job 0 ({type(first.model).__name__}); a pack trains models of one architecture "
                               "and shape: pack them separately")
        shared = _shared(job.section)
        if shared != first_shared:
            key = next(key for key in first_shared if shared.get(key) != first_shared[key])
            raise HfpruneError(f"train_packed: job {index} has {key}={shared[key]!r} but job 0 has "
                               f"{first_shared[key]!r}; the jobs of a pack share batch_size, epochs, the optimizer "
                               f"name and every other training setting except optimizer {', '.join(PER_JOB_OPTIMIZER)}"
                               " and schedule: pack them separately")
        if (job.skip_update is not None or job.reset_momentum) and job.section.optimizer.name != "sgd":
            raise HfpruneError(f"train_packed: job {index} skips updates or resets momentum, which packed training "
                               f"does for SGD only, not {job.section.optimizer.name}; use sgd or train it without them")
        if job.masks is not None:
            own = {id(param) for param in job.model.parameters()}
            if not isinstance(job.masks, MaskedParameters) or any(id(param) not in own for param in job.masks.params):
                raise HfpruneError(f"train_packed: job {index}'s masks are not a MaskedParameters over its own model; "
                                   "build them with MaskedParameters(job.model, masks)")
    dtypes = {param.dtype for param in first.model.parameters() if param.requires_grad}
    if not dtypes:
        raise HfpruneError("train_packed: the models have no parameter that requires a gradient; nothing to train")
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise HfpruneError(f"train_packed: the trained parameters have dtypes {sorted(map(str, dtypes))}; packed "
                           "training needs one floating dtype (e.g. model.float())")
