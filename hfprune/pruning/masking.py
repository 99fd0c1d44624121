"""Parameter masks on a live model: apply them once, and keep them exact through training.

One :class:`MaskedParameters` serves every backend the trainer runs on:

* gradients are masked by tensor hooks on the parameters (:meth:`MaskedParameters.attach`), which run when
  autograd delivers a parameter's gradient, *before* it is accumulated into ``.grad``: before DDP's reducer
  all-reduces it, before DeepSpeed ZeRO copies it into its (partitioned, fp32) gradient buffers, and before
  gradient clipping or the optimiser see it;
* weights are masked by :meth:`MaskedParameters.apply`, before training (so optimiser master copies, e.g.
  DeepSpeed's fp32 partitions, start with the pruned weights at zero) and after every optimiser step. A
  ZeRO-3 parameter is partitioned (``param.ds_tensor`` holds this rank's flat slice); ``apply`` masks that
  slice with the matching flat slice of the mask and :meth:`violations` counts on it.

With pruned weights at zero and their gradients at zero, SGD (momentum, weight decay), Adam and AdamW leave
them at exactly zero; re-applying after each step only guards against anything else writing to them.

Masks stay boolean (one byte per weight) wherever they were given (usually the CPU) and are copied to a
parameter's device the first time they are needed there, then cached: ``accelerate.prepare`` moves the model
after the masks were made, and the copy follows it lazily. (When training on the CPU, the gradient hooks
cache a copy in the gradient's dtype instead: multiplying by a boolean tensor is far slower there.)
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn


def _is_partitioned(param: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter: its values live in ``param.ds_tensor``, this rank's flat partition."""
    return getattr(param, "ds_tensor", None) is not None


def _full_shape(param: torch.Tensor) -> torch.Size:
    return getattr(param, "ds_shape", None) or param.shape


def _partition_rank(param: torch.Tensor) -> int:
    rank = getattr(param, "ds_zero_partition_rank", None)
    if rank is None:
        rank = torch.distributed.get_rank(group=param.ds_process_group) if torch.distributed.is_initialized() else 0
    return rank


class MaskedParameters:
    """Boolean masks of a model's parameters (True = kept), enforced on the live model.

    Use it around training::

        masked.apply()                   # zero the pruned weights (before any optimiser copies them)
        with masked.gradient_hooks():    # every gradient is masked on its way to .grad
            ...  # forward, backward, optimiser.step(), then masked.apply() after each step

    :func:`hfprune.train.trainer.train` does all of this.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        named = dict(model.named_parameters())
        unknown = sorted(set(masks) - set(named))
        if unknown:
            raise KeyError(f"masks name parameters the model does not have: {unknown}")
        self.names = list(masks)
        self.params = [named[name] for name in self.names]
        self.masks = [mask if mask.dtype == torch.bool else mask.bool() for mask in masks.values()]
        for name, param, mask in zip(self.names, self.params, self.masks):
            if _full_shape(param) != mask.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} != parameter shape {tuple(_full_shape(param))} "
                                 f"of {name}")
        # A mask that keeps everything costs nothing to enforce: no hook, no multiplication.
        self._prunes = [not bool(mask.all()) for mask in self.masks]
        # Per mask: its copies by device, and its flat ZeRO-3 partition slices by (device, start, size).
        self._copies: list[dict] = [{} for _ in self.masks]
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._attached = False  # asked for hooks (a mask keeping everything gets none until it prunes)

    @property
    def pairs(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, mask) pairs, the masks where they were given."""
        return list(zip(self.params, self.masks))

    # -- masks where they are needed ------------------------------------------------------------------------
    def _mask_on(self, index: int, device: torch.device, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """The mask on ``device``, to multiply a tensor of ``dtype`` with: boolean (one byte per weight) on
        accelerators, where the kernels cast on the fly; in ``dtype`` on the CPU (asked for by the gradient
        hooks, i.e. when training there), where ``grad * bool_mask`` is some 30 times slower than with a mask
        of the gradient's dtype."""
        key = (device, dtype) if device.type == "cpu" and dtype is not torch.bool else device
        copies = self._copies[index]
        mask = copies.get(key)
        if mask is None:
            mask = copies[key] = self.masks[index].to(device, dtype if key != device else torch.bool)
        return mask

    def _partition_mask(self, index: int, param: torch.Tensor) -> torch.Tensor:
        """The flat slice of the mask that matches this rank's ZeRO-3 partition (padding counts as kept)."""
        part = param.ds_tensor
        size = part.numel()
        start = _partition_rank(param) * size
        key = (part.device, start, size)
        copies = self._copies[index]
        mask = copies.get(key)
        if mask is None:
            flat = self.masks[index].reshape(-1)[start:start + size]
            if flat.numel() < size:  # the last partition is padded to the common size
                flat = torch.cat([flat, flat.new_ones(size - flat.numel())])
            mask = copies[key] = flat.to(part.device)
        return mask

    # -- weights ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply(self) -> None:
        """Zero every pruned weight (on a ZeRO-3 parameter: in this rank's partition, and in the gathered
        tensor too while it is gathered)."""
        for index, param in enumerate(self.params):
            if not self._prunes[index]:
                continue
            if _is_partitioned(param):
                param.ds_tensor.mul_(self._partition_mask(index, param))
                if param.numel() == param.ds_numel:  # currently gathered (or persistent)
                    param.data.mul_(self._mask_on(index, param.device).view_as(param.data))
            else:
                # On the CPU: the gradient hooks' copy if training there made one, else the boolean mask (the
                # model may sit on the CPU only until accelerate.prepare moves it; no copy made for that).
                mask = self._copies[index].get((param.device, param.dtype)) if param.device.type == "cpu" else None
                param.mul_(mask if mask is not None else self._mask_on(index, param.device))

    @torch.no_grad()
    def violations(self) -> int:
        """Number of pruned entries that are not exactly zero (0 when the masks hold).

        On ZeRO-3 each rank counts its own partitions and the counts are summed across the partition
        group, so every rank must call this (it is a collective there) and gets the global count.
        """
        counts: dict[torch.device, torch.Tensor] = {}  # summed where they are: one sync per device
        group = group_device = None
        for index, param in enumerate(self.params):
            if _is_partitioned(param):
                values, pruned = param.ds_tensor, ~self._partition_mask(index, param)
                group, group_device = param.ds_process_group, param.ds_tensor.device
            else:
                values, pruned = param, ~self._mask_on(index, param.device)
            count = torch.count_nonzero(values.masked_select(pruned))
            counts[count.device] = counts[count.device] + count if count.device in counts else count
        total = sum(int(count.item()) for count in counts.values())
        if group is not None and torch.distributed.is_initialized() and torch.distributed.get_world_size(group) > 1:
            gloo = torch.distributed.get_backend(group) == "gloo"
            reduced = torch.tensor(total, device="cpu" if gloo else group_device)
            torch.distributed.all_reduce(reduced, group=group)
            total = int(reduced.item())
        return total

    # -- changing masks -----------------------------------------------------------------------------------------
    def update(self, masks: dict[str, torch.Tensor]) -> None:
        """Replace the masks of the named parameters (a subset of :attr:`names`) while training goes on.

        The device and dtype copies are rebuilt from the new masks, the gradient hooks follow (a mask that keeps
        everything had none), and the newly pruned weights are zeroed. Nothing the caller holds is written.
        """
        unknown = sorted(set(masks) - set(self.names))
        if unknown:
            raise KeyError(f"update names parameters these masks do not cover: {unknown}")
        position = {name: index for index, name in enumerate(self.names)}
        for name, mask in masks.items():
            index = position[name]
            if mask.shape != self.masks[index].shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} != parameter shape "
                                 f"{tuple(self.masks[index].shape)} of {name}")
            self.masks[index] = mask if mask.dtype == torch.bool else mask.bool()
            self._prunes[index] = not bool(self.masks[index].all())
            self._copies[index].clear()
        if self.attached:  # hooks look masks up by index, but which masks have a hook may have changed
            self.detach()
            self.attach()
        self.apply()

    # -- gradients --------------------------------------------------------------------------------------------
    def _mask_gradient(self, index: int, grad: torch.Tensor) -> torch.Tensor:
        mask = self._mask_on(index, grad.device, grad.dtype)
        if grad.shape != mask.shape:  # a backend that hands over a flattened gradient
            mask = mask.reshape(grad.shape)
        return grad * mask

    def attach(self) -> None:
        """Register the gradient hooks (once; calling it again while attached does nothing)."""
        if self._attached:
            return
        self._attached = True
        for index, param in enumerate(self.params):
            if param.requires_grad and self._prunes[index]:
                self._hooks.append(param.register_hook(functools.partial(self._mask_gradient, index)))

    def detach(self) -> None:
        """Remove the gradient hooks."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached

    @contextlib.contextmanager
    def gradient_hooks(self):
        """Gradient hooks for the duration of the block (removed at its end, also on error)."""
        already = self.attached
        self.attach()
        try:
            yield self
        finally:
            if not already:
                self.detach()


@torch.no_grad()
def pruned_l1(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """L1 norm of the weights the masks remove (the "L1 magnitude" criterion of a mask)."""
    named = dict(model.named_parameters())
    return float(sum(named[name].abs()[~mask].sum().item() for name, mask in masks.items()))
