"""Whether packing pays on this device: a short measured run at a few pack sizes, the best one chosen."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from hfprune.train.packed.batches import tensor_columns
from hfprune.train.packed.engine import train_packed
from hfprune.train.packed.jobs import PackedJob, TrainingSection
from hfprune.train.trainer import LossFn, train


@dataclass
class PackCalibration:
    """Jobs trained per second at each pack size tried (1: one at a time through ``train()``), and the best size."""

    best: int
    jobs_per_second: dict[int, float]

    def describe(self) -> str:
        """One line: the size chosen and the rates it was chosen from."""
        rates = ", ".join(f"{size}: {rate:.1f}" for size, rate in self.jobs_per_second.items())
        return f"execution.pack auto: packs of {self.best} (short runs per second by pack size: {rates})"


def _subset(dataset, size: int):
    """The first ``size`` items, as the same kind of in-memory dataset where it is one (its fast path kept)."""
    columns = tensor_columns(dataset)
    if columns is None:
        return torch.utils.data.Subset(dataset, range(min(size, len(dataset))))
    return type(dataset)(*[column[:size] for column in columns.values()])


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def calibrate_pack_size(model: torch.nn.Module, dataset, section: TrainingSection, loss_fn: LossFn, *,
                        sizes: tuple[int, ...] = (1, 8, 32, 128), steps: int = 4, repeats: int = 2,
                        device: torch.device | str | None = None, every_size: bool = False) -> PackCalibration:
    """Train copies of ``model`` for ``steps`` steps of ``section`` (one epoch of ``steps`` batches of ``dataset``)
    at every pack size in ``sizes`` (1 = one at a time with :func:`train`), ``repeats`` times after a warm-up, and
    return the pack size that trained the most jobs per second (the fastest of the repeats). A size that runs out of
    device memory ends the search, and so does a size slower than a smaller one (the larger sizes are not tried:
    on a CPU a pack of ConvNets is slower at every size, and a large one costs minutes) unless ``every_size``.
    Takes seconds on small models; the models and ``dataset`` are not changed.
    """
    section = section.model_copy(update={"epochs": 1})
    data = _subset(dataset, steps * section.batch_size)
    target = torch.device(device) if device is not None else None
    rates: dict[int, float] = {}
    for size in sorted(set(sizes)):
        times = []
        try:
            for _ in range(repeats + 1):  # the first run warms up
                models = [copy.deepcopy(model) for _ in range(size)]
                _synchronize(target)
                started = time.perf_counter()
                if size == 1:
                    train(models[0], data, section, loss_fn, seed=0, progress=False)
                else:
                    jobs = [PackedJob(m, section, seed) for seed, m in enumerate(models)]
                    train_packed(jobs, data, loss_fn, device=device, progress=False)
                _synchronize(target)
                times.append(time.perf_counter() - started)
        except torch.OutOfMemoryError:
            break
        rate = size / min(times[1:])
        slower = bool(rates) and rate < max(rates.values())
        rates[size] = rate
        if slower and not every_size:
            break
    return PackCalibration(max(rates, key=rates.get), rates)
