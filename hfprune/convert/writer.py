"""The converted weights written: LM-head bias folded, vocabulary padded, dtype cast, safetensors shards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration

from hfprune.errors import HfpruneError
from hfprune.convert.keys import FINAL_NORM, ConversionPlan
from hfprune.convert.source import MergedWeights, SourceWeights

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MAX_SHARD_BYTES = 2 * 1024**3  # the writer holds one output shard in memory


def fold_lm_head_bias(weight: torch.Tensor, bias: torch.Tensor, norm_weight: torch.Tensor,
                      norm_bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``W'`` with ``W'·h == W·h + b`` for every output ``h`` of the final LayerNorm (γ, β).

    A LayerNorm's normalised vector sums to zero, so with ``u = 1/γ`` every ``h = γ·n + β`` has
    ``u·h = Σ βᵢ/γᵢ =: k``: then ``b = b (u·h) / k`` and ``W' = W + (b/k) uᵀ``. Checked on random inputs in
    ``dtype``: HfpruneError when rounding would make the fold less exact than the unfolded model.
    """
    if not bool(bias.any()):
        return weight.to(dtype)
    gamma, beta = norm_weight.double(), norm_bias.double()
    if bool((gamma.abs() < 1e-6).any()):
        raise HfpruneError("cannot fold lm_head.bias into lm_head.weight: the final LayerNorm has zero weights")
    u = 1 / gamma
    k = float((beta * u).sum())
    scale = float((beta * u).abs().sum())
    if abs(k) < 1e-3 * max(scale, 1e-12):
        raise HfpruneError("cannot fold lm_head.bias into lm_head.weight: the final LayerNorm's Σβ/γ is ~0")
    folded = weight.to(torch.float32, copy=True).addr_((bias.double() / k).float(), u.float())
    _check_fold(weight, bias, folded, gamma, beta, dtype)
    return folded.to(dtype)


def _check_fold(weight, bias, folded, gamma, beta, dtype, samples: int = 8, rows: int = 512) -> None:
    """The folded rows with the largest bias give the biased logits, no worse than plain ``dtype`` rounding."""
    generator = torch.Generator().manual_seed(0)
    normed = torch.nn.functional.layer_norm(torch.randn(samples, gamma.numel(), generator=generator,
                                                        dtype=torch.float64), (gamma.numel(),))
    hidden = (normed * gamma + beta).float()
    top = bias.float().abs().topk(min(rows, bias.numel())).indices
    exact = hidden @ weight[top].float().T + bias[top].float()
    plain = hidden @ weight[top].to(dtype).float().T + bias[top].to(dtype).float()
    got = hidden @ folded[top].to(dtype).float().T
    allowed = 4 * (plain - exact).abs().max() + 1e-4 * exact.abs().max()
    if (got - exact).abs().max() > allowed:
        advice = "" if dtype == torch.float32 else "; convert with --dtype float32"
        raise HfpruneError(f"cannot fold lm_head.bias into lm_head.weight in {dtype}: the fold loses precision"
                           f"{advice}")


def _pad_vocab(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Vocabulary rows grown to ``rows`` with the mean row (new tokens start as an average token)."""
    if tensor.shape[0] >= rows:
        return tensor
    extra = tensor.float().mean(0, keepdim=True).expand(rows - tensor.shape[0], -1).to(tensor.dtype)
    return torch.cat([tensor, extra])


class ShardWriter:
    """Safetensors shards of at most ``max_bytes`` each, named and indexed as ``save_pretrained`` names them."""

    def __init__(self, directory: Path, max_bytes: int = MAX_SHARD_BYTES):
        self.directory, self.max_bytes = directory, max_bytes
        self.buffer: dict[str, torch.Tensor] = {}
        self.buffer_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0
        self.elements_by_dtype: Counter = Counter()

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; write the shard first when it would overflow."""
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffer_bytes + size > self.max_bytes:
            self._flush()
        self.buffer[name] = tensor.contiguous()
        self.buffer_bytes += size
        self.total_bytes += size
        self.elements_by_dtype[tensor.dtype] += tensor.numel()

    @property
    def main_dtype(self) -> torch.dtype:
        """The dtype most of the written elements have (the checkpoint's ``dtype``)."""
        return self.elements_by_dtype.most_common(1)[0][0]

    def _part(self, number: int) -> Path:
        return self.directory / f"part-{number}.safetensors"

    def _flush(self) -> None:
        from safetensors.torch import save_file

        save_file(self.buffer, self._part(len(self.shards)), metadata={"format": "pt"})
        self.shards.append(list(self.buffer))
        self.buffer, self.buffer_bytes = {}, 0

    def close(self) -> None:
        """Write the last shard, give the shards their final names and write the index (several shards)."""
        if self.buffer:
            self._flush()
        count = len(self.shards)
        if count == 1:
            self._part(0).rename(self.directory / "model.safetensors")
            return
        weight_map = {}
        for number, names in enumerate(self.shards):
            final = f"model-{number + 1:05d}-of-{count:05d}.safetensors"
            self._part(number).rename(self.directory / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def serialized_names(model: LlavaForConditionalGeneration) -> dict[str, str]:
    """Parameter name → the name ``save_pretrained`` writes it under (its own names where it cannot tell)."""
    parameters = dict(model.named_parameters())
    try:
        from transformers.core_model_loading import revert_weight_conversion

        reverted = revert_weight_conversion(model, dict(parameters))
    except Exception:  # a transformers without this (private) helper: its own names load as well
        return {name: name for name in parameters}
    by_identity = {id(tensor): name for name, tensor in parameters.items()}
    names = {by_identity[id(tensor)]: saved for saved, tensor in reverted.items() if id(tensor) in by_identity}
    return names if len(names) == len(parameters) else {name: name for name in parameters}


def resolve_dtype(dtype: str) -> torch.dtype | None:
    """None for ``auto`` (as stored), else the torch dtype."""
    if dtype == "auto":
        return None
    if dtype not in DTYPES:
        raise HfpruneError(f"unknown dtype '{dtype}'; choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _converted(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A private copy (never a view into a memory-mapped file), floating tensors cast to ``dtype``."""
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(dtype=dtype, copy=True)
    return tensor.clone()


def write_weights(weights: SourceWeights | MergedWeights, plan: ConversionPlan, layout: str,
                  model: LlavaForConditionalGeneration, out: Path, dtype: torch.dtype | None, progress: bool,
                  max_shard_bytes: int) -> torch.dtype:
    """Stream the source tensors into ``out`` under their new names; return the dtype most weights have."""
    from tqdm.auto import tqdm

    saved_as = serialized_names(model)
    vocab_rows = model.config.text_config.vocab_size
    writer = ShardWriter(out, max_shard_bytes)
    with tqdm(total=len(plan.renames), desc="converting", unit="tensor", disable=not progress) as bar:
        for key, tensor in weights.tensors(plan.renames):
            target = plan.renames[key]
            if target == "lm_head.weight" and plan.lm_head_bias is not None:
                norm = FINAL_NORM[layout]
                tensor = fold_lm_head_bias(tensor, weights.tensor(plan.lm_head_bias), weights.tensor(f"{norm}.weight"),
                                           weights.tensor(f"{norm}.bias"), dtype or tensor.dtype)
            tensor = _converted(tensor, dtype)
            if target in ("lm_head.weight", "model.language_model.embed_tokens.weight"):
                tensor = _pad_vocab(tensor, vocab_rows)
            writer.add(saved_as[target], tensor)
            bar.update()
    writer.close()
    return writer.main_dtype
