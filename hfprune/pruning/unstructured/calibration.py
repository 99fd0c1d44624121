"""Calibration statistics of the target Linears' inputs, and sequential (layer-by-layer) pruning.

Sequential pruning runs as the Wanda and SparseGPT reference code does: the calibration batches go through the
model once, up to the first layer of the decoder stack the targets lie in (``….layers.N``), where a forward
pre-hook captures that layer's inputs — the hidden states after the embeddings (for a LLaVA, with the image
features merged in) and every keyword argument the model passes it (attention mask, position embeddings, …) —
and stops the forward. The decoder layers then run one at a time on those hidden states: for a layer with
targets, its Linears' input statistics are collected by hooks while the layer runs as it is, the layer is
pruned, and its outputs *with the pruned weights* become the next layer's inputs. Only one decoder layer's
statistics are in memory at a time.

Statistics leave out padding: positions where the batch's ``attention_mask`` is 0, for inputs laid out like
the batch's tokens (batch × sequence × features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.targets import layer_group, layer_index


def to_device(batch: Mapping, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def reiterable(calibration: Iterable[Mapping] | None) -> Iterable[Mapping] | None:
    """Calibration batches that can be read more than once (a generator is read into a list)."""
    if calibration is not None and iter(calibration) is calibration:
        return list(calibration)
    return calibration


def token_rows(inputs: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    """A Linear's inputs as (positions, features), without the padding positions when ``inputs`` is laid out like
    the batch's ``tokens`` mask (batch × sequence)."""
    if tokens is not None and inputs.dim() == 3 and inputs.shape[:2] == tokens.shape:
        return inputs[tokens.to(inputs.device)]
    return inputs.reshape(-1, inputs.shape[-1])


def batch_tokens(batch: Mapping) -> torch.Tensor | None:
    """The non-padding positions of a batch of model inputs (its 2-D ``attention_mask``), or None."""
    mask = batch.get("attention_mask")
    return mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


class InputNorms:
    """Σ x_j² of every input channel j of a Linear over the calibration positions; :meth:`norms` = ‖x_j‖₂."""

    def __init__(self, linear: nn.Linear):
        self.squares = torch.zeros(linear.in_features, dtype=torch.float32, device=linear.weight.device)

    def add(self, rows: torch.Tensor) -> None:
        self.squares += rows.float().square().sum(dim=0)

    def norms(self) -> torch.Tensor:
        return self.squares.sqrt()


Statistic = Callable[[nn.Linear], object]  # builds an accumulator with .add(rows: positions × features)


@dataclass(frozen=True)
class DecoderStack:
    """The ``nn.ModuleList`` of decoder layers at ``path`` that the targets lie in."""

    path: str
    layers: nn.ModuleList

    def relative(self, name: str) -> str:
        """A module's name inside its decoder layer (``model.language_model.layers.3.mlp.fc1`` → ``mlp.fc1``)."""
        return name[len(layer_group(name)) + 1:]


def decoder_stack(model: nn.Module, names: Iterable[str]) -> DecoderStack:
    """The one stack of decoder layers (``….layers``) that holds every target module in ``names``."""
    names = list(names)
    outside = [name for name in names if layer_index(name) is None]
    if outside:
        raise HfpruneError(f"layer-by-layer calibration prunes Linears inside decoder layers (…layers.N.…); "
                           f"'{outside[0]}' is in none: leave it out of the targets")
    paths = list(dict.fromkeys(layer_group(name).rsplit(".", 1)[0] for name in names))
    if len(paths) > 1:
        raise HfpruneError(f"layer-by-layer calibration runs one stack of decoder layers, but the targets lie in "
                           f"{', '.join(paths)}; target one of them (e.g. the language model's)")
    layers = model.get_submodule(paths[0])
    if not isinstance(layers, nn.ModuleList):
        raise HfpruneError(f"'{paths[0]}' is a {type(layers).__name__}, not the list of decoder layers "
                           "layer-by-layer calibration runs")
    return DecoderStack(paths[0], layers)


class _Captured(Exception):
    """Stops the model's forward once the first decoder layer's inputs are captured."""


@dataclass
class _LayerInputs:
    hidden: torch.Tensor  # the decoder layer's hidden states
    args: tuple  # its other positional arguments
    kwargs: dict
    tokens: torch.Tensor | None


class LayerwiseCalibration:
    """The calibration batches as inputs of one decoder layer after another."""

    def __init__(self, model: nn.Module, stack: DecoderStack, calibration: Iterable[Mapping]):
        self.inputs = self._capture(model, stack.layers[0], calibration)
        self._tokens: torch.Tensor | None = None

    @staticmethod
    def _capture(model: nn.Module, first: nn.Module, calibration: Iterable[Mapping]) -> list[_LayerInputs]:
        captured: list[_LayerInputs] = []
        tokens: list[torch.Tensor | None] = [None]

        def catch(module, args, kwargs):
            kwargs = dict(kwargs)
            hidden, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
            captured.append(_LayerInputs(hidden, tuple(args), kwargs, tokens[0]))
            raise _Captured

        device = next(model.parameters()).device
        extra = {"use_cache": False} if isinstance(model, PreTrainedModel) else {}  # no KV cache grows on replay
        handle = first.register_forward_pre_hook(catch, with_kwargs=True)
        try:
            for batch in calibration:
                batch = to_device(batch, device)
                tokens[0] = batch_tokens(batch)
                try:
                    model(**batch, **extra)
                except _Captured:
                    continue
                raise HfpruneError("a calibration batch ran through the model without reaching the first decoder "
                                   "layer of the targets; give inputs that run it (e.g. input_ids)")
        finally:
            handle.remove()
        if not captured:
            raise HfpruneError("calibration data is empty: layer-by-layer calibration needs at least one batch of "
                               "model inputs")
        return captured

    def _run(self, layer: nn.Module, inputs: _LayerInputs, weights: Mapping[str, torch.Tensor] | None):
        self._tokens = inputs.tokens
        arguments = (inputs.hidden, *inputs.args)
        if weights:
            output = torch.func.functional_call(layer, dict(weights), arguments, inputs.kwargs, strict=False)
        else:
            output = layer(*arguments, **inputs.kwargs)
        return output[0] if isinstance(output, (tuple, list)) else output

    def collect(self, layer: nn.Module, linears: Mapping[str, nn.Linear], statistic: Statistic) -> dict:
        """Run ``layer`` as it is on every batch, with a ``statistic`` of each Linear's inputs accumulated."""
        stats = {name: statistic(linear) for name, linear in linears.items()}

        def hook(name: str):
            def add(module, args):
                stats[name].add(token_rows(args[0].detach(), self._tokens))
            return add

        handles = [linear.register_forward_pre_hook(hook(name)) for name, linear in linears.items()]
        try:
            for inputs in self.inputs:
                self._run(layer, inputs, None)
        finally:
            for handle in handles:
                handle.remove()
        return stats

    def advance(self, layer: nn.Module, weights: Mapping[str, torch.Tensor] | None = None) -> None:
        """Replace every batch's hidden states by ``layer``'s outputs, run with ``weights`` (parameter name inside
        the layer → tensor) in place of its own where given."""
        for inputs in self.inputs:
            inputs.hidden = self._run(layer, inputs, weights)


PruneLayer = Callable[[dict[str, nn.Linear], dict], dict[str, torch.Tensor]]


@torch.no_grad()
def prune_layer_by_layer(model: nn.Module, linears: Mapping[str, nn.Linear], calibration: Iterable[Mapping],
                         statistic: Statistic, prune: PruneLayer, progress: bool = False) -> dict[str, torch.Tensor]:
    """Masks (by module name, True = kept) of every target Linear, decoder layer after decoder layer.

    ``prune(targets, stats)`` gets one decoder layer's targets and the ``statistic`` of their inputs (produced by
    the layers pruned before it) and returns their masks; weights it writes into the model (SparseGPT's
    updates) are what the later layers see. The model's other weights are not modified.
    """
    stack = decoder_stack(model, linears)
    by_layer: dict[int, list[str]] = {}
    for name in linears:
        by_layer.setdefault(layer_index(name), []).append(name)
    was_training = model.training
    model.eval()
    try:
        calibrated = LayerwiseCalibration(model, stack, calibration)
        masks: dict[str, torch.Tensor] = {}
        last = max(by_layer)
        for index in tqdm(range(last + 1), desc="decoder layers", leave=False, disable=not progress):
            layer, names = stack.layers[index], by_layer.get(index, [])
            weights = None
            if names:
                targets = {name: linears[name] for name in names}
                layer_masks = prune(targets, calibrated.collect(layer, targets, statistic))
                masks.update(layer_masks)
                weights = {f"{stack.relative(name)}.weight":
                           linear.weight * layer_masks[name].to(linear.weight.device)
                           for name, linear in targets.items()}
            if index < last:
                calibrated.advance(layer, weights)
    finally:
        model.train(was_training)
    return masks
