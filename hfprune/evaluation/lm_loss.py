"""Causal-LM losses over supervised tokens: the training loss and the pruned train loss of a VLM (docs/studies.md §4)."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from hfprune.data.llava import IGNORE_INDEX
from hfprune.errors import HfpruneError
from hfprune.train.trainer import make_loader


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The training loss: HF's shifted cross-entropy, averaged over the batch's supervised tokens."""
    return model(**batch).loss


def supervised_token_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of the token cross-entropies, number of supervised tokens)`` of one batch, in float32.

    The logits at position ``t`` predict ``labels[t + 1]``; positions labelled −100 count for nothing. Only the
    supervised positions' logits are upcast, so a long batch with a large vocabulary stays small.
    """
    logits = model(**{name: value for name, value in batch.items() if name != "labels"}).logits
    targets = batch["labels"][:, 1:].to(logits.device)
    supervised = targets != IGNORE_INDEX
    token_logits = logits[:, :-1][supervised].float()
    loss_sum = torch.nn.functional.cross_entropy(token_logits, targets[supervised], reduction="sum")
    return loss_sum, supervised.sum()


@torch.no_grad()
def pruned_train_loss(model: torch.nn.Module, dataset, *, batch_size: int = 8, progress: bool = True,
                      device: torch.device | str | None = None,
                      sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Token-weighted mean cross-entropy over all supervised tokens of ``dataset`` (eval mode, no gradients).

    Returns ``{"loss", "tokens", "samples"}``. The mean is the sum of all token losses over the total number of
    supervised tokens, so it does not depend on ``batch_size``. Batches go to ``device`` (default: the model's).
    When each process holds a shard of the set, ``sum_across`` (a sum over the processes) combines their totals.
    """
    device = device or next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    tokens = torch.zeros((), dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
        for batch in tqdm(loader, desc="pruned train loss", leave=False, disable=not progress):
            batch_sum, batch_tokens = supervised_token_loss(model, _to_device(batch, device))
            loss_sum += batch_sum.double()
            tokens += batch_tokens
    finally:
        model.train(was_training)
    totals = torch.stack([loss_sum, tokens.double(), torch.tensor(float(len(dataset)), dtype=torch.float64,
                                                                   device=device)])
    if sum_across is not None:
        totals = sum_across(totals)
    loss_sum, tokens, samples = totals.tolist()
    if not tokens:
        raise HfpruneError(f"the {int(samples)} samples have no supervised (answer) token; check the data or "
                           "raise max_length")
    return {"loss": loss_sum / tokens, "tokens": int(tokens), "samples": int(samples)}


def _to_device(batch: dict, device) -> dict:
    return {name: value.to(device) for name, value in batch.items()}
