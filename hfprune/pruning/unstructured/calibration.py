"""Calibration statistics of the target Linears' inputs, and sequential (layer-by-layer) pruning.

Sequential pruning runs as the Wanda and SparseGPT reference code does: the calibration batches go through the
model once, up to the blocks the targets lie in (the ``nn.ModuleList`` of decoder layers, found structurally),
capturing the first block's inputs — the hidden states after the embeddings (for a VLM, with the image features
merged in) — and the arguments the model passes *each* block (attention masks, position embeddings, …; they may
differ per block, as Gemma's sliding and global layers' do). In that pass the first block runs as it is and the
later ones are stood in for (they return their input hidden states), so it costs one block, not the model. The
blocks then run one at a time on those hidden states: for a block with targets, its Linears' input statistics are
collected by hooks while the block runs as it is, the block is pruned, and its outputs *with the pruned weights*
become the next block's inputs. Only one block's statistics are in memory at a time.

Where the blocks' weights are between uses is a :class:`Residency`: by default the whole model stays where it is;
:mod:`.offload` keeps it on the CPU or on disk and brings one block at a time to the device
(:func:`blocks_resident`).

Statistics leave out padding: positions where the batch's ``attention_mask`` is 0, for inputs laid out like
the batch's tokens (batch × sequence × features).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.models.structure import block_of


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
    """The ``nn.ModuleList`` of blocks (decoder layers) at ``path`` that the targets lie in."""

    path: str
    layers: nn.ModuleList

    def index_of(self, name: str) -> int:
        """The block a module ``name`` inside the stack lies in."""
        return int(name[len(self.path) + 1:].split(".", 1)[0])

    def relative(self, name: str) -> str:
        """A module's name inside its block (``model.language_model.layers.3.mlp.fc1`` → ``mlp.fc1``)."""
        return name[len(self.path) + 1:].split(".", 1)[1]


def decoder_stack(model: nn.Module, names: Iterable[str]) -> DecoderStack:
    """The one list of blocks (the outermost ``nn.ModuleList`` above each module) that holds every target in
    ``names``."""
    names = list(names)
    found = {name: block_of(model, name) for name in names}
    outside = [name for name, block in found.items() if block is None]
    if outside:
        raise HfpruneError(f"layer-by-layer calibration prunes Linears inside blocks (items of an nn.ModuleList of "
                           f"decoder layers); '{outside[0]}' is in none: leave it out of the targets")
    paths = list(dict.fromkeys(path for path, _ in found.values()))
    if len(paths) > 1:
        raise HfpruneError(f"layer-by-layer calibration runs one stack of decoder layers, but the targets lie in "
                           f"{', '.join(paths)}; target one of them (e.g. the language model's)")
    return DecoderStack(paths[0], model.get_submodule(paths[0]))


class Residency:
    """Where the blocks' weights are while layer-by-layer calibration runs. This one keeps the whole model where it
    is; :mod:`.offload` holds it on the CPU or on disk and brings one block (a name, e.g. ``model.layers.3``) at a
    time to :attr:`device`, and the modules before the blocks only while the first block's inputs are captured."""

    device: torch.device | None = None  # where the calibration batches go [None: where the model's parameters are]

    def capturing(self, model: nn.Module, stack: DecoderStack) -> AbstractContextManager:
        """Around the pass that captures the first block's inputs (block 0 is loaded, the others are not)."""
        return nullcontext()

    def load(self, name: str, block: nn.Module) -> None:
        """Bring ``block`` to where it runs."""

    def masked(self, name: str, block: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The block's weights with ``masks`` (by parameter name inside the block) applied, to compute its outputs
        with: masked copies (the model's own weights stay as they are), or None when masked in place."""
        return {parameter: block.get_parameter(parameter) * mask.to(block.get_parameter(parameter).device)
                for parameter, mask in masks.items()}

    def release(self, name: str, block: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Done with ``block`` (pruned by ``masks``, by module name; SparseGPT's updates written into it); returns
        the masks to keep."""
        return masks

    def group_scores(self, profile, groups: Mapping[str, list[str]], targets: Mapping[str, nn.Linear], scoring,
                     progress: bool = False) -> dict[str, float]:
        """``profile.group_score`` (a per-decoder-layer allocation's, :mod:`.allocation`) of every group of
        ``targets``, with the weights where they are."""
        return {group: profile.group_score([(name, targets[name]) for name in names], scoring)
                for group, names in tqdm(groups.items(), desc=f"{type(profile).__name__} scores", leave=False,
                                         disable=not progress)}


_RESIDENCY: ContextVar[Residency] = ContextVar("hfprune_residency", default=Residency())


def current_residency() -> Residency:
    """The :class:`Residency` in force (:func:`blocks_resident`), by default the whole model where it is."""
    return _RESIDENCY.get()


@contextmanager
def blocks_resident(residency: Residency) -> Iterator[Residency]:
    """Layer-by-layer calibration inside the block keeps the blocks' weights as ``residency`` says."""
    token = _RESIDENCY.set(residency)
    try:
        yield residency
    finally:
        _RESIDENCY.reset(token)


class _Captured(Exception):
    """Stops the model's forward once every needed block's inputs are captured."""


@dataclass
class _BatchInputs:
    hidden: torch.Tensor  # the hidden states of the block to run next
    calls: list[tuple[tuple, dict]]  # per block: the other positional arguments and the keyword arguments
    tokens: torch.Tensor | None


def _split_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    kwargs = dict(kwargs)
    hidden, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
    return hidden, tuple(args), kwargs


def _output_like(template, hidden: torch.Tensor):
    """A block's output as ``template`` (the first block's) is laid out, with ``hidden`` as its hidden states; None
    when the layout is not a tensor, tuple or list."""
    if isinstance(template, torch.Tensor):
        return hidden
    if isinstance(template, (tuple, list)) and template:
        return type(template)((hidden, *template[1:]))
    return None


class _StandIns:
    """While active, blocks 1..``last`` record their arguments and return their input hidden states (laid out as
    block 0's output) instead of computing; block ``last`` (or block 0 when ``last`` is 0) stops the forward."""

    def __init__(self, layers: nn.ModuleList, last: int):
        self.layers, self.last = layers, last
        self.first: tuple[torch.Tensor, tuple, dict] | None = None
        self.calls: list[tuple[tuple, dict]] = []
        self.template = None
        self._saved: list[tuple[nn.Module, object]] = []
        self._handles = []

    def start(self) -> None:
        self.first, self.calls, self.template = None, [], None

    def _first_inputs(self, module, args, kwargs):
        self.first = _split_call(args, kwargs)
        self.calls.append(self.first[1:])
        if self.last == 0:
            raise _Captured

    def _first_output(self, module, args, kwargs, output):
        self.template = output

    def _stand_in(self, index: int, forward):
        def call(*args, **kwargs):
            hidden, rest, keywords = _split_call(args, kwargs)
            self.calls.append((rest, keywords))
            if index == self.last:
                raise _Captured
            output = _output_like(self.template, hidden)
            return forward(*args, **kwargs) if output is None else output
        return call

    def __enter__(self) -> "_StandIns":
        first = self.layers[0]
        self._handles = [first.register_forward_pre_hook(self._first_inputs, with_kwargs=True),
                         first.register_forward_hook(self._first_output, with_kwargs=True)]
        for index in range(1, self.last + 1):
            layer = self.layers[index]
            self._saved.append((layer, layer.__dict__.get("forward")))
            layer.forward = self._stand_in(index, layer.forward)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for layer, own in self._saved:
            if own is None:
                del layer.forward
            else:
                layer.forward = own
        self._saved = []


class LayerwiseCalibration:
    """The calibration batches as inputs of one block after another, up to block ``last``."""

    def __init__(self, model: nn.Module, stack: DecoderStack, calibration: Iterable[Mapping], last: int | None = None,
                 device: torch.device | None = None):
        last = len(stack.layers) - 1 if last is None else last
        self.inputs = self._capture(model, stack.layers, last, calibration, device or next(model.parameters()).device)
        self._tokens: torch.Tensor | None = None

    @staticmethod
    def _capture(model: nn.Module, layers: nn.ModuleList, last: int, calibration: Iterable[Mapping],
                 device: torch.device) -> list[_BatchInputs]:
        captured: list[_BatchInputs] = []
        extra = {"use_cache": False} if isinstance(model, PreTrainedModel) else {}  # no KV cache grows on replay
        with _StandIns(layers, last) as stand_ins:
            for batch in calibration:
                batch = to_device(batch, device)
                stand_ins.start()
                try:
                    model(**batch, **extra)
                except _Captured:
                    captured.append(_BatchInputs(stand_ins.first[0], stand_ins.calls, batch_tokens(batch)))
                    continue
                raise HfpruneError("a calibration batch ran through the model without reaching the blocks of the "
                                   "targets; give inputs that run them (e.g. input_ids)")
        if not captured:
            raise HfpruneError("calibration data is empty: layer-by-layer calibration needs at least one batch of "
                               "model inputs")
        return captured

    def _run(self, index: int, layer: nn.Module, inputs: _BatchInputs, weights: Mapping[str, torch.Tensor] | None):
        self._tokens = inputs.tokens
        args, kwargs = inputs.calls[index]
        arguments = (inputs.hidden, *args)
        if weights:
            output = torch.func.functional_call(layer, dict(weights), arguments, kwargs, strict=False)
        else:
            output = layer(*arguments, **kwargs)
        return output[0] if isinstance(output, (tuple, list)) else output

    def collect(self, index: int, layer: nn.Module, linears: Mapping[str, nn.Linear], statistic: Statistic) -> dict:
        """Run block ``index`` as it is on every batch, with a ``statistic`` of each Linear's inputs accumulated."""
        stats = {name: statistic(linear) for name, linear in linears.items()}

        def hook(name: str):
            def add(module, args):
                stats[name].add(token_rows(args[0].detach(), self._tokens))
            return add

        handles = [linear.register_forward_pre_hook(hook(name)) for name, linear in linears.items()]
        try:
            for inputs in self.inputs:
                self._run(index, layer, inputs, None)
        finally:
            for handle in handles:
                handle.remove()
        return stats

    def advance(self, index: int, layer: nn.Module, weights: Mapping[str, torch.Tensor] | None = None) -> None:
        """Replace every batch's hidden states by block ``index``'s outputs, run with ``weights`` (parameter name
        inside the block → tensor) in place of its own where given."""
        for inputs in self.inputs:
            inputs.hidden = self._run(index, layer, inputs, weights)


PruneLayer = Callable[[dict[str, nn.Linear], dict], dict[str, torch.Tensor]]


@torch.no_grad()
def prune_layer_by_layer(model: nn.Module, linears: Mapping[str, nn.Linear], calibration: Iterable[Mapping],
                         statistic: Statistic, prune: PruneLayer, progress: bool = False) -> dict[str, torch.Tensor]:
    """Masks (by module name, True = kept) of every target Linear, block (decoder layer) after block.

    ``prune(targets, stats)`` gets one block's targets and the ``statistic`` of their inputs (produced by the
    blocks pruned before it) and returns their masks (none: the block stays dense); weights it writes into the model
    (SparseGPT's updates) are what the later blocks see. The model's other weights are not modified. The blocks'
    weights are where the active :class:`Residency` keeps them (:func:`blocks_resident`; by default, where they are).
    """
    stack = decoder_stack(model, linears)
    residency = current_residency()
    by_layer: dict[int, list[str]] = {}
    for name in linears:
        by_layer.setdefault(stack.index_of(name), []).append(name)
    was_training = model.training
    model.eval()
    try:
        last = max(by_layer)
        residency.load(f"{stack.path}.0", stack.layers[0])
        with residency.capturing(model, stack):
            calibrated = LayerwiseCalibration(model, stack, calibration, last, residency.device)
        masks: dict[str, torch.Tensor] = {}
        for index in tqdm(range(last + 1), desc="decoder layers", leave=False, disable=not progress):
            layer, names, block = stack.layers[index], by_layer.get(index, []), f"{stack.path}.{index}"
            if index:
                residency.load(block, layer)
            weights, layer_masks = None, {}
            if names:
                targets = {name: linears[name] for name in names}
                layer_masks = prune(targets, calibrated.collect(index, layer, targets, statistic))
                weights = residency.masked(block, layer, {f"{stack.relative(name)}.weight": mask
                                                          for name, mask in layer_masks.items()})
            if index < last:
                calibrated.advance(index, layer, weights)
            masks.update(residency.release(block, layer, layer_masks))
    finally:
        model.train(was_training)
    return masks
