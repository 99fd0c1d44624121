"""Every job's masks as one ``[K, N]`` float tensor over the pack's flat weights, following the jobs' changes."""

from __future__ import annotations

import torch

from hfprune.pruning.masking import MaskedParameters
from hfprune.train.packed.stack import FlatStack


class StackedMasks:
    """Row k holds job k's masks (1 = kept) laid out as :attr:`FlatStack.flat`; entries nothing prunes are 1.

    Multiplying gradients and weights by it is what each job's :class:`MaskedParameters` does alone (its gradient
    hooks and ``apply``): products with 0 and 1 are exact. :meth:`refresh` re-reads a job's masks after its
    ``on_step``, when :meth:`MaskedParameters.update` has replaced them.
    """

    def __init__(self, stack: FlatStack, masks: list[MaskedParameters | None]):
        self.stack, self.masks = stack, masks
        self.flat: torch.Tensor | None = None  # made when some job prunes something
        self._read: list[list[torch.Tensor] | None] = [None] * len(masks)
        for k in range(len(masks)):
            self._load(k)

    def _load(self, k: int) -> None:
        masked = self.masks[k]
        if masked is None:
            return
        for name, mask in zip(masked.names, masked.masks):
            if name not in self.stack.offsets:
                continue  # a frozen parameter: it does not change
            if self.flat is None:
                if bool(mask.all()):
                    continue
                self.flat = torch.ones_like(self.stack.flat, requires_grad=False)
            self.stack.row_view(self.flat, k, name).copy_(mask)
        self._read[k] = list(masked.masks)

    def refresh(self, k: int) -> None:
        """Re-read job ``k``'s masks if they were replaced since they were last read."""
        masked, read = self.masks[k], self._read[k]
        if masked is not None and any(now is not then for now, then in zip(masked.masks, read)):
            self._load(k)

    @torch.no_grad()
    def apply(self, flat: torch.Tensor) -> None:
        """Zero the pruned entries of ``flat`` (the weights or their gradients) in place."""
        if self.flat is not None:
            flat.mul_(self.flat)
