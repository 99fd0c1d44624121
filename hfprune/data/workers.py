"""DataLoader workers for datasets decoded on access (ImageNet): seeded per worker, pinned, persistent.

A dataset asks for workers with a ``num_workers`` attribute (``data.num_workers``). Each worker's torch seed is
torch's own ``base_seed + worker_id``, where ``base_seed`` comes from the loader's seeded generator, so the
augmentations (drawn from torch's RNG) are the same in every run with the same seed and worker count;
:func:`seed_worker` seeds numpy and ``random`` from it too.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its (already seeded) torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_options(dataset) -> dict:
    """Extra ``DataLoader`` arguments for ``dataset``: none unless it asks for workers."""
    workers = int(getattr(dataset, "num_workers", 0) or 0)
    if workers <= 0:
        return {}
    return {"num_workers": workers, "pin_memory": torch.cuda.is_available(), "persistent_workers": True,
            "worker_init_fn": seed_worker, "prefetch_factor": 4}
