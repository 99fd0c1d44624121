"""Retraining through LoRA adapters (``peft``), merged back into the weights: the model keeps its (pruned) shapes
and its pruned weights stay exactly zero.

``peft`` wraps the target Linears (by default every Linear of the model's transformer blocks), the base weights are
frozen, :func:`hfprune.train.trainer.train` trains the adapters (any backend it runs), and ``merge_and_unload``
folds ``(alpha / r) · B A`` into each weight. A physically pruned model merges as it is. A masked model (unstructured
pruning, or structured pruning retrained with masks) would lose its zeros to the dense update ``B A``; there every
adapter of a masked weight is the masked update ``(B A) ⊙ M`` (a LoRA variant, peft's extension point for DoRA and
the like), in training and in the merge: the merged weight ``W + s (B A) ⊙ M`` is exactly what was trained, with its
pruned entries zero. That form builds each adapter's ``out × in`` update per step, costing one weight-sized
temporary per adapted layer, and needs whole adapter matrices (not under DeepSpeed ZeRO-3, which partitions them).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.models.structure import find_blocks
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.sections import LoraSection, TrainingSection
from hfprune.train.trainer import TrainResult, train

MASK_BUFFER = "hfprune_lora_mask"


def lora_targets(model: nn.Module, section: LoraSection) -> list[str]:
    """The names of the Linears that get adapters: those fully matching ``section.target_modules``, or every
    Linear of the model's transformer blocks; an HfpruneError naming the fix when there are none."""
    if section.target_modules is None:
        try:
            return list(find_blocks(model).linears())
        except HfpruneError as error:
            raise HfpruneError(f"retrain.lora: {error}; name the layers with retrain.lora.target_modules") from None
    patterns = [re.compile(pattern) for pattern in section.target_modules]
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and any(pattern.fullmatch(name) for pattern in patterns)]
    if not names:
        raise HfpruneError(f"retrain.lora.target_modules {section.target_modules} match no Linear layer of "
                           f"{type(model).__name__}; change the regexes")
    return names


class MaskedUpdate:
    """A LoRA variant whose update is ``(B A) ⊙ M``: ``M`` (True = kept) is the mask of the adapted weight, held by
    the layer as a buffer so that it follows the layer's device."""

    @staticmethod
    def supports_lora_conversion() -> bool:
        return False

    @staticmethod
    def init(module, adapter_name: str, **kwargs) -> None:
        """Nothing: the adapters start as peft's (B = 0), the mask is attached by :func:`_mask_updates`."""

    @staticmethod
    def delta(module, adapter: str) -> torch.Tensor:
        """The masked update, scaled, in the adapters' dtype (float32 on the CPU for half precisions)."""
        update = module.get_delta_weight(adapter)  # (alpha / r) · B A, laid out as the weight
        return torch.where(getattr(module, MASK_BUFFER), update, torch.zeros((), dtype=update.dtype,
                                                                                device=update.device))

    @staticmethod
    def merge_safe(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight + MaskedUpdate.delta(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data += MaskedUpdate.delta(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight - MaskedUpdate.delta(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def forward(module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs) -> torch.Tensor:
        lora_a = module.lora_A[active_adapter]
        update = torch.where(getattr(module, MASK_BUFFER), module.lora_B[active_adapter].weight @ lora_a.weight,
                             torch.zeros((), dtype=lora_a.weight.dtype, device=lora_a.weight.device))
        inputs = module.lora_dropout[active_adapter](x)
        return result + nn.functional.linear(inputs, update) * module.scaling[active_adapter]


def _mask_updates(peft_model, masks: MaskedParameters) -> int:
    """Give every adapted Linear whose weight ``masks`` prunes the :class:`MaskedUpdate` variant and its mask;
    returns how many there are."""
    from peft.tuners.lora.layer import LoraLayer

    pruning = {id(param): mask for param, mask in masks.pairs if not bool(mask.all())}
    count = 0
    for module in peft_model.modules():
        if not isinstance(module, LoraLayer):
            continue
        mask = pruning.get(id(module.get_base_layer().weight))
        if mask is None:
            continue
        if getattr(module, "fan_in_fan_out", False):
            raise HfpruneError("retrain.lora on masked weights needs nn.Linear layers (not GPT-2's Conv1D); use full "
                               "retraining")
        module.register_buffer(MASK_BUFFER, mask.to(module.get_base_layer().weight.device), persistent=False)
        for adapter in module.lora_A:
            module.lora_variant[adapter] = MaskedUpdate()
        count += 1
    return count


def _refuse_zero3(masks: MaskedParameters | None) -> None:
    from accelerate.state import AcceleratorState

    plugin = AcceleratorState().deepspeed_plugin if AcceleratorState._shared_state else None
    if masks is not None and plugin is not None and plugin.zero_stage == 3:
        raise HfpruneError("retrain.lora on masked weights builds each adapter's masked update from whole adapter "
                           "matrices, which DeepSpeed ZeRO-3 partitions; use ZeRO-2, DDP or one process, or full "
                           "retraining (no retrain.lora)")


def train_lora(model: nn.Module, dataset, section: TrainingSection, loss_fn, *, lora: LoraSection, seed: int,
               masks: MaskedParameters | None = None, **options) -> TrainResult:
    """Train LoRA adapters of ``model`` as :func:`~hfprune.train.trainer.train` trains a model (``section``,
    ``loss_fn``, ``seed`` and its other ``options``), then merge them into ``model`` in place. Pruned weights of
    ``masks`` stay exactly zero (their adapters are masked; :meth:`MaskedParameters.apply` after the merge)."""
    from peft import LoraConfig, get_peft_model

    _refuse_zero3(masks)
    targets = lora_targets(model, lora)
    trainable = {param: param.requires_grad for param in model.parameters()}
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        bias="none")
    torch.manual_seed(seed)  # the adapters' initialisation (A: Kaiming-uniform, B: zeros)
    peft_model = get_peft_model(model, config)  # adapts ``model``'s Linears in place and freezes the rest
    try:
        if masks is not None:
            _mask_updates(peft_model, masks)
        result = train(peft_model, dataset, section, loss_fn, seed=seed, masks=None, **options)
        merged = peft_model.merge_and_unload()  # ``model`` again, its Linears plain, the updates folded in
    finally:
        for param, flag in trainable.items():
            param.requires_grad_(flag)
    if merged is not model:
        raise HfpruneError("peft merged the adapters into a copy of the model; hfprune needs the merge in place")
    if masks is not None:
        masks.apply()
    return result

