"""TEMPORARY (sparsestudy branch): replaced by the methods branch's registry at merge."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import torch
from pydantic import BeforeValidator, Field

from hfprune.pruning.sparse_training.base import SparseResult, SparseRun, SparseTrainingMethod
from hfprune.pruning.sparse_training.loop import train_masked
from hfprune.pruning.unstructured.selection import prune_smallest


class RandomAtInit(SparseTrainingMethod):
    name: Literal["random"] = "random"

    def run(self, run: SparseRun, budget: int) -> SparseResult:
        generator = torch.Generator().manual_seed(run.seed)
        scores = [torch.rand(w.shape, generator=generator) for w in run.weights.values()]
        masks = dict(zip(run.weights, prune_smallest(scores, run.total_weights - budget).masks))
        train_masked(run, masks)
        return SparseResult(masks, run.training.epochs)


from hfprune.pruning.sparse_training.at_init import AT_INITIALISATION_METHODS  # noqa: E402

SPARSE_METHODS = {"random": RandomAtInit, **{m.model_fields["name"].default: m for m in AT_INITIALISATION_METHODS}}


def _entry(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


SparseMethodEntry = Annotated[Union[tuple(SPARSE_METHODS.values())], Field(discriminator="name"),
                              BeforeValidator(_entry)]
