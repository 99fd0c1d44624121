"""The correctness checks of benchmarks/gpu_suite.py, each on one device and returning its figures.

- masked retraining keeps pruned weights exactly zero: the masked-training test's own worker
  (``tests/test_masked_training.run_case``) on whatever device Accelerate picks;
- gated == weight-masked == physically pruned logits for any structured family (one random mask at 0.5 per group);
- ``hfprune prune`` through the real CLI: structured (ViT heads + FFN) and unstructured (LLaVA decoder Linears,
  every registered method), each result loaded back and checked on the device.

Sizes come from :class:`Sizes`: full (ViT-B/16, Phi-2's decoder shape) on a GPU, tiny for ``--cpu-dry-run``.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch


class Skip(Exception):
    """A step that cannot run here (e.g. its model family is not installed): reported ``skipped`` with this text."""


@dataclass(frozen=True)
class Sizes:
    """Model sizes of the checks: ``full()`` on a GPU, ``tiny()`` for the CPU dry run."""

    vit: dict                  # ViTConfig fields (patch, widths, depth, image size)
    vit_batch: int
    llava: dict                # tiny_llava_config fields of the decoder to prune
    llava_dtype: str
    convnet_image: dict        # family -> image size
    equivalence_batch: int

    @staticmethod
    def full(llava_layers: int = 8) -> "Sizes":
        return Sizes(vit=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                              image_size=224, patch_size=16),
                     vit_batch=8,
                     llava=dict(hidden_size=2560, num_layers=llava_layers, vocab_size=51200),
                     llava_dtype="bfloat16", convnet_image={"hf_resnet": 224}, equivalence_batch=8)

    @staticmethod
    def tiny() -> "Sizes":
        return Sizes(vit=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                              image_size=32, patch_size=8),
                     vit_batch=2, llava=dict(hidden_size=64, num_layers=2), llava_dtype="float32",
                     convnet_image={"hf_resnet": 64}, equivalence_batch=2)


# -- masked retraining --------------------------------------------------------------------------------------------
def masked_training(case: str, device: str) -> dict:
    """Retrain the tiny TinyLLaVA with 44% random masks as the masked-training test does (``case``: plain, bf16,
    bf16_checkpointing); its assertions (pruned weights exactly zero, kept weights trained) must hold."""
    from test_masked_training import run_case

    summary = run_case(case)
    if torch.device(summary["device"]).type != torch.device(device).type:
        raise AssertionError(f"trained on {summary['device']}, not on {device}")
    (run,) = summary["runs"]
    return {"device": summary["device"], "violations": run["violations"], "kept_changed": run["kept_changed"],
            "pruned_fraction": run["pruned_fraction"], "loss": run["loss"], "steps": run["steps"]}


# -- gated == masked == physically pruned --------------------------------------------------------------------------
def exact_fp32(device: str) -> None:
    """No TF32 on CUDA, so the three computations differ only by summation order."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


@torch.no_grad()
def perturb_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so that a wrongly sliced BN shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5),
                                      (module.running_mean, -0.2, 0.2), (module.running_var, 0.5, 2.0)):
                tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))


def _family_model(family: str, sizes: Sizes, device: str):
    from hfprune.models import FAMILIES, get_adapter

    if family not in FAMILIES:
        raise Skip("family not installed")
    adapter = get_adapter(family)
    if family == "vit":
        overrides = {key: value for key, value in sizes.vit.items() if key != "image_size"}
        channels, image, labels = 3, sizes.vit["image_size"], 1000
    elif family == "lenet5_mini":
        overrides, channels, image, labels = {}, 1, 32, 10
    else:  # the ConvNet families at their default (paper) depth and width
        overrides, channels, image, labels = {}, 3, sizes.convnet_image.get(family, 32), 100
    torch.manual_seed(0)
    model = adapter.build(adapter.config(labels, channels, image, overrides))
    perturb_batchnorm(model)
    return adapter, model.to(device).eval(), channels, image


def close(reference: torch.Tensor, other: torch.Tensor, what: str) -> float:
    """Max |difference|; an AssertionError naming ``what`` beyond 1e-4 relative to the logits' scale."""
    difference = float((reference.float() - other.float()).abs().max())
    tolerance = 1e-4 * max(1.0, float(reference.abs().max()))
    if not difference <= tolerance:
        raise AssertionError(f"{what}: logits differ by {difference:.3g} (tolerance {tolerance:.3g})")
    return difference


@torch.no_grad()
def equivalence(family: str, device: str, sizes: Sizes) -> dict:
    """One random mask (0.5 of every group): gated logits == weight-masked == physically pruned, on ``device``."""
    from hfprune.pruning.masking import MaskedParameters
    from hfprune.pruning.structured.gates import UnitGates
    from hfprune.pruning.structured.groups import parameter_masks
    from hfprune.pruning.structured.samplers import sample

    exact_fp32(device)
    adapter, model, channels, image = _family_model(family, sizes, device)
    groups = adapter.groups(model.config)
    mask = sample(groups, {name: 0.5 for name in groups}, "gpu_suite", 1, seed=0)[0].mask
    x = torch.randn(sizes.equivalence_batch, channels, image, image,
                    generator=torch.Generator().manual_seed(1)).to(device)
    with UnitGates(model, groups) as gates:
        gates.set_mask(mask)
        gated = model(x).logits
    masked_model = copy.deepcopy(model)
    MaskedParameters(masked_model, parameter_masks(groups, mask, dict(masked_model.named_parameters()))).apply()
    masked = masked_model(x).logits
    pruned = adapter.prune_physically(model, mask).to(device).eval()
    physical = pruned(x).logits
    parameters = sum(p.numel() for p in model.parameters())
    pruned_parameters = sum(p.numel() for p in pruned.parameters())
    if not pruned_parameters < parameters:
        raise AssertionError(f"the physically pruned model is not smaller ({pruned_parameters} >= {parameters})")
    return {"device": str(x.device), "groups": len(groups), "parameters": parameters,
            "pruned_parameters": pruned_parameters, "gated_vs_masked": close(gated, masked, "gated vs masked"),
            "gated_vs_physical": close(gated, physical, "gated vs physically pruned")}


# -- hfprune prune through the CLI ---------------------------------------------------------------------------------
def hfprune_cli(*args: str) -> None:
    """Run ``hfprune ARGS`` in this process as the console script does (an HfpruneError propagates)."""
    import typer

    from hfprune.cli import app

    typer.main.get_command(app).main([str(arg) for arg in args], prog_name="hfprune", standalone_mode=False)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@torch.no_grad()
def prune_vit(work: Path, device: str, sizes: Sizes) -> dict:
    """``hfprune prune`` a random ViT (ViT-B/16 at full size) to heads=0.5,ffn=0.5 with l1; the checkpoint loads
    with plain transformers and its logits on ``device`` equal the dense model's gated by the saved mask."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from hfprune.models import get_adapter
    from hfprune.pruning.structured.gates import UnitGates

    exact_fp32(device)
    dense_dir, out = work / "vit_dense", fresh_dir(work / "vit_pruned")
    torch.manual_seed(0)
    dense = ViTForImageClassification(ViTConfig(**sizes.vit, num_labels=1000)).eval()
    dense.save_pretrained(dense_dir)
    size = sizes.vit["image_size"]
    ViTImageProcessorPil(size={"height": size, "width": size}).save_pretrained(dense_dir)
    hfprune_cli("prune", dense_dir, "--structure", "heads=0.5,ffn=0.5", "--method", "l1", "--out", out)
    mask = {name: tuple(kept) for name, kept in json.loads((out / "hfprune_pruning.json").read_text())["mask"].items()}
    pruned = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True).to(device).eval()
    dense = dense.to(device)
    x = torch.randn(sizes.vit_batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    with UnitGates(dense, get_adapter("vit").groups(dense.config)) as gates:
        gates.set_mask(mask)
        gated = dense(x).logits
    heads = sizes.vit["num_attention_heads"] // 2
    if pruned.config.num_attention_heads_per_layer != [heads] * sizes.vit["num_hidden_layers"]:
        raise AssertionError(f"heads per layer {pruned.config.num_attention_heads_per_layer}, expected {heads} each")
    return {"device": str(x.device), "parameters": sum(p.numel() for p in dense.parameters()),
            "pruned_parameters": sum(p.numel() for p in pruned.parameters()),
            "pruned_vs_gated": close(gated, pruned(x).logits, "pruned checkpoint vs gated dense ViT")}


def llava_checkpoint(work: Path, device: str, sizes: Sizes) -> Path:
    """A random LLaVA with a decoder of ``sizes.llava`` (Phi-2's 2560 × 32 at full size) and its processor, built
    on ``device`` once and reused by every method's step."""
    from hfprune.models.llava.tiny import tiny_llava

    directory = work / "llava_dense"
    if directory.is_dir():
        return directory
    with torch.device(device):  # random init on the GPU: seconds, not minutes, for 2.8B parameters
        model, processor = tiny_llava(**sizes.llava)
    partial = fresh_dir(work / "llava_dense.partial")  # a step killed while saving leaves no half checkpoint
    model.to(getattr(torch, sizes.llava_dtype)).save_pretrained(partial)
    processor.save_pretrained(partial)
    partial.rename(directory)
    return directory


def calibration_fixture(work: Path) -> tuple[Path, Path]:
    """A few LLaVA-1.5 conversations with images, in the real schema (the tests' fixture writer)."""
    from llava_fixtures import write_llava_fixture

    return write_llava_fixture(work / "llava_calibration", n=8)


@torch.no_grad()
def prune_llava(method: str, work: Path, device: str, sizes: Sizes, sparsity: float = 0.4375) -> dict:
    """``hfprune prune --method METHOD --sparsity 0.4375 --device DEVICE`` of the random LLaVA; the saved
    checkpoint has exactly the zeros it reports, the overall sparsity asked for, and evaluates to a finite loss."""
    import time

    from transformers import LlavaForConditionalGeneration

    from hfprune.pruning.unstructured import METHODS, select_targets

    dense_dir = llava_checkpoint(work, device, sizes)
    out = fresh_dir(work / f"llava_{method}")
    args = ["prune", dense_dir, "--method", method, "--sparsity", sparsity, "--out", out, "--device", device,
            "--no-progress"]
    if METHODS[method]().needs_calibration:
        data, images = calibration_fixture(work)
        args += ["--calibration-data", data, "--image-root", images, "--calibration-samples", 4, "--batch-size", 2]
    started = time.perf_counter()
    hfprune_cli(*args)
    seconds = time.perf_counter() - started
    facts = json.loads((out / "hfprune_pruning.json").read_text())
    model = LlavaForConditionalGeneration.from_pretrained(out).to(device).eval()
    targets = select_targets(model)
    zeros = sum(int((linear.weight == 0).sum()) for linear in targets.values())
    weights = sum(linear.weight.numel() for linear in targets.values())
    if facts["target_weights"] != weights:
        raise AssertionError(f"{facts['target_weights']} target weights reported, {weights} in the checkpoint")
    if not zeros >= round(facts["sparsity"] * weights) or abs(zeros / weights - sparsity) > 2e-3:
        raise AssertionError(f"{zeros / weights:.4f} of the target weights are zero; reported "
                             f"{facts['sparsity']:.4f}, asked {sparsity}")
    ids = torch.randint(3, 400, (2, 16), generator=torch.Generator().manual_seed(0)).to(device)
    loss = float(model(input_ids=ids, labels=ids).loss)
    if not torch.isfinite(torch.tensor(loss)):
        raise AssertionError(f"the pruned model's loss is {loss}")
    shutil.rmtree(out, ignore_errors=True)  # several GB at full size
    return {"device": str(ids.device), "target_weights": weights, "sparsity": zeros / weights,
            "parameters": facts["parameters"], "prune_seconds": seconds, "loss": loss}
