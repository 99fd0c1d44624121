"""The sparse MLPs of one width trained as one: forward and backward by batched matrix products (``torch.bmm``)
into buffers kept from step to step.

Written out by hand (no autograd), mirroring what autograd computes for the solo model: ``addmm`` forward,
``x^T g`` then transposed for a weight's gradient, ``g W`` for its input's, ReLU's threshold backward, and
BCE-with-logits' ``(sigmoid(z) - y) / B``. Reusing the buffers matters on the CPU: a pack's activations pass the
allocator's threshold for fresh memory pages, which then cost a page fault each, every step.
"""

from __future__ import annotations

import torch

from hfprune.models.sparse_mlp.modeling_sparse_mlp import SparseMLPForBinaryClassification
from hfprune.train.packed.stack import FlatStack

# The losses this engine computes itself, by qualified name (the engine does not import the evaluation package).
KNOWN_LOSSES = {"hfprune.evaluation.binary.binary_loss"}


def _qualified(function) -> str:
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


def fits(model: torch.nn.Module, loss_fn) -> bool:
    """Whether this engine trains ``model`` with ``loss_fn``: the sparse_mlp family's model, every parameter
    trained, with its binary cross-entropy loss."""
    return (type(model) is SparseMLPForBinaryClassification and _qualified(loss_fn) in KNOWN_LOSSES
            and all(param.requires_grad for param in model.parameters()))


class StackedMLP:
    """Gradients of every job's loss on its batch, written into ``stack.grad``; returns the K losses."""

    def __init__(self, stack: FlatStack):
        self.stack = stack
        self.layers = len(stack.models[0].layers)
        self.names = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(self.layers)]
        self._buffers: dict[int, dict] = {}

    def _buffers_for(self, length: int) -> dict:
        buffers = self._buffers.get(length)
        if buffers is None:
            jobs, flat = self.stack.size, self.stack.flat
            widths = [self.stack.offsets[weight][1][0] for weight, _ in self.names]
            inputs = [self.stack.offsets[weight][1][1] for weight, _ in self.names]
            buffers = self._buffers[length] = {
                "z": [flat.new_empty(jobs, length, width) for width in widths],
                "dz": [flat.new_empty(jobs, length, width) for width in widths],
                "weight_grad": [flat.new_empty(jobs, fan_in, width) for fan_in, width in zip(inputs, widths)],
            }
        return buffers

    @torch.no_grad()
    def gradients(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        stack, flat = self.stack, self.stack.flat
        inputs, labels = batch["inputs"], batch["labels"]
        length = inputs.shape[1]
        buffers = self._buffers_for(length)
        z, dz = buffers["z"], buffers["dz"]
        h = inputs
        for layer, (weight, bias) in enumerate(self.names):
            torch.baddbmm(stack.view(flat, bias).unsqueeze(1), h, stack.view(flat, weight).transpose(1, 2),
                          out=z[layer])
            if layer < self.layers - 1:
                torch.relu_(z[layer])
            h = z[layer]
        logits = h.squeeze(-1) if h.shape[-1] == 1 else h
        targets = labels.to(logits.dtype).reshape(logits.shape)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        losses = losses.reshape(stack.size, -1).mean(1)
        g = dz[-1]
        torch.sigmoid(h, out=g)
        g.sub_(targets.view_as(g)).div_(targets[0].numel())  # BCE-with-logits' backward, mean over the job's batch
        for layer in range(self.layers - 1, -1, -1):
            weight, bias = self.names[layer]
            below = inputs if layer == 0 else z[layer - 1]
            torch.bmm(below.transpose(1, 2), g, out=buffers["weight_grad"][layer])
            stack.view(stack.grad, weight).copy_(buffers["weight_grad"][layer].transpose(1, 2))
            torch.sum(g, dim=1, out=stack.view(stack.grad, bias))
            if layer:
                torch.bmm(g, stack.view(flat, weight), out=dz[layer - 1])
                g = torch.ops.aten.threshold_backward.grad_input(dz[layer - 1], z[layer - 1], 0,
                                                                 grad_input=dz[layer - 1])
        return losses
