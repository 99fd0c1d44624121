"""The sparse MLPs of one width trained as one: forward and backward by batched matrix products (``torch.bmm``)
into buffers kept from step to step, giving each job what its solo run computes.

Written out by hand (no autograd), with the operations autograd runs for the solo model: ``addmm(b, x, W^T)``
forward, ``g^T x`` for a weight's gradient and ``g W`` for its input's (the layouts ``addmm``'s backward
chooses), ``sum`` over the batch for a bias's, ReLU's threshold backward, and BCE-with-logits'
``(sigmoid(z) - y) / B``. A batched product need not sum in the order of the job's own product (MKL's batched
GEMM does not for a layer with one output, for instance), and an elementwise kernel rounds the tail of a tensor
in scalar code, so each operation is probed once per batch length on random data of the real shapes and runs
in the first batched form that gives every job's result bit for bit; failing that, job by job. On the CPU the
pack's weights are then those of the solo runs, bit for bit (the tests check it); on a GPU every operation runs
batched, and the weights agree within float rounding.

Reusing the buffers matters on the CPU too: a pack's activations pass the allocator's threshold for fresh memory
pages, which would cost a page fault each, every step.
"""

from __future__ import annotations

import torch

from hfprune.models.sparse_mlp.modeling_sparse_mlp import SparseMLPForBinaryClassification
from hfprune.train.packed.stack import FlatStack

# The losses this engine computes itself, by qualified name (the engine does not import the evaluation package).
KNOWN_LOSSES = {"hfprune.evaluation.classification.binary_loss"}
_F = torch.nn.functional


def _qualified(function) -> str:
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


def fits(model: torch.nn.Module, loss_fn) -> bool:
    """Whether this engine trains ``model`` with ``loss_fn``: the sparse_mlp family's model, every parameter
    trained, with its binary cross-entropy loss."""
    return (type(model) is SparseMLPForBinaryClassification and _qualified(loss_fn) in KNOWN_LOSSES
            and all(param.requires_grad for param in model.parameters()))


# -- the operations: batched forms and the job-by-job form ----------------------------------------------------------
# Each operation takes its form first: "batched" (one batched call), "rows" (a batched call with other layouts, which
# MKL sums like the job's own product for some shapes the first form does not) or "jobs" (one call per job).
def _forward(form: str, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> None:
    """``out = h W^T + b`` for every job (F.linear's ``addmm``)."""
    if form == "batched":
        torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2), out=out)
    elif form == "rows":  # (W h^T + b)^T
        out.copy_(torch.baddbmm(bias.unsqueeze(2), weight, h.transpose(1, 2)).transpose(1, 2))
    else:
        for k in range(len(out)):
            torch.addmm(bias[k], h[k], weight[k].t(), out=out[k])


def _weight_grad(form: str, g: torch.Tensor, h: torch.Tensor, out: torch.Tensor) -> None:
    """``out = g^T h`` for every job (``addmm``'s gradient of a transposed weight, transposed back)."""
    if form == "batched":
        torch.bmm(g.transpose(1, 2), h, out=out)
    elif form == "rows":  # g^T copied with standard strides (contiguous() keeps a one-output layer's as they are)
        transposed = g.transpose(1, 2)
        torch.bmm(torch.empty(transposed.shape, dtype=g.dtype, device=g.device).copy_(transposed), h, out=out)
    else:
        for k in range(len(out)):
            torch.mm(g[k].t(), h[k], out=out[k])


def _input_grad(form: str, g: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """``out = g W`` for every job."""
    if form == "batched":
        torch.bmm(g, weight, out=out)
    else:
        for k in range(len(out)):
            torch.mm(g[k], weight[k], out=out[k])


def _bias_grad(form: str, g: torch.Tensor, out: torch.Tensor) -> None:
    """``out = sum of g over the batch`` for every job (autograd's ``sum_to`` of the broadcast bias)."""
    if form == "batched":
        torch.sum(g, dim=1, out=out)
    else:
        for k in range(len(out)):
            torch.sum(g[k], dim=0, keepdim=True, out=out[k].unsqueeze(0))


def _sigmoid(form: str, logits: torch.Tensor, out: torch.Tensor) -> None:
    if form == "batched":
        torch.sigmoid(logits, out=out)
    else:
        for k in range(len(out)):
            torch.sigmoid(logits[k], out=out[k])


def _losses(form: str, logits: torch.Tensor, targets: torch.Tensor, out: torch.Tensor) -> None:
    """Every job's mean BCE-with-logits, ``[K]``."""
    if form == "batched":
        torch.mean(_F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), 1, out=out)
    else:
        for k in range(len(logits)):
            out[k] = _F.binary_cross_entropy_with_logits(logits[k], targets[k])


FORMS = {_forward: ("batched", "rows", "jobs"), _weight_grad: ("batched", "rows", "jobs")}


def _form(operation, *args, out: torch.Tensor) -> str:
    """The first form of ``operation`` that gives, bit for bit, what the job-by-job form gives on ``args``."""
    expected = torch.empty_like(out)
    operation("jobs", *args, expected)
    for form in FORMS.get(operation, ("batched", "jobs"))[:-1]:
        got = torch.empty_like(out)
        operation(form, *args, got)
        if torch.equal(got, expected):
            return form
    return "jobs"


class StackedMLP:
    """Gradients of every job's loss on its batch, written into ``stack.grad``; returns the K losses."""

    def __init__(self, stack: FlatStack):
        self.stack = stack
        self.names = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(stack.models[0].layers))]
        self.shapes = [stack.offsets[weight][1] for weight, _ in self.names]  # (out, in) per layer
        self._plans: dict[int, dict] = {}

    def _plan(self, length: int) -> dict:
        """Buffers for batches of ``length`` and, per operation, the form it runs in (probed)."""
        plan = self._plans.get(length)
        if plan is not None:
            return plan
        stack, jobs = self.stack, self.stack.size
        flat = stack.flat.detach()
        new = flat.new_empty
        plan = self._plans[length] = {
            "z": [new(jobs, length, out) for out, _ in self.shapes],
            "dz": [new(jobs, length, out) for out, _ in self.shapes],
            "weight_grad": [new(jobs, out, fan_in) for out, fan_in in self.shapes],
        }
        if flat.device.type != "cpu":  # exactness is the CPU's promise; elsewhere every operation runs batched
            plan.update({(name, layer): "batched" for layer in range(len(self.names))
                         for name in ("forward", "weight_grad", "input_grad", "bias_grad")})
            plan.update(sigmoid="batched", losses="batched")
            return plan
        generator = torch.Generator(device=flat.device).manual_seed(0)

        def rand(*shape):
            return torch.randn(*shape, generator=generator, device=flat.device, dtype=flat.dtype)

        weights = rand(*flat.shape)
        for layer, ((weight, bias), (out, fan_in)) in enumerate(zip(self.names, self.shapes)):
            h, g = rand(jobs, length, fan_in), rand(jobs, length, out)
            w, b = stack.view(weights, weight), stack.view(weights, bias)
            plan[("forward", layer)] = _form(_forward, h, w, b, out=new(jobs, length, out))
            plan[("weight_grad", layer)] = _form(_weight_grad, g, h, out=new(jobs, out, fan_in))
            plan[("input_grad", layer)] = _form(_input_grad, g, w, out=new(jobs, length, fan_in))
            plan[("bias_grad", layer)] = _form(_bias_grad, g, out=new(jobs, out))
        logits = rand(jobs, length * self.shapes[-1][0])
        targets = (rand(*logits.shape) > 0).to(logits.dtype)
        plan["sigmoid"] = _form(_sigmoid, logits, out=new(logits.shape))
        plan["losses"] = _form(_losses, logits, targets, out=new(jobs))
        return plan

    @torch.no_grad()
    def gradients(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        stack, flat, grad = self.stack, self.stack.flat, self.stack.grad
        inputs, labels = batch["inputs"], batch["labels"]
        jobs, length = inputs.shape[:2]
        plan = self._plan(length)
        z, dz = plan["z"], plan["dz"]
        h = inputs
        for layer, (weight, bias) in enumerate(self.names):
            _forward(plan[("forward", layer)], h, stack.view(flat, weight), stack.view(flat, bias), z[layer])
            if layer < len(self.names) - 1:
                torch.relu_(z[layer])
            h = z[layer]
        logits = h.reshape(jobs, -1)  # the solo model squeezes its one output: [B]; with k outputs [B, k]
        targets = labels.to(logits.dtype).reshape(logits.shape)
        losses = logits.new_empty(jobs)
        _losses(plan["losses"], logits, targets, losses)
        g = dz[-1]
        _sigmoid(plan["sigmoid"], logits, g.view(jobs, -1))
        g.view(jobs, -1).sub_(targets).div_(targets.shape[1])  # BCE-with-logits' backward: mean over the batch
        for layer in range(len(self.names) - 1, -1, -1):
            weight, bias = self.names[layer]
            below = inputs if layer == 0 else z[layer - 1]
            weight_grad = plan["weight_grad"][layer]
            _weight_grad(plan[("weight_grad", layer)], g, below, weight_grad)
            stack.view(grad, weight).copy_(weight_grad)
            _bias_grad(plan[("bias_grad", layer)], g, stack.view(grad, bias))
            if layer:
                _input_grad(plan[("input_grad", layer)], g, stack.view(flat, weight), dz[layer - 1])
                g = torch.ops.aten.threshold_backward.grad_input(dz[layer - 1], z[layer - 1], 0,
                                                                 grad_input=dz[layer - 1])
        return losses
