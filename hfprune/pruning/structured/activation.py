"""Activation-aware criteria, from one calibration pass (:mod:`~hfprune.pruning.structured.statistics`).

- ``wanda`` — Wanda's score per weight, |W_ij|·‖X_j‖₂ (X_j: input channel j of the weight's Linear over every
  calibration position; Sun et al. 2023), summed over every weight a unit owns (its rows of q/k/v or gate/up, its
  columns of the output projection or down; a block's every Linear). Biases carry no input and do not count.
- ``flap`` — FLAP's fluctuation metric (An et al. 2024): for each input channel j of the layer that reads the unit
  (the output projection for heads, down for FFN neurons), the sample variance of X_j over the calibration positions
  times the squared norm of its weight column, ‖W_:,j‖²; a unit's score is the sum over its channels. A global
  allocation compares scores standardised per group (FLAP's adaptive structure search). ``compensate: true`` folds
  the removed channels' mean contribution into the bias of the layer they feed: b += W_:,removed · mean(X_removed)
  (a bias is added where the layer has none).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
from pydantic import Field, PrivateAttr
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.criterion import Importance, piece_sum, unit_sums
from hfprune.pruning.structured.gates import consumer
from hfprune.pruning.structured.groups import Group, StructuredMask, removed_indices
from hfprune.pruning.structured.statistics import InputStats, input_statistics


def _linear_of(param: str, modules: Mapping[str, nn.Module]) -> str | None:
    """The Linear whose ``weight`` is ``param`` (None for biases and other parameters)."""
    module, _, leaf = param.rpartition(".")
    return module if leaf == "weight" and isinstance(modules.get(module), nn.Linear) else None


def owned_linears(model: nn.Module, groups: Mapping[str, Group], names) -> list[str]:
    """Every Linear whose weight some unit of ``names`` owns a slice of."""
    modules = dict(model.named_modules())
    return list(dict.fromkeys(linear for name in names for piece in groups[name].owned
                              if (linear := _linear_of(piece.param, modules)) is not None))


def _require(batches) -> None:
    if batches is None:
        raise HfpruneError("this criterion needs calibration batches")


class WandaImportance(Importance):
    name = "wanda"
    summary = "Σ |W|·‖X‖₂ over the unit's weights (Wanda per channel)"
    needs_calibration = True

    def scores(self, model, groups, names, *, batches, loss_fn):
        _require(batches)
        names = list(names)
        modules = dict(model.named_modules())
        stats = input_statistics(model, owned_linears(model, groups, names), batches)

        def element(param: str, weight: torch.Tensor):
            linear = _linear_of(param, modules)
            if linear is None:
                return None
            return weight.detach().double().abs() * stats[linear].norms.to(weight.device)[None, :]

        with torch.no_grad():
            return unit_sums(model, groups, names, element)


class FlapImportance(Importance):
    name = "flap"
    summary = "Σ over the unit's channels of Var(X_j)·‖W_:,j‖² at the layer that reads it (FLAP); compensate"
    needs_calibration = True
    kinds: ClassVar[tuple[str, ...]] = ("heads", "kv_groups", "ffn")

    compensate: bool = Field(False, description="fold the removed channels' mean contribution into the output bias "
                                                "of the layer they feed (FLAP's bias compensation)")
    _means: dict = PrivateAttr(default_factory=dict)

    def scores(self, model, groups, names, *, batches, loss_fn):
        _require(batches)
        names = list(names)
        modules = dict(model.named_modules())
        consumers = {name: consumer(groups[name], modules) for name in names}
        stats: dict[str, InputStats] = input_statistics(model, [found[0] for found in consumers.values()], batches)
        self._means = {name: stats[module] for name, (module, _, _) in consumers.items()}
        scores = {}
        for name, (module_name, module, piece) in consumers.items():
            with torch.no_grad():
                metric = stats[module_name].variance * module.weight.detach().double().pow(2).sum(0).cpu()
            scores[name] = piece_sum(groups[name], piece, metric[None, :])
        return scores

    def global_scores(self, scores):
        standardised = {}
        for name, score in scores.items():
            spread = score.std() if score.numel() > 1 else torch.tensor(0.0, dtype=score.dtype)
            standardised[name] = (score - score.mean()) / spread if spread > 0 else score - score.mean()
        return standardised

    @torch.no_grad()
    def adjust(self, model: nn.Module, groups: Mapping[str, Group], mask: StructuredMask) -> None:
        """FLAP's bias compensation, from the means measured when scoring."""
        if not self.compensate:
            return
        modules = dict(model.named_modules())
        for name, kept in mask.items():
            if name not in self._means:
                raise HfpruneError(f"flap compensates only the groups it scored; '{name}' was not")
            _, layer, piece = consumer(groups[name], modules)
            removed = removed_indices(groups[name], piece, kept).to(layer.weight.device)
            mean = self._means[name].mean.to(layer.weight.device, torch.float64)[removed]
            shift = (layer.weight.double()[:, removed] @ mean).to(layer.weight.dtype)
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.out_features, dtype=layer.weight.dtype,
                                                      device=layer.weight.device))
            layer.bias += shift
