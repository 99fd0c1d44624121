"""Each job's batches in its own solo order, fetched for the whole pack at once (``[K, B, ...]`` per key)."""

from __future__ import annotations

import contextlib
import math

import torch

from hfprune.errors import HfpruneError
from hfprune.train.trainer import make_loader, shuffled_order


def tensor_columns(dataset) -> dict[str, torch.Tensor] | None:
    """The tensors an in-memory dataset of hfprune's indexes by row (``dataset[index]`` is
    ``{key: column[index]}``), or None for any other dataset."""
    from hfprune.data.base import TensorImageSet
    from hfprune.data.spiral import PointSet

    if type(dataset) is PointSet:
        return {"inputs": dataset.x, "labels": dataset.y}
    if type(dataset) is TensorImageSet:
        return {"pixel_values": dataset.images, "labels": dataset.labels}
    return None


class PackedBatches:
    """Batches of ``batch_size`` for every job: job k's rows are those its solo run's loader would give in the
    same step (its generator seeded with its seed, drawn from as iterating the loader draws); with ``drop_last``
    each epoch's last, smaller batch is left out, as a DataLoader with ``drop_last=True`` leaves it."""

    def __init__(self, dataset, seeds: list[int], batch_size: int, device: torch.device, drop_last: bool = False):
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.size = len(dataset)
        # drop_last: a DataLoader's drop_last, which draws the same permutation and leaves the last, smaller batch out
        self.used = self.size // batch_size * batch_size if drop_last else self.size
        if not self.used:
            raise HfpruneError(f"train_packed: drop_last with batches of {batch_size} leaves none of the "
                               f"{self.size} items; lower the batch size")
        self.steps = math.ceil(self.used / batch_size)
        columns = tensor_columns(dataset)
        self.columns = None if columns is None else {key: value.to(device) for key, value in columns.items()}
        if self.columns is None:
            loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
            if loader.num_workers:
                raise HfpruneError(f"train_packed: {type(dataset).__name__} asks for {loader.num_workers} loader "
                                   "workers; packed training reads batches in its own process: train these jobs alone")
            self.collate = loader.collate_fn
        self._out: dict[int, dict[str, torch.Tensor]] = {}  # reused outputs by batch length

    def epoch(self):
        """This epoch's batches, each ``{key: [K, b, ...]}`` on the device (valid until the next one is made)."""
        orders = torch.stack([shuffled_order(self.size, generator) for generator in self.generators])
        if self.columns is not None:
            orders = orders.to(self.device)
        for start in range(0, self.used, self.batch_size):
            yield self._fetch(orders[:, start:start + self.batch_size])

    def _fetch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        jobs, length = index.shape
        if self.columns is not None:
            flat = index.reshape(-1)
            out = self._out.get(length)
            if out is None:
                out = self._out[length] = {key: column.new_empty((jobs * length, *column.shape[1:]))
                                           for key, column in self.columns.items()}
            return {key: torch.index_select(column, 0, flat, out=out[key]).view(jobs, length, *column.shape[1:])
                    for key, column in self.columns.items()}
        fetch_many = getattr(self.dataset, "__getitems__", None)
        batches = []
        for row in index.tolist():
            batches.append(self.collate(fetch_many(row) if fetch_many else [self.dataset[i] for i in row]))
        keys = batches[0].keys() if isinstance(batches[0], dict) else None
        if keys is None or not all(isinstance(batches[0][key], torch.Tensor) for key in keys):
            raise HfpruneError(f"train_packed: {type(self.dataset).__name__} gives batches that are not dicts of "
                               "tensors; packed training stacks each job's batch tensor by tensor")
        return {key: torch.stack([batch[key] for batch in batches]).to(self.device) for key in keys}


class RngStreams:
    """Each job's stream of torch's global random numbers, as ``torch.manual_seed(seed)`` starts it in a solo run:
    a job's batch transform (e.g. augmentation) draws from its own stream, in the order its solo run draws."""

    def __init__(self, seeds: list[int], device: torch.device):
        self.cuda = device.type == "cuda"
        self.cpu_states = [torch.Generator().manual_seed(seed).get_state() for seed in seeds]
        self.cuda_states = []
        if self.cuda:
            saved = torch.cuda.get_rng_state(device)
            for seed in seeds:
                torch.cuda.manual_seed(seed)
                self.cuda_states.append(torch.cuda.get_rng_state(device))
            torch.cuda.set_rng_state(saved, device)
        self.device = device

    @contextlib.contextmanager
    def job(self, k: int):
        """Torch's global generators hold job ``k``'s stream for the block (and the caller's again after it)."""
        saved_cpu = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state(self.device) if self.cuda else None
        torch.set_rng_state(self.cpu_states[k])
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_states[k], self.device)
        try:
            yield
        finally:
            self.cpu_states[k] = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if self.cuda:
                self.cuda_states[k] = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(saved_cuda, self.device)

    def leave(self, k: int) -> None:
        """Leave torch's global generators where job ``k``'s solo run would leave them."""
        torch.set_rng_state(self.cpu_states[k])
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_states[k], self.device)
