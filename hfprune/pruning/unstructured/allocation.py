"""Per-decoder-layer scores of the non-uniform methods and how they become per-layer sparsities.

- ONP (after OWL, Yin et al. 2024): a layer's outlier ratio D_l = share of its target weights whose score
  exceeds M × the layer's mean score; score = |w|, or OWL's |w_ij|·‖x_j‖₂ with activation norms from
  calibration batches.
- PNP (our reading of the study): a matrix's PCA share = the number of principal components needed to explain
  ``variance`` of the variance of its rows (columns centred, singular values in float32) / min(out, in); a
  layer's score is the size-weighted mean share of its matrices.

Both map a higher score to a lower sparsity with :func:`spread_ratios`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from hfprune.errors import HfpruneError

Score = Callable[[str, nn.Linear], torch.Tensor]


def spread_ratios(scores: Mapping[str, float], sizes: Mapping[str, int], sparsity: float,
                  lam: float) -> dict[str, float]:
    """Per-group sparsities: scores mapped linearly by min-max onto [S−λ, S+λ] (highest score → S−λ), shifted
    so that their size-weighted mean is S (as OWL centres its ratios), then clipped to [0, 1].

    Equal scores give every group S. The shift keeps the spread (max − min = 2λ) but can move the ends
    out of [S−λ, S+λ] when the scores are skewed; clipping (only when S is within 2λ of 0 or 1) moves the mean.
    """
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {group: sparsity for group in scores}
    ratios = {group: sparsity + lam - 2 * lam * (score - low) / (high - low) for group, score in scores.items()}
    total = sum(sizes[group] for group in ratios)
    shift = sparsity - sum(ratio * sizes[group] for group, ratio in ratios.items()) / total
    return {group: min(1.0, max(0.0, ratio + shift)) for group, ratio in ratios.items()}


def weight_score(name: str, linear: nn.Linear) -> torch.Tensor:
    """|w| in float32."""
    return linear.weight.detach().float().abs()


def activation_score(norms: Mapping[str, torch.Tensor]) -> Score:
    """OWL's score |w_ij|·‖x_j‖₂, with ‖x_j‖₂ the input-channel norms of :func:`activation_norms`."""
    def score(name: str, linear: nn.Linear) -> torch.Tensor:
        weight = linear.weight.detach()
        return weight.float().abs() * norms[name].to(weight.device)[None, :]
    return score


def outlier_ratio(layers: Iterable[tuple[str, nn.Linear]], score: Score, outlier_m: float) -> float:
    """D_l: the share of the layer's weights whose score exceeds ``outlier_m`` × the layer's mean score."""
    layers = list(layers)
    count = sum(linear.weight.numel() for _, linear in layers)
    mean = sum(float(score(name, linear).sum(dtype=torch.float64)) for name, linear in layers) / count
    above = sum(int(torch.count_nonzero(score(name, linear) > outlier_m * mean)) for name, linear in layers)
    return above / count


def pca_share(weight: torch.Tensor, variance: float) -> float:
    """Principal components needed to explain ``variance`` of the variance of ``weight``'s rows, / min(out, in)."""
    matrix = weight.detach().float()
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    explained = torch.linalg.svdvals(centred).double().square()
    total = float(explained.sum())
    if total == 0.0:
        return 0.0
    needed = int(torch.searchsorted(explained.cumsum(0) / total, torch.tensor(variance, dtype=torch.float64))) + 1
    return min(needed, explained.numel()) / min(matrix.shape)


def layer_pca_share(layers: Iterable[tuple[str, nn.Linear]], variance: float) -> float:
    """The size-weighted mean :func:`pca_share` of a layer's matrices."""
    weighted = [(pca_share(linear.weight, variance), linear.weight.numel()) for _, linear in layers]
    return sum(share * size for share, size in weighted) / sum(size for _, size in weighted)


def _to_device(batch: Mapping, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


@torch.no_grad()
def activation_norms(model: nn.Module, linears: Mapping[str, nn.Linear],
                     calibration: Iterable[Mapping]) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ per input channel j of each Linear, over every token of the calibration batches (model input
    dicts), collected by forward pre-hooks in eval mode."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def accumulate(module, args):
            inputs = args[0].detach().float()
            squares = inputs.reshape(-1, inputs.shape[-1]).square().sum(dim=0)
            sums[name] = sums[name] + squares if name in sums else squares
        return accumulate

    handles = [linear.register_forward_pre_hook(hook(name)) for name, linear in linears.items()]
    device, was_training = next(model.parameters()).device, model.training
    batches = 0
    try:
        model.eval()
        for batch in calibration:
            model(**_to_device(batch, device))
            batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not batches:
        raise HfpruneError("calibration data is empty: score='activation' needs at least one batch of model inputs")
    unreached = [name for name in linears if name not in sums]
    if unreached:
        raise HfpruneError(f"the calibration batches never reached {unreached[:3]}; give inputs that run every "
                           "target Linear (e.g. pixel_values for vision targets)")
    return {name: sums[name].sqrt() for name in linears}
