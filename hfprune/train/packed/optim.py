"""Each job's own optimizer and schedule, stepped for the whole pack at once on its flat weights.

SGD runs on the flat ``[K, N]`` tensors with per-job learning rates, momenta and weight decays as ``[K, 1]``
columns. Its arithmetic is the per-parameter loop of ``torch.optim.SGD`` (``_single_tensor_sgd``), element for
element: ``addcmul`` with a column rounds as ``add(alpha=...)`` with the scalar does, and a job with no momentum
or no weight decay gets ``buf·0 + g`` and ``g + w·0``, which are ``g``. Adam and AdamW call torch's own
(fused, where the solo run fuses) update per group of jobs with one configuration, on each job's own parameter
tensors: the fused kernel rounds the tail of a tensor differently from its body, so each tensor must be one the
solo run would have. Learning rates come from the solo run's own schedule objects, evaluated once per distinct
configuration before training.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam

from hfprune.train.optim import build_schedule, can_fuse
from hfprune.train.packed.jobs import TrainingSection
from hfprune.train.packed.stack import FlatStack


def learning_rates(sections: list[TrainingSection], steps_per_epoch: int,
                   epochs: int) -> tuple[torch.Tensor, list[int]]:
    """The learning rate each job's optimizer uses at every step (float64 ``[C, T]``, one row per distinct
    learning rate and schedule) and each job's row."""
    rows: dict[tuple, int] = {}
    values: list[list[float]] = []
    which = []
    for section in sections:
        key = (section.optimizer.lr, section.schedule.model_dump_json())
        if key not in rows:
            param = torch.nn.Parameter(torch.zeros(1))
            optimizer = torch.optim.SGD([param], lr=section.optimizer.lr)
            schedule = build_schedule(optimizer, section.schedule, steps_per_epoch, epochs)
            lrs = []
            for _ in range(steps_per_epoch * epochs):
                lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()  # no gradient: changes nothing, keeps the scheduler's order check quiet
                schedule.step()
            rows[key] = len(values)
            values.append(lrs)
        which.append(rows[key])
    return torch.tensor(values, dtype=torch.float64), which


class PackedOptimizer:
    """The jobs' optimizers (one name, per-job hyperparameters and schedules) over :attr:`FlatStack.flat`."""

    def __init__(self, stack: FlatStack, sections: list[TrainingSection], steps_per_epoch: int, epochs: int):
        self.stack, self.name = stack, sections[0].optimizer.name
        device, dtype = stack.device, stack.flat.dtype
        table, which = learning_rates(sections, steps_per_epoch, epochs)
        optimizers = [section.optimizer for section in sections]
        if self.name == "sgd":
            self.neg_lr = (-table).to(dtype).to(device)  # float32(-lr) = -float32(lr), as add(alpha=-lr) rounds it
            self.which = torch.tensor(which, device=device)
            self.weight_decay = torch.tensor([[o.weight_decay] for o in optimizers], dtype=dtype, device=device)
            self.momentum = torch.tensor([[o.momentum] for o in optimizers], dtype=dtype, device=device)
            self.any_decay = any(o.weight_decay != 0 for o in optimizers)
            self.any_momentum = any(o.momentum != 0 for o in optimizers)
            self.nesterov = optimizers[0].nesterov
            self.buffer: torch.Tensor | None = None
            return
        # Adam / AdamW: one torch update per group of jobs with the same learning rates, betas and weight decay.
        self.lrs = table.tolist()
        groups: dict[tuple, list[int]] = {}
        for k, (o, row) in enumerate(zip(optimizers, which)):
            groups.setdefault((row, tuple(o.betas), o.weight_decay), []).append(k)
        self.groups = list(groups.items())
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(stack.flat.detach()), torch.zeros_like(stack.flat.detach())
        self.fused = can_fuse([stack.flat]) or None
        step_dtype = torch.float32 if self.fused else torch.get_default_dtype()
        weights = stack.flat.detach()
        self.tensors = [  # per group: each job's own parameter tensors (views), as the solo optimizer holds them
            [[stack.row_view(flat, k, name) for k in jobs for name in stack.trained]
             for flat in (weights, stack.grad, self.exp_avg, self.exp_avg_sq)]
            + [[torch.zeros((), dtype=step_dtype, device=device if self.fused else "cpu")
                for _ in jobs for _ in stack.trained]]
            for _, jobs in self.groups]

    @torch.no_grad()
    def snapshot(self, jobs: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weights and momentum of ``jobs`` (SGD), for :meth:`restore` after a step they skip."""
        weights = self.stack.flat.detach()[jobs].clone()
        return weights, None if self.buffer is None else self.buffer[jobs].clone()

    @torch.no_grad()
    def restore(self, jobs: list[int], kept: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        """Undo the last step for ``jobs``: their weights and momentum as :meth:`snapshot` kept them (no momentum
        yet: zeros, which the next step turns into its gradient, as a first step makes it)."""
        weights, buffer = kept
        self.stack.flat.detach()[jobs] = weights
        if self.buffer is not None:
            self.buffer[jobs] = 0.0 if buffer is None else buffer

    @torch.no_grad()
    def mask_momentum(self, k: int, masks) -> None:
        """Zero job ``k``'s momentum where its weights are pruned (``masks``: the pack's :class:`StackedMasks`)."""
        if self.buffer is not None and masks.flat is not None:
            self.buffer[k].mul_(masks.flat[k])

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Optimizer step ``step`` (0 first) of every job, with the (masked, clipped) gradients in
        :attr:`FlatStack.grad`, which it may overwrite."""
        if self.name != "sgd":
            for ((row, (beta1, beta2), weight_decay), _), tensors in zip(self.groups, self.tensors):
                adam(*tensors[:4], [], tensors[4], foreach=None, capturable=False, differentiable=False,
                     fused=self.fused, decoupled_weight_decay=self.name == "adamw", amsgrad=False, beta1=beta1,
                     beta2=beta2, lr=self.lrs[row][step], weight_decay=weight_decay, eps=1e-8, maximize=False)
            return
        weights, grad = self.stack.flat.detach(), self.stack.grad
        if self.any_decay:
            grad.addcmul_(weights, self.weight_decay)
        update = grad
        if self.any_momentum:
            if self.buffer is None:
                self.buffer = grad.clone()
            else:
                self.buffer.mul_(self.momentum).add_(grad)
            update = grad.addcmul_(self.buffer, self.momentum) if self.nesterov else self.buffer
        weights.addcmul_(update, self.neg_lr[:, step][self.which].unsqueeze(1))
