"""Calibration statistics of a model, from one forward pass over the calibration batches (eval mode, no gradients):

- :func:`input_statistics` — per input channel of chosen Linears: Σx, Σx² and the count of positions, hence the
  L2 norm ‖x_j‖₂ (Wanda), the mean and the sample variance (FLAP);
- :func:`block_similarity` — per block of a ``layers`` group, the mean over positions of cos(x_in, x_out) between
  the hidden states entering and leaving it (ShortGPT's Block Influence is 1 − that).

Padding positions (``attention_mask`` 0, for inputs laid out like the batch's tokens) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from hfprune.pruning.unstructured.calibration import batch_tokens, to_device, token_rows


@dataclass
class InputStats:
    """Σx, Σx² over the positions seen, per input channel of one Linear, and how many positions."""

    total: torch.Tensor
    squares: torch.Tensor
    count: int = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().double()
        self.total += rows.sum(0).to(self.total.device)
        self.squares += rows.pow(2).sum(0).to(self.squares.device)
        self.count += rows.shape[0]

    @property
    def norms(self) -> torch.Tensor:
        """‖x_j‖₂ over every position."""
        return self.squares.sqrt()

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)

    @property
    def variance(self) -> torch.Tensor:
        """The sample variance (N − 1 in the denominator) of every channel."""
        if self.count < 2:
            return torch.zeros_like(self.total)
        return ((self.squares - self.total.pow(2) / self.count) / (self.count - 1)).clamp_min(0)


def _run(model: nn.Module, batches: Iterable[Mapping], on_batch) -> int:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = to_device(batch, device)
                on_batch(batch_tokens(batch))
                model(**batch)
                seen += 1
    finally:
        model.train(was_training)
    return seen


def input_statistics(model: nn.Module, names: Iterable[str], batches: Iterable[Mapping]) -> dict[str, InputStats]:
    """Per Linear module ``name``, the statistics of its inputs over the calibration batches."""
    modules = dict(model.named_modules())
    stats: dict[str, InputStats] = {}
    current: dict[str, torch.Tensor | None] = {"tokens": None}
    handles = []
    for name in dict.fromkeys(names):
        linear = modules[name]
        stats[name] = InputStats(torch.zeros(linear.in_features, dtype=torch.float64),
                                 torch.zeros(linear.in_features, dtype=torch.float64))

        def hook(module, args, name=name):
            stats[name].add(token_rows(args[0], current["tokens"]))

        handles.append(linear.register_forward_pre_hook(hook))
    try:
        _run(model, batches, lambda tokens: current.update(tokens=tokens))
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _hidden(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def block_similarity(model: nn.Module, blocks: Iterable[str], batches: Iterable[Mapping]) -> torch.Tensor:
    """Per block module name in ``blocks``, E[cos(x_in, x_out)] over the calibration positions."""
    modules = dict(model.named_modules())
    names = list(blocks)
    sums = torch.zeros(len(names), dtype=torch.float64)
    counts = torch.zeros(len(names), dtype=torch.float64)
    current: dict[str, torch.Tensor | None] = {"tokens": None}
    handles = []
    for index, name in enumerate(names):
        def hook(module, args, kwargs, output, index=index):
            x_in = _hidden(args[0] if args else kwargs["hidden_states"])
            x_out = _hidden(output)
            cos = torch.nn.functional.cosine_similarity(x_in.double(), x_out.double(), dim=-1)
            tokens = current["tokens"]
            if tokens is not None and cos.shape == tokens.shape:
                cos = cos[tokens.to(cos.device)]
            sums[index] += cos.sum().cpu()
            counts[index] += cos.numel()

        handles.append(modules[name].register_forward_hook(hook, with_kwargs=True))
    try:
        _run(model, batches, lambda tokens: current.update(tokens=tokens))
    finally:
        for handle in handles:
            handle.remove()
    return sums / counts.clamp_min(1)
