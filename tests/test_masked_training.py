"""Pruned weights stay exactly zero through retraining on every backend, and the kept weights do train.

A tiny TinyLLaVA (2 Phi layers) with random 44% masks on its decoder's Linear weights is retrained with AdamW,
weight decay, gradient clipping and gradient accumulation: plainly (in this process), with bf16 autocast and
gradient checkpointing, under DeepSpeed ZeRO-2 and ZeRO-3 on one CPU process (through ``accelerate launch``
with the repository's accelerate_configs), and data parallel over two CPU processes. Every backend but the
plain one runs in a fresh process, so process-wide Accelerate/DeepSpeed state never leaks between tests.

Run as a script (``python tests/test_masked_training.py CASE``, under ``accelerate launch`` for the
distributed cases) this file is the worker: it trains, asserts, and writes its summary to
``$MASKED_TRAINING_OUT/rank{RANK}.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from accelerate import PartialState

from launchers import free_port
from hfprune.models.llava.tiny import tiny_llava
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import train
from waiting import patience

ROOT = Path(__file__).resolve().parents[1]
TARGETS = re.compile(r"model\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|dense)|mlp\.(fc1|fc2))\.weight")
RATIO = 0.44


def random_masks(model: torch.nn.Module, ratio: float = RATIO, seed: int = 0) -> dict[str, torch.Tensor]:
    """Exactly ``round(ratio * numel)`` pruned entries, at random, in every targeted weight."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, param in model.named_parameters():
        if TARGETS.fullmatch(name):
            mask = torch.ones(param.numel(), dtype=torch.bool)
            mask[torch.randperm(param.numel(), generator=generator)[:round(ratio * param.numel())]] = False
            masks[name] = mask.view(param.shape)
    assert len(masks) == 12
    return masks


def text_batches(n: int = 16, length: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(3, 400, (n, length), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row} for row in ids]


def section(**overrides) -> TrainingSection:
    base = dict(epochs=2, batch_size=4, optimizer={"name": "adamw", "lr": 1e-2, "weight_decay": 0.1},
                grad_clip=0.5, gradient_accumulation_steps=2)
    return TrainingSection(**{**base, **overrides})


class SpyMasks(MaskedParameters):
    """Records every gradient its hooks see: how many, and whether each had the parameter's full shape."""

    def __init__(self, model, masks):
        super().__init__(model, masks)
        self.calls = [0] * len(self.masks)
        self.full_shaped = True

    def _mask_gradient(self, index, grad):
        self.calls[index] += 1
        self.full_shaped &= grad.shape == self.masks[index].shape
        return super()._mask_gradient(index, grad)


def run_case(case: str) -> dict:
    """Retrain under this process's backend as ``case`` says; assert the masks held; return a summary."""
    mixed = "no" if case in ("plain", "ddp") else "bf16"
    checkpointing = case in ("bf16_checkpointing", "zero3")
    dtypes = [torch.float32, torch.bfloat16] if case.startswith("zero") else [torch.float32]
    runs = 2 if case in ("plain", "zero2") else 1  # a second run with the same MaskedParameters
    data = text_batches()
    summary = {"case": case, "runs": []}
    for dtype in dtypes:
        model, _ = tiny_llava(num_layers=2)
        model.to(dtype)
        # Text-only batches leave the vision side without gradients (DDP refuses unused trainable parameters);
        # freezing it also gives ZeRO-3 frozen parameters to hand back.
        for module in (model.model.vision_tower, model.model.multi_modal_projector):
            module.requires_grad_(False)
        masks = random_masks(model)
        masked = SpyMasks(model, masks)
        before = {name: param.detach().clone() for name, param in model.named_parameters()}
        calls = {"loss": 0, "partition_checked": False}

        seen = set()  # dtypes the first attention projection computed in
        model.model.language_model.layers[0].self_attn.q_proj.register_forward_hook(
            lambda module, args, output: seen.add(output.dtype))

        def loss_fn(prepared, batch):
            calls["loss"] += 1
            assert model.is_activation_checkpointing == checkpointing
            if case.startswith("zero"):
                assert masked.params[0].dtype == torch.bfloat16, "DeepSpeed bf16 is not on"
                _check_fp32_masters(masked)  # what DeepSpeed trains and checkpoints, not only the 16-bit copy
                if case == "zero3" and not calls["partition_checked"]:
                    _check_partitioned(masked)
                    calls["partition_checked"] = True
            return prepared(**batch).loss

        use_cache = model.config.text_config.use_cache
        for run in range(runs):  # a second run: other batch size, same MaskedParameters
            calls["loss"], masked.calls = 0, [0] * len(masked.masks)
            result = train(model, data, section(mixed_precision=mixed, gradient_checkpointing=checkpointing,
                                                batch_size=4 if run == 0 else 2),
                           loss_fn, seed=run, masks=masked, progress=False)
            assert masked.calls == [calls["loss"]] * len(masked.masks), "each gradient masked exactly once"
            assert masked.full_shaped, "a hook saw a gradient that was not full-shaped"
            assert not masked.attached and not any(param._backward_hooks for param in masked.params)
            batches = math.ceil(len(data) / (PartialState().num_processes * (4 if run == 0 else 2)))
            assert result.steps == 2 * math.ceil(batches / 2)  # 2 epochs, accumulating 2 batches a step
            assert torch.isfinite(torch.tensor(result.last_epoch_loss))
            assert not model.is_activation_checkpointing and model.config.text_config.use_cache == use_cache
        assert seen == ({torch.bfloat16} if mixed == "bf16" else {torch.float32}), seen
        summary["runs"].append(_check(model, masks, masked, before, dtype, data))
        summary["runs"][-1].update(dtype=str(dtype), loss=result.last_epoch_loss, steps=result.steps)
    summary["processes"] = PartialState().num_processes
    summary["device"] = str(PartialState().device)
    return summary


def _check_fp32_masters(masked: MaskedParameters) -> None:
    """DeepSpeed's fp32 master weights: pruned entries exactly zero before every forward."""
    from deepspeed.utils import safe_get_full_fp32_param

    for param, mask in masked.pairs:
        master = safe_get_full_fp32_param(param)
        assert master is not None and torch.all(master.reshape(mask.shape)[~mask] == 0), "an fp32 master revived"


def _check_partitioned(masked: MaskedParameters) -> None:
    """Under ZeRO-3, before a forward: the weights are partitioned, and apply/violations work on partitions."""
    param, mask = masked.params[0], masked.masks[0]
    assert param.numel() == 0 and param.ds_tensor.numel() >= mask.numel() // max(1, param.ds_zero_partition_world_size)
    assert masked.violations() == 0
    start = param.ds_zero_partition_rank * param.ds_tensor.numel()
    local = mask.reshape(-1)[start:start + param.ds_tensor.numel()]
    pruned = int((~local).nonzero()[0])
    with torch.no_grad():
        param.ds_tensor[pruned] = 1.0
    assert masked.violations() == 1
    masked.apply()
    assert param.ds_tensor[pruned] == 0 and masked.violations() == 0


def _check(model, masks, masked, before, dtype, data) -> dict:
    params = dict(model.named_parameters())
    assert masked.violations() == 0
    changed = kept_total = 0
    for name, keep in masks.items():
        param = params[name]
        keep = keep.to(param.device)  # on a GPU the trained model stays there
        assert not hasattr(param, "ds_tensor") and param.shape == keep.shape, f"{name} was left partitioned"
        assert param.dtype == dtype, f"{name} came back as {param.dtype}"
        assert torch.all(param[~keep] == 0), f"{name}: a pruned weight is not exactly zero"
        changed += int((param[keep] != before[name].to(param.device)[keep]).sum())
        kept_total += int(keep.sum())
    assert changed > 0.5 * kept_total, f"only {changed} of {kept_total} kept weights changed"
    batch = {key: torch.stack([row[key] for row in data[:4]]).to(model.device) for key in data[0]}
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss), "the model does not evaluate after training"
    checksum = float(sum(param.detach().double().sum() for param in model.parameters()))
    return {"violations": 0, "kept_changed": changed / kept_total, "checksum": checksum,
            "pruned_fraction": sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())}


# -- the tests -----------------------------------------------------------------------------------------------------
def test_plain_training_keeps_masks_exact_and_hooks_do_not_stack():
    summary = run_case("plain")
    assert [run["violations"] for run in summary["runs"]] == [0]
    assert summary["runs"][0]["pruned_fraction"] == pytest.approx(RATIO, abs=1e-3)


def test_masked_parameters_follow_the_parameter_device_and_keep_boolean_masks():
    model, _ = tiny_llava(num_layers=2)
    masks = random_masks(model)
    masked = MaskedParameters(model, {name: mask.to(torch.uint8) for name, mask in masks.items()})
    assert all(mask.dtype == torch.bool and mask.device.type == "cpu" for mask in masked.masks)
    model.to(torch.bfloat16)  # moved/cast after the masks were made, as accelerate.prepare does
    masked.apply()
    assert masked.violations() == 0
    with masked.gradient_hooks():
        model(**{key: torch.stack([row[key] for row in text_batches()[:2]]) for key in ("input_ids", "labels")}).loss.backward()
    assert not masked.attached
    for param, mask in masked.pairs:
        assert param.grad is not None and torch.all(param.grad[~mask] == 0) and param.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_zero3_partitions_are_masked_with_their_own_slice_of_the_mask(rank):
    """ZeRO-3 layout without DeepSpeed: 35 weights over 3 ranks are 3 flat partitions of 12, the last padded."""
    full = torch.arange(1.0, 36.0).view(5, 7)
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(rank)) > 0.5
    model = torch.nn.Linear(7, 5, bias=False)
    param = model.weight
    param.data = torch.empty(0)
    part = torch.cat([full.view(-1), torch.full((1,), 99.0)])[rank * 12:(rank + 1) * 12].clone()
    param.ds_tensor, param.ds_shape, param.ds_numel = part, full.shape, full.numel()
    param.ds_zero_partition_rank, param.ds_process_group = rank, None
    masked = MaskedParameters(model, {"weight": mask})
    local = torch.cat([mask.view(-1), torch.ones(1, dtype=torch.bool)])[rank * 12:(rank + 1) * 12]
    assert masked.violations() == int((~local).sum())
    masked.apply()
    assert masked.violations() == 0
    assert torch.equal(part, torch.where(local, torch.cat([full.view(-1), torch.full((1,), 99.0)])[rank * 12:(rank + 1) * 12], 0.0))


def test_gradient_checkpointing_on_a_model_without_it_is_a_clear_error():
    from hfprune.errors import HfpruneError
    from hfprune.models import get_adapter

    adapter = get_adapter("lenet5_mini")
    model = adapter.build(adapter.config(10, 1, 32, {}))
    with pytest.raises(HfpruneError, match="does not support gradient checkpointing"):
        train(model, text_batches(), section(gradient_checkpointing=True), lambda m, b: None, seed=0, progress=False)


def _launch(case: str, *launch_args: str, timeout: int = 300) -> list[dict]:
    """Run this file as the worker for ``case`` in fresh process(es); return each process's summary."""
    out = Path(tempfile.mkdtemp(prefix="masked-training-"))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "MASKED_TRAINING_OUT": str(out)}
    command = [sys.executable, *launch_args, str(Path(__file__).resolve()), case]
    if launch_args and launch_args[1] == "torch.distributed.run":
        env["ACCELERATE_USE_CPU"] = "true"  # accelerate launch --cpu starts one process whatever --num_processes says
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(timeout), cwd=ROOT, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summaries = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    shutil.rmtree(out, ignore_errors=True)
    return summaries


def test_bf16_autocast_with_gradient_checkpointing_keeps_masks_exact():
    (summary,) = _launch("bf16_checkpointing")
    assert summary["runs"][0]["violations"] == 0


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_one_cpu_process_keeps_masks_exact(stage):
    """ZeRO-2 (fp32 and bf16-loaded models, a MaskedParameters reused for a second run) and ZeRO-3 (partitioned
    weights, gradient checkpointing), DeepSpeed bf16, launched with accelerate_configs/deepspeed_zero{2,3}.yaml."""
    pytest.importorskip("deepspeed")
    (summary,) = _launch(f"zero{stage}", "-m", "accelerate.commands.launch", "--config_file",
                         str(ROOT / f"accelerate_configs/deepspeed_zero{stage}.yaml"), "--num_processes", "1",
                         "--main_process_port", str(free_port()))
    assert [run["dtype"] for run in summary["runs"]] == ["torch.float32", "torch.bfloat16"]
    assert all(run["violations"] == 0 for run in summary["runs"])


def test_ddp_two_cpu_processes_keep_masks_exact_and_replicas_equal():
    summaries = _launch("ddp", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()))
    assert len(summaries) == 2 and all(summary["processes"] == 2 for summary in summaries)
    assert summaries[0]["runs"][0]["checksum"] == summaries[1]["runs"][0]["checksum"]


def _worker(case: str) -> None:
    if case.startswith("zero"):
        # DeepSpeed's CPU accelerator falls back to gloo without oneCCL, but first probes and JIT-compiles a
        # shared-memory all-reduce op for every process group; no op may be compiled here.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__ = {}
    summary = run_case(case)
    out = Path(os.environ.get("MASKED_TRAINING_OUT", "."))
    (out / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    _worker(sys.argv[1])
