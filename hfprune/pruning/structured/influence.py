"""Block Influence (ShortGPT, Men et al. 2024): BI_i = 1 − E[cos(x_in, x_out)] over the calibration positions, with
x_in and x_out the hidden states entering and leaving block i. A block that changes its input little matters
little: the lowest-BI blocks are removed."""

from __future__ import annotations

from typing import ClassVar

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.criterion import Importance
from hfprune.pruning.structured.statistics import block_similarity


class BlockInfluence(Importance):
    name = "block_influence"
    summary = "1 - E[cos(x_in, x_out)] of each block's hidden states (ShortGPT); layers only"
    needs_calibration = True
    kinds: ClassVar[tuple[str, ...]] = ("layers",)

    def scores(self, model, groups, names, *, batches, loss_fn):
        if batches is None:
            raise HfpruneError("block_influence needs calibration batches")
        return {name: 1 - block_similarity(model, groups[name].modules, batches) for name in names}
