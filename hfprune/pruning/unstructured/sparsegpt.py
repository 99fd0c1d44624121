"""SparseGPT (Frantar & Alistarh, 2023): prune each Linear and update its kept weights to reconstruct its output.

Per target Linear W (rows × columns) with calibration inputs X (columns × positions):

- H = 2XXᵀ/n over the n calibration positions, plus λI with λ = ``dampening`` × mean(diag H); input channels
  that never fire (H_jj = 0) get H_jj = 1 (their weights are kept or pruned like any other, never changed);
- U = the upper Cholesky factor of H⁻¹; columns are processed left to right in blocks of ``block_size``;
- the mask is chosen adaptively per block: the weights with the lowest w²/U_jj² over the whole block go (so
  many that the Linear's count, round-half-up(S·rows·columns), is met exactly block by block); with an N:M
  pattern, the N lowest of every M consecutive columns of each row instead, chosen when the first column of the
  group is reached;
- column j: the pruned weights become 0, the error e = (w_j − q_j)/U_jj is spread over the block's later
  columns (W[:, j:] −= e·U[j, j:]), and after the block, lazily, over every later column
  (W[:, end:] −= E·U[block, end:]).

Decoder layers are processed in order (:func:`~.calibration.prune_layer_by_layer`): each Linear's H comes from
the inputs the already-pruned and updated layers before it produce; one decoder layer's Hessians are held at a
time, each freed once its Linear is pruned. The updated weights are written into the model.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured.calibration import prune_layer_by_layer, reiterable
from hfprune.pruning.unstructured.granularity import Granularity, granularity_text, keep_per_row, parse_granularity
from hfprune.pruning.unstructured.methods import UnstructuredMethod, UnstructuredResult
from hfprune.pruning.unstructured.targets import select_targets


class InputHessian:
    """Σ x xᵀ of a Linear's inputs over the calibration positions; :meth:`hessian` = 2/n Σ x xᵀ."""

    def __init__(self, linear: nn.Linear):
        columns = linear.in_features
        self.sum = torch.zeros(columns, columns, dtype=torch.float32, device=linear.weight.device)
        self.positions = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.float()
        self.sum.addmm_(rows.T, rows)
        self.positions += rows.shape[0]

    def hessian(self) -> torch.Tensor:
        return self.sum.mul_(2 / max(self.positions, 1))


def inverse_hessian_factor(hessian: torch.Tensor, dampening: float, name: str = "a Linear") -> torch.Tensor:
    """The upper Cholesky factor of (H + λI)⁻¹, λ = ``dampening`` × mean(diag H); dead channels get H_jj = 1.
    Computed in place: ``hessian`` becomes the factor (no second columns × columns matrix is made)."""
    diagonal = hessian.diagonal()
    diagonal[diagonal == 0] = 1
    diagonal += dampening * diagonal.mean()
    try:
        torch.linalg.cholesky(hessian, out=hessian)
        torch.cholesky_inverse(hessian, out=hessian)
        return torch.linalg.cholesky(hessian, upper=True, out=hessian)
    except torch.linalg.LinAlgError:
        raise HfpruneError(f"sparsegpt: the Hessian of {name} is not positive definite after dampening "
                           f"{dampening:g}; raise dampening (e.g. 0.1) or give more calibration samples") from None


def _saliency(block: torch.Tensor, factor_diagonal: torch.Tensor) -> torch.Tensor:
    return block.square() / factor_diagonal.square()[None, :]


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, pattern: Granularity | None = None,
                    block_size: int = 128, dampening: float = 0.01,
                    name: str = "a Linear") -> tuple[torch.Tensor, torch.Tensor]:
    """(updated weight in float32 with the pruned entries exactly 0, mask with True = kept), both on the weight's
    device. ``hessian`` (2XXᵀ/n, columns × columns) is overwritten; ``pattern`` an N:M :class:`Granularity`."""
    W = weight.detach().float().clone()
    rows, columns = W.shape
    if pattern is not None and columns % pattern.m:
        raise HfpruneError(f"pattern {pattern.pattern} needs a number of input features divisible by {pattern.m}; "
                           f"{name} has {columns}")
    U = inverse_hessian_factor(hessian, dampening, name)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block, block_factor = W[:, start:end].clone(), U[start:end, start:end]
        diagonal = block_factor.diagonal()
        block_pruned = pruned[:, start:end]
        if pattern is None:  # this block's share of the Linear's exact count
            count = num_pruned(rows * end, sparsity) - num_pruned(rows * start, sparsity)
            flat = keep_per_row(_saliency(block, diagonal).reshape(1, -1), count).reshape(block.shape)
            block_pruned.copy_(~flat)
        errors = torch.zeros_like(block)
        for column in range(end - start):
            if pattern is not None and column % pattern.m == 0:
                group = slice(column, column + pattern.m)
                block_pruned[:, group] = ~keep_per_row(_saliency(block[:, group], diagonal[group]), pattern.n)
            w = block[:, column]
            q = torch.where(block_pruned[:, column], torch.zeros_like(w), w)
            error = (w - q) / block_factor[column, column]
            block[:, column:] -= error[:, None] * block_factor[column, column:][None, :]
            block[:, column] = q
            errors[:, column] = error
        W[:, start:end] = block
        W[:, end:] -= errors @ U[start:end, end:]
    return W, ~pruned


def _block_or_pattern(value: str) -> str:
    if value != "block" and parse_granularity(value).pattern is None:
        raise ValueError(f"sparsegpt's granularity is 'block' or an N:M pattern such as '2:4', got {value!r}")
    return value


class SparseGPT(UnstructuredMethod):
    """SparseGPT: OBS pruning with weight reconstruction, decoder layer after decoder layer, every target Linear at
    the same sparsity."""

    name: Literal["sparsegpt"] = "sparsegpt"
    granularity: Annotated[str, BeforeValidator(granularity_text), AfterValidator(_block_or_pattern)] = Field(
        "block", description="'block': each column block's mask chosen adaptively by w^2 / [H^-1]_jj^2 over the "
                             "whole block; or an N:M pattern such as '2:4' (needs sparsity N/M)")
    block_size: int = Field(128, gt=0, description="columns pruned together before their errors are spread over "
                                                   "the later columns (lazy batch updates)")
    dampening: float = Field(0.01, gt=0, description="added to the Hessian's diagonal, as a share of its mean "
                                                     "diagonal")

    updates_weights: ClassVar[bool] = True

    @model_validator(mode="after")
    def _pattern_fits_blocks(self) -> "SparseGPT":
        nm = self._nm()
        if nm is not None and self.block_size % nm.m:
            raise ValueError(f"block_size {self.block_size} must be a multiple of the pattern's M ({nm.m})")
        return self

    def _nm(self) -> Granularity | None:
        return None if self.granularity == "block" else parse_granularity(self.granularity)

    @property
    def needs_calibration(self) -> bool:
        return True

    @property
    def pattern(self) -> str | None:
        nm = self._nm()
        return nm.pattern if nm is not None else None

    def sparsity_problem(self, sparsity: float) -> str | None:
        nm = self._nm()
        return nm.sparsity_problem(sparsity) if nm is not None else None

    @torch.no_grad()
    def masks(self, model, sparsity, *, targets=None, ignore=(), calibration=None, progress=False):
        """Masks that prune ``sparsity`` of every target Linear; the kept target weights are updated in the model."""
        linears = select_targets(model, targets, ignore)
        self.check_sparsity(sparsity)
        if calibration is None:
            raise HfpruneError("sparsegpt needs calibration batches (calibration=...)")
        nm = self._nm()

        def prune_layer(layer: dict[str, nn.Linear], stats: dict) -> dict[str, torch.Tensor]:
            masks = {}
            for name, linear in layer.items():
                weight, keep = sparsegpt_prune(linear.weight, stats.pop(name).hessian(), sparsity, nm,
                                               self.block_size, self.dampening, name)
                linear.weight.copy_(weight)
                masks[name] = keep.cpu()
            return masks

        chosen = prune_layer_by_layer(model, linears, reiterable(calibration), InputHessian, prune_layer, progress)
        return UnstructuredResult(self.name, float(sparsity), {f"{name}.weight": chosen[name] for name in linears},
                                  {name: float(sparsity) for name in linears}, {})
