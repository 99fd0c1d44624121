"""Disconnected paths and effective sparsity of a pruned network (STUDY §5b, "Sparsest Models Elude Pruning").

A nonzero weight that lies on no input→output path of nonzero weights adds nothing to what the network computes
from its input; the *effective* nonzeros are those on such a path, and the effective sparsity counts only them.

Method (the path-count trick). On a float64 copy of the model, every Linear/Conv weight is replaced by its 0/1
support (``w != 0``), every bias by 0, every BatchNorm by the identity (weight 1, bias 0, running mean 0, running
variance 1 − eps, eval mode), max-pooling by average pooling over the same window, dropout off (eval). Fed an
all-ones input, every activation and every gradient of the summed output is then a sum of products of non-negative
terms, one term per path, so only whether a value is positive matters; to keep deep sparse networks from under- or
overflowing, every Linear/Conv output is reset to 0/1 (positive or not) on the way forward and its gradient to 0/1
on the way back (a per-layer positive rescaling, which changes no sign). Then:

- a weight lies on an input→output path iff ``∂ sum(output) / ∂w > 0`` (*effective*);
- a weight receives something from the input iff the unit it reads from is positive somewhere it reads it: the
  gradient of its own layer's summed output, taken with that layer's (recorded) input held fixed, is positive.
  A nonzero weight that receives nothing is *no path from input*: it only ever carries a constant that the biases
  make, removable once ``ReLU(bias)·w`` is folded into the next layer's bias;
- the other non-effective nonzero weights have *no path to output*: everything downstream of them is cut.

The trick needs positive-homogeneous layers (Linear, Conv, ReLU, BatchNorm, pooling, residual additions):
ReLU MLPs, conv chains and ResNets. Transformers (LayerNorm, softmax, GELU) are refused.

**Live biases** (:func:`live_biases`) count as the sparse-MLP study's reference code counts its ``Model NNZ``: it
masks the bias of every unit left without a nonzero outgoing weight and keeps the output layer's, then counts
nonzero parameters; so a bias counts when it is nonzero and its unit feeds a nonzero weight of the next layer (or
is an output). ``model_nonzeros`` = nonzero weights + live biases. Counted for chains of layers without
BatchNorm (MLPs, LeNet), where "the next layer" is clear; None for residual and BatchNorm networks.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hfprune.errors import HfpruneError

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
# modules that are not positive-homogeneous: the trick's "non-negative terms only" does not hold through them
REFUSED_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.MultiheadAttention, nn.GELU, nn.SiLU, nn.Tanh,
                   nn.Sigmoid, nn.Softmax, nn.LogSoftmax, nn.ELU, nn.LeakyReLU, nn.PReLU, nn.Hardswish, nn.Mish)
# the same kinds in transformers' own classes (GELUActivation, LlamaRMSNorm, ViTSelfAttention, ...)
REFUSED_NAME_PARTS = ("Attention", "LayerNorm", "RMSNorm", "GroupNorm", "GELU", "SiLU", "Swish", "Softmax", "Tanh",
                      "Sigmoid")


@dataclass
class LayerConnectivity:
    """One analysed weight: its counts of weights and of output units (rows, or conv filters)."""

    name: str
    total: int
    nonzero: int
    effective: int
    no_path_to_output: int
    no_path_from_input: int
    units: int
    dead_units: int  # output units with no effective incoming weight


@dataclass
class Connectivity:
    """Per-layer rows and totals of :func:`analyse`, with the boolean masks behind them (True = in the set)."""

    layers: list[LayerConnectivity]
    effective: dict[str, torch.Tensor] = field(repr=False)
    no_path_to_output: dict[str, torch.Tensor] = field(repr=False)
    no_path_from_input: dict[str, torch.Tensor] = field(repr=False)
    live_biases: int | None = None  # as the reference counts them (see the module docstring); None: not a chain

    @property
    def model_nonzeros(self) -> int | None:
        """Nonzero weights + live biases: the reference's ``Model NNZ`` (None where biases are not counted)."""
        return None if self.live_biases is None else self.nonzeros + self.live_biases

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def effective_nonzeros(self) -> int:
        return sum(layer.effective for layer in self.layers)

    @property
    def removable(self) -> int:
        """Nonzero weights on no input→output path (removing them changes nothing but constants)."""
        return self.nonzeros - self.effective_nonzeros

    @property
    def sparsity(self) -> float:
        return 1 - self.nonzeros / self.total if self.total else 0.0

    @property
    def effective_sparsity(self) -> float:
        return 1 - self.effective_nonzeros / self.total if self.total else 0.0

    def effective_masks(self) -> dict[str, torch.Tensor]:
        """Per analysed weight, True where the weight lies on an input→output path of nonzero weights."""
        return {name: mask.clone() for name, mask in self.effective.items()}

    def totals(self) -> dict[str, float | int]:
        return {"total": self.total, "nonzeros": self.nonzeros, "effective_nonzeros": self.effective_nonzeros,
                "removable": self.removable, "sparsity": self.sparsity, "effective_sparsity": self.effective_sparsity,
                "no_path_to_output": sum(layer.no_path_to_output for layer in self.layers),
                "no_path_from_input": sum(layer.no_path_from_input for layer in self.layers),
                "dead_units": sum(layer.dead_units for layer in self.layers),
                "live_biases": self.live_biases, "model_nonzeros": self.model_nonzeros}

    def to_dict(self) -> dict:
        return {"layers": [asdict(layer) for layer in self.layers], "totals": self.totals()}

    def to_json(self) -> str:
        """One JSON object: ``{"layers": [...], "totals": {...}}``."""
        return json.dumps(self.to_dict())

    def markdown(self) -> str:
        """A markdown table, one row per layer and a totals row."""
        lines = ["| layer | total | nonzero | effective | no path to output | no path from input | dead units |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for row in self.layers:
            lines.append(f"| {row.name} | {row.total:,} | {row.nonzero:,} | {row.effective:,} | "
                         f"{row.no_path_to_output:,} | {row.no_path_from_input:,} | {row.dead_units}/{row.units} |")
        totals = self.totals()
        lines.append(f"| **all** | {self.total:,} | {self.nonzeros:,} | {self.effective_nonzeros:,} | "
                     f"{totals['no_path_to_output']:,} | {totals['no_path_from_input']:,} | {totals['dead_units']} |")
        lines.append("")
        lines.append(f"sparsity {self.sparsity:.4f}, effective sparsity {self.effective_sparsity:.4f}, "
                     f"removable nonzeros {self.removable:,}")
        if self.live_biases is not None:
            lines.append(f"live biases {self.live_biases:,} (nonzero, feeding a nonzero weight or the output); "
                         f"nonzero weights + live biases {self.model_nonzeros:,} (the reference's Model NNZ)")
        return "\n".join(lines)


def check_supported(model: nn.Module) -> None:
    """HfpruneError unless ``model`` is built only of layers the path-count trick handles."""
    for name, module in model.named_modules():
        if isinstance(module, REFUSED_MODULES) or any(part in type(module).__name__ for part in REFUSED_NAME_PARTS):
            raise HfpruneError(f"connectivity analysis needs positive-homogeneous layers (Linear/Conv, ReLU, "
                               f"BatchNorm, pooling, residual adds); module '{name}' is a {type(module).__name__}")
        if isinstance(module, LAYER_TYPES) and getattr(module, "groups", 1) != 1:
            raise HfpruneError(f"connectivity analysis does not handle grouped convolutions ('{name}')")


def is_supported(model: nn.Module) -> bool:
    """Whether :func:`analyse` handles ``model`` (see :func:`check_supported`)."""
    try:
        check_supported(model)
    except HfpruneError:
        return False
    return True


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv module by the name of its weight parameter."""
    return {f"{name}.weight" if name else "weight": module for name, module in model.named_modules()
            if isinstance(module, LAYER_TYPES)}


def _supports(model: nn.Module, weights: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The 0/1 support of every Linear/Conv weight (from ``weights`` where given) and the names to report."""
    layers = _layers(model)
    supports = {name: module.weight.detach() != 0 for name, module in layers.items()}
    if weights is None:
        return supports, list(layers)
    for name, tensor in weights.items():
        if name not in layers:
            raise HfpruneError(f"connectivity: '{name}' is not the weight of a Linear or Conv layer of the model; "
                               f"give names like {', '.join(list(layers)[:3])}")
        if tuple(tensor.shape) != tuple(layers[name].weight.shape):
            raise HfpruneError(f"connectivity: '{name}' has shape {tuple(tensor.shape)}, the model's weight "
                               f"{tuple(layers[name].weight.shape)}")
        supports[name] = tensor.detach().to(layers[name].weight.device) != 0
    return supports, list(weights)


def _probe_input(model: nn.Module, example_input: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The all-ones input of one example: ``example_input``'s shape, else the config's input size or image."""
    if example_input is not None:
        return torch.ones((1, *example_input.shape[1:]), dtype=torch.float64, device=device)
    config = getattr(model, "config", None)
    size = getattr(config, "input_size", None)
    if isinstance(size, int):
        return torch.ones(1, size, dtype=torch.float64, device=device)
    channels, image = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if isinstance(channels, int) and isinstance(image, int):
        return torch.ones(1, channels, image, image, dtype=torch.float64, device=device)
    raise HfpruneError("connectivity: the model's config gives no input_size nor num_channels + image_size; give "
                       "the image side with --input-size (hfprune diagnose), or pass example_input")


@contextlib.contextmanager
def _max_pool_as_average():
    """Within the block, max-pooling (module or functional) averages over the same window instead."""
    functional = torch.nn.functional
    saved = functional.max_pool2d, functional.adaptive_max_pool2d

    def average(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        if dilation not in (1, (1, 1)) or return_indices:
            raise HfpruneError("connectivity analysis does not handle dilated max-pooling or pooling indices")
        return functional.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad=False)

    def adaptive_average(input, output_size, return_indices=False):
        return functional.adaptive_avg_pool2d(input, output_size)

    functional.max_pool2d, functional.adaptive_max_pool2d = average, adaptive_average
    try:
        yield
    finally:
        functional.max_pool2d, functional.adaptive_max_pool2d = saved


class _Positive(torch.autograd.Function):
    """0/1 (is positive) forward, and 0/1 (is positive) gradient backward."""

    @staticmethod
    def forward(ctx, values):
        return (values > 0).to(values.dtype)

    @staticmethod
    def backward(ctx, grad):
        return (grad > 0).to(grad.dtype)


@torch.no_grad()
def _path_count_copy(model: nn.Module, supports: dict[str, torch.Tensor]) -> nn.Module:
    """A float64 copy in eval mode: weights = their 0/1 support, biases 0, BatchNorm the identity."""
    probe = copy.deepcopy(model).double().eval()
    for parameter in probe.parameters():
        parameter.requires_grad_(False)
    layers = _layers(probe)
    for name, module in layers.items():
        module.weight.copy_(supports[name].to(torch.float64))
        module.weight.requires_grad_(True)
        if module.bias is not None:
            module.bias.zero_()
    for module in probe.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.running_mean is None:
                raise HfpruneError("connectivity analysis needs BatchNorm layers with running statistics")
            if module.weight is not None:
                module.weight.fill_(1.0)
                module.bias.zero_()
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)
    return probe


def _output_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise HfpruneError(f"connectivity: cannot read the model's output ({type(output).__name__}); it should return "
                       "a tensor or an output with logits")


def _receives_input(module: nn.Module, layer_input: torch.Tensor) -> torch.Tensor:
    """Per weight of ``module``: True where it reads a positive value from ``layer_input`` somewhere."""
    weight = module.weight.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if isinstance(module, nn.Linear):
            out = nn.functional.linear(layer_input, weight)
        else:
            out = module._conv_forward(layer_input, weight, None)
        (grad,) = torch.autograd.grad(out.sum(), weight)
    return grad > 0


def _fed_units(weight_support: torch.Tensor) -> torch.Tensor:
    """Per input unit (channel) of a layer: whether some kept weight reads it."""
    return weight_support.transpose(0, 1).reshape(weight_support.shape[1], -1).any(dim=1)


def live_biases(model: nn.Module, supports: dict[str, torch.Tensor] | None = None) -> int | None:
    """Biases the reference's ``Model NNZ`` counts: nonzero biases whose unit feeds a nonzero weight of the next
    layer, and the nonzero biases of the last layer. ``supports`` stands in for the weights' supports (default:
    their nonzeros). None unless the Linear/Conv layers form a chain without BatchNorm (each reads the previous
    one's units), where the next layer is clear."""
    if any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return None
    layers = _layers(model)
    names = list(layers)
    if any(layers[a].weight.shape[0] != layers[b].weight.shape[1] for a, b in zip(names, names[1:])):
        return None
    support = {name: (supports or {}).get(name, layers[name].weight.detach() != 0).cpu() for name in names}
    live = 0
    for index, name in enumerate(names):
        bias = layers[name].bias
        if bias is None:
            continue
        kept = bias.detach().cpu() != 0
        if index + 1 < len(names):
            kept &= _fed_units(support[names[index + 1]])
        live += int(kept.sum())
    return live


def analyse(model: nn.Module, weights: dict[str, torch.Tensor] | None = None,
            example_input: torch.Tensor | None = None) -> Connectivity:
    """Which nonzero weights of ``model`` lie on an input→output path of nonzero weights (see the module docstring).

    ``weights``: tensors (values or masks; nonzero = kept) by parameter name, standing in for those weights of the
    model; only they are reported (default: every Linear/Conv weight, as it is in the model). Layers not named keep
    the model's own support. The input shape is ``example_input``'s, else the config's ``input_size`` or
    ``num_channels`` + ``image_size``. The model itself is not changed.
    """
    check_supported(model)
    supports, reported = _supports(model, weights)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ones = _probe_input(model, example_input, device)
    probe = _path_count_copy(model, supports)
    layers = _layers(probe)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(
        lambda module, args, output, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, module in layers.items() if name in reported]
    hooks += [module.register_forward_hook(lambda module, args, output: _Positive.apply(output))
              for module in layers.values()]
    try:
        with torch.enable_grad(), _max_pool_as_average():
            main = getattr(probe, "main_input_name", None) if hasattr(probe, "config") else None
            output = _output_tensor(probe(**{main: ones}) if main else probe(ones))
            grads = torch.autograd.grad(output.sum(), [layers[name].weight for name in reported], allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
    rows, effective, to_output, from_input = [], {}, {}, {}
    for name, grad in zip(reported, grads):
        support = supports[name].cpu()
        on_path = (grad.cpu() > 0) & support if grad is not None else torch.zeros_like(support)
        reached = _receives_input(layers[name], inputs[name]).cpu() if name in inputs else torch.zeros_like(support)
        no_input = support & ~reached
        no_output = support & ~on_path & ~no_input
        effective[name], from_input[name], to_output[name] = on_path, no_input, no_output
        units = support.shape[0]
        dead = int((on_path.flatten(1).sum(1) == 0).sum()) if support.numel() else units
        rows.append(LayerConnectivity(name, support.numel(), int(support.sum()), int(on_path.sum()),
                                      int(no_output.sum()), int(no_input.sum()), units, dead))
    return Connectivity(rows, effective, to_output, from_input,
                        live_biases(model, {name: support.cpu() for name, support in supports.items()}))
