"""How an unstructured method scores weights, apart from how it spreads sparsity over layers.

- ``weight`` — magnitude, |w|;
- ``activation`` — activation-aware, |w_ij|·‖x_j‖₂ with ‖x_j‖₂ the norm of input channel j over every token of
  the calibration batches but their padding (OWL's outlier score, Wanda's pruning score). Bound here, the norms
  come from one pass of the dense model; methods that calibrate layer by layer
  (:mod:`.calibration`) compute them per decoder layer instead, after pruning the layers before it.

A score is bound to one model's target Linears by :class:`Scoring`, which computes what a score needs (the
activation norms) once, however many parts of a method use it.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.calibration import InputNorms, batch_tokens, to_device, token_rows

ScoreFn = Callable[[str, nn.Linear], torch.Tensor]  # (target name, Linear) -> non-negative scores, weight-shaped


class WeightScore:
    """A registered way to score a Linear's weights (higher = more important)."""

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    statistic: ClassVar[type | None] = None  # what layer-by-layer calibration collects of each target's inputs

    def bind(self, model: nn.Module, targets: Mapping[str, nn.Linear],
             calibration: Iterable[Mapping] | None) -> ScoreFn:
        raise NotImplementedError

    def from_statistics(self, stats: Mapping[str, object]) -> ScoreFn:
        """The score of targets whose input ``statistic`` s were collected layer by layer."""
        raise NotImplementedError


class Magnitude(WeightScore):
    name = "weight"

    def bind(self, model, targets, calibration) -> ScoreFn:
        return weight_score


class ActivationAware(WeightScore):
    name = "activation"
    needs_calibration = True
    statistic = InputNorms

    def bind(self, model, targets, calibration) -> ScoreFn:
        if calibration is None:
            raise HfpruneError("score='activation' needs calibration batches (calibration=...)")
        return activation_score(activation_norms(model, targets, calibration))

    def from_statistics(self, stats) -> ScoreFn:
        return activation_score({name: stat.norms() for name, stat in stats.items()})


SCORES: dict[str, WeightScore] = {score.name: score for score in (Magnitude(), ActivationAware())}


class Scoring:
    """Scores bound to one model's targets; each score is bound once (calibration data is read once)."""

    def __init__(self, model: nn.Module, targets: Mapping[str, nn.Linear], calibration: Iterable[Mapping] | None):
        self.model, self.targets, self.calibration = model, targets, calibration
        self._bound: dict[str, ScoreFn] = {}

    def __call__(self, score: WeightScore) -> ScoreFn:
        if score.name not in self._bound:
            self._bound[score.name] = score.bind(self.model, self.targets, self.calibration)
        return self._bound[score.name]


def weight_score(name: str, linear: nn.Linear) -> torch.Tensor:
    """|w| in float32."""
    return linear.weight.detach().float().abs()


def activation_score(norms: Mapping[str, torch.Tensor]) -> ScoreFn:
    """OWL's score |w_ij|·‖x_j‖₂, with ‖x_j‖₂ the input-channel norms of :func:`activation_norms`."""
    def score(name: str, linear: nn.Linear) -> torch.Tensor:
        weight = linear.weight.detach()
        return weight.float().abs() * norms[name].to(weight.device)[None, :]
    return score


@torch.no_grad()
def activation_norms(model: nn.Module, linears: Mapping[str, nn.Linear],
                     calibration: Iterable[Mapping]) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ per input channel j of each Linear, over every position of the calibration batches (model input
    dicts) but their padding, collected by forward pre-hooks in eval mode in one pass of the dense model."""
    sums = {name: InputNorms(linear) for name, linear in linears.items()}
    reached: set[str] = set()
    tokens: list[torch.Tensor | None] = [None]

    def hook(name: str):
        def accumulate(module, args):
            sums[name].add(token_rows(args[0].detach(), tokens[0]))
            reached.add(name)
        return accumulate

    handles = [linear.register_forward_pre_hook(hook(name)) for name, linear in linears.items()]
    device, was_training = next(model.parameters()).device, model.training
    batches = 0
    try:
        model.eval()
        for batch in calibration:
            batch = to_device(batch, device)
            tokens[0] = batch_tokens(batch)
            model(**batch)
            batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not batches:
        raise HfpruneError("calibration data is empty: score='activation' needs at least one batch of model inputs")
    unreached = [name for name in linears if name not in reached]
    if unreached:
        raise HfpruneError(f"the calibration batches never reached {unreached[:3]}; give inputs that run every "
                           "target Linear (e.g. pixel_values for vision targets)")
    return {name: sums[name].norms() for name in linears}
