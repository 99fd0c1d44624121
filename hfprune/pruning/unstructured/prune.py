"""One call for the masks of any registered unstructured method (studies, ``hfprune prune`` and users)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.methods import UnstructuredMethod, UnstructuredResult
from hfprune.pruning.unstructured.registry import method_from


def unstructured_masks(model: nn.Module, method: str | UnstructuredMethod, sparsity: float, *,
                       targets: str | Iterable[str] | None = None, ignore: str | Iterable[str] = (),
                       calibration: Iterable[Mapping] | None = None, progress: bool = False,
                       **options: Any) -> UnstructuredResult:
    """Masks pruning ``sparsity`` of the target Linear weights with ``method`` (a registered name with its
    ``options``, e.g. ``"onp", lam=0.08``, or a method instance).

    ``targets``/``ignore`` are regexes over module names (default: the model family's targets, e.g. the
    decoder Linears of a Llava's language model); ``calibration`` batches of model inputs (any iterable; a
    generator is read once into a list) calibrate activation scores, Wanda, OWL and SparseGPT. The model is not
    modified — except by SparseGPT, which writes its updated kept weights into it (``method.updates_weights``);
    use :meth:`UnstructuredResult.apply` to zero the pruned weights.
    """
    chosen = method_from(method, **options)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise HfpruneError(f"sparsity must be a number strictly between 0 and 1, got {sparsity!r}")
    return chosen.masks(model, float(sparsity), targets=targets, ignore=ignore, calibration=calibration,
                        progress=progress)
