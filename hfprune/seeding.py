"""Seeds derived from names, so every trial's randomness is independent of run order."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def stable_seed(*parts: object) -> int:
    """A 31-bit seed that depends only on ``parts`` (not on the process or the hash seed)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_deterministic(threads: int) -> None:
    """Deterministic torch kernels and a fixed number of CPU threads for the rest of the process.

    CPU reductions split over threads, so their rounding depends on the thread count: fixing it (and the
    kernels) makes two machines of one kind, whatever their core counts, compute the same numbers. On CUDA
    cuBLAS also needs a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), set here unless already given.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_num_threads(threads)
