"""Every unstructured method on every architecture of tests/tiny_models.py, through the method classes' ``masks``
with plain-tensor calibration batches: per-layer sparsity as asked (N:M exact per group), untargeted parameters
bit-identical, the pruned model still runs forward and ``generate``, layer-by-layer calibration replays the blocks
exactly as the model runs them, and saved checkpoints reload with the plain Auto class in a fresh process."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from fresh_process import assert_reload_in_fresh_process
from tiny_models import ARCHITECTURES, calibration_batches
from hfprune.models.structure import auto_class_name, find_blocks
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured import method_from, select_targets
from hfprune.pruning.unstructured.calibration import DecoderStack, LayerwiseCalibration

S = 0.5
NAMES = list(ARCHITECTURES)
METHODS = {"ump": {}, "gmp": {}, "onp": {}, "pnp": {}, "wanda": {}, "owl": {}, "sparsegpt": {},
           "wanda-2:4": {"granularity": "2:4"}, "sparsegpt-2:4": {"granularity": "2:4"}}


@functools.cache
def prepared(name: str) -> tuple[nn.Module, list[dict]]:
    arch = ARCHITECTURES[name]
    model = arch.build()
    return model, calibration_batches(arch, model)


def method_of(label: str):
    return method_from(label.split("-")[0], **METHODS[label])


def first_output(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def check_sparsity(method, result, linears: dict[str, nn.Linear], blocks) -> None:
    """Each Linear pruned as its allocation asked, up to rounding per Linear (or per row); N:M exact per group."""
    granularity = method.options().get("granularity")
    for name, linear in linears.items():
        mask = result.masks[f"{name}.weight"]
        rows, columns = mask.shape
        pruned = int((~mask).sum())
        ratio = result.layer_ratios[name]
        if method.pattern:
            zeros = (~mask).reshape(rows, columns // 4, 4).sum(-1)
            assert bool((zeros == 2).all()), name
        elif granularity == "row":
            assert pruned == rows * num_pruned(columns, ratio), name
        elif method.name == "gmp":
            continue
        else:
            assert pruned == num_pruned(mask.numel(), ratio), name
    total = sum(linear.weight.numel() for linear in linears.values())
    if method.name == "gmp":
        assert result.pruned == num_pruned(total, S)
    weighted = sum(result.layer_ratios[name] * linear.weight.numel() for name, linear in linears.items()) / total
    assert weighted == pytest.approx(S, abs=1e-9 if method.name != "gmp" else 1 / total)
    if result.group_scores:  # per-block allocations (ONP, PNP, OWL): one score and one ratio per block
        assert set(result.group_scores) == {blocks.name(index) for index in range(len(blocks))}
        for index in range(len(blocks)):
            in_block = {result.layer_ratios[name] for name in linears if blocks.index_of(name) == index}
            assert len(in_block) == 1


@pytest.mark.parametrize("label", list(METHODS))
@pytest.mark.parametrize("name", NAMES)
def test_every_method_prunes_every_architecture(name, label):
    arch = ARCHITECTURES[name]
    dense, batches = prepared(name)
    model = copy.deepcopy(dense)
    before = {key: value.detach().clone() for key, value in model.named_parameters()}
    method = method_of(label)
    result = method.masks(model, S, calibration=batches if method.needs_calibration else None)
    linears = select_targets(model)
    blocks = find_blocks(model)
    assert set(result.masks) == {f"{name}.weight" for name in linears}
    check_sparsity(method, result, linears, blocks)
    result.apply(model)
    for key, parameter in model.named_parameters():
        if key in result.masks:
            mask = result.masks[key]
            assert not parameter[~mask].any()
            assert torch.equal(parameter[mask], before[key][mask]) != method.updates_weights, key
        else:
            assert torch.equal(parameter.view(torch.uint8), before[key].view(torch.uint8)), key
    assert first_output(model, batches[0]).isfinite().all()
    if arch.kind != "vision_encoder":
        batch = batches[0]
        generated = model.generate(**batch, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        assert generated.shape == (batch["input_ids"].shape[0], batch["input_ids"].shape[1] + 2)


@pytest.mark.parametrize("name", NAMES)
def test_layer_by_layer_calibration_replays_the_blocks_as_the_model_runs_them(name):
    """The first block's captured inputs, advanced block by block with each block's own captured arguments, are the
    inputs every block gets in the model's forward (Gemma's sliding and global layers get different masks and
    rotary embeddings)."""
    model, batches = prepared(name)
    blocks = find_blocks(model)
    real: list[list[torch.Tensor]] = []

    def record(module, args, kwargs):
        real[-1].append(args[0] if args else kwargs["hidden_states"])

    handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in blocks.layers]
    try:
        with torch.no_grad():
            for batch in batches:
                real.append([])
                model(**batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        calibrated = LayerwiseCalibration(model, DecoderStack(blocks.path, blocks.layers), batches)
        assert len(calibrated.inputs) == len(batches)
        for index, layer in enumerate(blocks.layers):
            for inputs, seen in zip(calibrated.inputs, real):
                torch.testing.assert_close(inputs.hidden, seen[index], rtol=0, atol=1e-6)
            calibrated.advance(index, layer)


def test_pruned_checkpoints_reload_with_the_plain_auto_class(tmp_path):
    """One method per architecture (all methods in turn), saved with save_pretrained, reloaded in one fresh process
    with the Auto class of auto_class_name: the class, every target's zeros and the outputs are the same."""
    checkpoints = []
    labels = list(METHODS)
    for position, name in enumerate(NAMES):
        dense, batches = prepared(name)
        model = copy.deepcopy(dense)
        method = method_of(labels[position % len(labels)])
        result = method.masks(model, S, calibration=batches if method.needs_calibration else None)
        result.apply(model)
        path = tmp_path / name
        model.save_pretrained(path)
        parameters = dict(model.named_parameters())
        zeros = {key: int((parameters[key] == 0).sum()) for key in result.masks}
        assert all(count >= int((~result.masks[key]).sum()) for key, count in zeros.items())
        checkpoints.append({"path": path, "auto_class": auto_class_name(model), "model_class": type(model).__name__,
                            "zeros": zeros, "inputs": batches[0], "outputs": first_output(model, batches[0])})
    assert_reload_in_fresh_process(tmp_path, checkpoints)
