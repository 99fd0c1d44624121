"""One-shot unstructured pruning of a checkpoint: ``hfprune prune unstructured MODEL --method wanda --sparsity 0.5``.

Any causal LM, vision-language model or ViT-like vision encoder transformers' Auto classes load (its family found
by structure, :mod:`hfprune.models.generic`) has single weights of its target Linears zeroed — by default the
Linears of its transformer blocks (a VLM's language model only) — with any registered unstructured method, in any
N:M pattern the method allows. Calibration-aware methods (Wanda, OWL, SparseGPT, activation scores) and
``--loss-samples`` read data of the model's kind:

- a causal LM: a local text source (:func:`hfprune.data.text.read_texts`) cut into ``seqlen``-token blocks drawn
  with the seed as Wanda and SparseGPT draw C4 (:func:`hfprune.data.text.token_blocks`);
- a vision-language model: LLaVA-1.5 conversations with their images, rendered with the model's own processor and
  chat template, answers supervised (:func:`hfprune.data.chat.load_conversations`);
- a vision encoder: the images of a folder, or of a registered image dataset, as its image processor prepares them.

The output is a checkpoint of the same class that plain ``transformers`` loads with the model's own Auto class, its
processor (or tokenizer, or image processor), a model card with the overall and per-block sparsity, and
``hfprune_pruning.json`` with the facts. :func:`listed_targets` says what would be pruned without loading weights.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from hfprune.errors import HfpruneError
from hfprune.export.cards import unstructured_card
from hfprune.io import save_atomically
from hfprune.models import adapter_for_checkpoint, model_type_of
from hfprune.models.base import UnstructuredAdapter
from hfprune.models.generic.causal_lm import CausalLMAdapter
from hfprune.models.generic.vision_encoder import VisionEncoderAdapter
from hfprune.models.generic.vision_language import VisionLanguageAdapter
from hfprune.models.structure import CAUSAL_LM, VISION_ENCODER, VISION_LANGUAGE, auto_class_name
from hfprune.oneshot.structured import check_out_dir
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured import Target, list_targets, method_from
from hfprune.pruning.unstructured.offload import check_offload, empty_model, prune_from_disk, prune_on_cpu
from hfprune.report.sparsity import mask_counts, sparsity_facts

GENERIC = (CausalLMAdapter, VisionLanguageAdapter, VisionEncoderAdapter)
DEFAULT_SEQLEN = 2048  # Wanda's and SparseGPT's calibration length (capped at the model's context)
DATA_HELP = {CAUSAL_LM: "--calibration-data TEXT (a .txt, .jsonl/.json with a 'text' field, or a save_to_disk "
                        "dataset)",
             VISION_LANGUAGE: "--calibration-data LLAVA_JSON with --image-root DIR",
             VISION_ENCODER: "--calibration-data IMAGE_DIR (or a registered image dataset, e.g. imagenet_1k with "
                             "--calibration-path DIR)"}


def unstructured_adapter(source: str) -> UnstructuredAdapter:
    """The family that prunes ``source`` weight by weight: its own when it has one, else the family found by
    structure for its kind (a ViT, whose own family prunes structurally, is a vision encoder here)."""
    adapter = adapter_for_checkpoint(source)
    if isinstance(adapter, UnstructuredAdapter):
        return adapter
    model_type = model_type_of(source)
    generic = next((family for family in GENERIC if family.handles(model_type)), None)
    if generic is None:
        raise HfpruneError(f"model '{source}' is a {adapter.name} model, which hfprune does not prune weight by "
                           "weight: use --structure (unstructured methods prune causal LMs, vision-language models "
                           "and ViT-like encoders)")
    return generic(adapter.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Calibration data of each kind of model


def instruction_subset(data_path: str, image_root: str | None, processor, model, samples: int, seed: int):
    """``samples`` conversations of a LLaVA-1.5 JSON (a deterministic subset in ``seed``), tokenised for ``model``."""
    from torch.utils.data import Subset

    from hfprune.data.chat import load_conversations
    from hfprune.data.llava import subsample

    if processor is None:
        raise HfpruneError("--calibration-data needs the model's processor (tokenizer and image processor) "
                           "saved beside it")
    if image_root is None:
        raise HfpruneError("--calibration-data needs --image-root, the folder its image paths are relative to")
    data = load_conversations(data_path, image_root, processor,
                              image_seq_length=getattr(model.config, "image_seq_length", None))
    return Subset(data, subsample(len(data), min(samples, len(data)), seed))


def text_blocks(data_path: str, tokenizer, samples: int, seqlen: int, seed: int):
    """``samples`` blocks of ``seqlen`` tokens of a local text source (:mod:`hfprune.data.text`)."""
    from hfprune.data.text import TokenBlocks, read_texts, token_blocks

    if tokenizer is None:
        raise HfpruneError("--calibration-data needs the model's tokenizer saved beside it")
    return TokenBlocks(token_blocks(tokenizer, read_texts(data_path), samples, seqlen, seed))


def encoder_images(data: str, path: str | None, image_processor, model, samples: int, seed: int, source: str):
    """``samples`` images of a folder, or of a registered dataset's train split, prepared for ``model`` (of
    ``source``): a folder's by its image processor; a dataset's as the dataset loads (ImageNet: by the model's image
    processor; datasets held in memory: resized and normalised by their own statistics)."""
    from hfprune.data.images import ImageFiles, image_files
    from hfprune.data.llava import subsample

    if Path(data).is_dir():
        if image_processor is None:
            raise HfpruneError("--calibration-data IMAGE_DIR needs the model's image processor saved beside it")
        files = image_files(data)
        return ImageFiles([files[index] for index in subsample(len(files), min(samples, len(files)), seed)],
                          image_processor)
    from hfprune.data.registry import load_image_classification

    size = getattr(model.config, "image_size", 224)
    loaded = load_image_classification(data, path=path, image_size=size if isinstance(size, int) else size[0],
                                       train_limit=samples, test_limit=1, limit_seed=seed,
                                       image_processor=source)
    channels = getattr(model.config, "num_channels", loaded.channels)
    if loaded.channels != channels:
        raise HfpruneError(f"--calibration-data {data} has {loaded.channels}-channel images; the model reads "
                           f"{channels}: give a folder of images or another dataset")
    return loaded.train


@dataclass
class DataFlags:
    """The data flags of ``hfprune prune unstructured``."""

    calibration_data: str | None = None
    image_root: str | None = None
    calibration_path: str | None = None
    calibration_samples: int = 128
    loss_samples: int = 0
    seqlen: int | None = None


def check_data_flags(kind: str, flags: DataFlags, needs_data: bool, method: str) -> None:
    """Every data flag that does not fit the model's kind, or is missing, as one HfpruneError line, before any
    model is loaded."""
    how = DATA_HELP[kind]
    if needs_data and flags.calibration_data is None:
        raise HfpruneError(f"--method {method} with these options calibrates on data: give {how}")
    if flags.loss_samples > 0 and kind == VISION_ENCODER:
        raise HfpruneError("--loss-samples measures a language model's pruned train loss; a vision encoder has none "
                           "to measure: drop it")
    if flags.loss_samples > 0 and flags.calibration_data is None:
        raise HfpruneError(f"--loss-samples needs {how}")
    if flags.image_root is not None and kind != VISION_LANGUAGE:
        raise HfpruneError(f"--image-root is the image folder of vision-language conversations; this {kind} model "
                           f"calibrates on {how.split(' ', 1)[1]}: drop --image-root")
    if flags.seqlen is not None and kind != CAUSAL_LM:
        raise HfpruneError(f"--seqlen sets the token blocks of a causal LM's text; this {kind} model calibrates on "
                           f"{how.split(' ', 1)[1]}: drop --seqlen")
    if flags.calibration_path is not None and kind != VISION_ENCODER:
        raise HfpruneError("--calibration-path is the local copy of a registered image dataset (vision encoders); "
                           "drop it")
    if flags.calibration_data is not None and kind != VISION_ENCODER and not Path(flags.calibration_data).exists():
        raise HfpruneError(f"--calibration-data '{flags.calibration_data}' not found: give {how}")
    if kind == VISION_LANGUAGE and flags.calibration_data is not None and flags.image_root is None:
        raise HfpruneError("--calibration-data needs --image-root, the folder its image paths are relative to")


def _seqlen(model, asked: int | None) -> int:
    context = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    if asked is None:
        return min(DEFAULT_SEQLEN, context) if isinstance(context, int) else DEFAULT_SEQLEN
    if isinstance(context, int) and asked > context:
        raise HfpruneError(f"--seqlen {asked} exceeds the model's context of {context} tokens "
                           "(max_position_embeddings); give at most that")
    return asked


def data_sets(kind: str, flags: DataFlags, processor, model, seed: int, source: str) -> tuple[Any, Any, str | None]:
    """(calibration set, loss set, what the calibration data was) for a model of ``kind`` (of ``source``)."""
    data = flags.calibration_data
    if data is None:
        return None, None, None
    samples, losses = flags.calibration_samples, flags.loss_samples
    if kind == CAUSAL_LM:
        seqlen = _seqlen(model, flags.seqlen)
        tokenizer = getattr(processor, "tokenizer", processor)
        calibration = text_blocks(data, tokenizer, samples, seqlen, seed)
        loss = text_blocks(data, tokenizer, losses, seqlen, seed + 1) if losses else None
        return calibration, loss, f"{data}: {len(calibration)} blocks of {seqlen} tokens"
    if kind == VISION_LANGUAGE:
        calibration = instruction_subset(data, flags.image_root, processor, model, samples, seed)
        loss = instruction_subset(data, flags.image_root, processor, model, losses, seed + 1) if losses else None
        return calibration, loss, f"{data}: {len(calibration)} conversations"
    image_processor = getattr(processor, "image_processor", processor)
    calibration = encoder_images(data, flags.calibration_path, image_processor, model, samples, seed, source)
    return calibration, None, f"{data}: {len(calibration)} images"


# ---------------------------------------------------------------------------------------------------------------
# Listing and pruning


def meta_model(adapter: UnstructuredAdapter, source: str) -> torch.nn.Module:
    """The model of ``source`` built from its config alone, on torch's meta device (no weights read)."""
    config = adapter.load_config(source)
    with torch.device("meta"):
        return adapter.build(config)


def listed_targets(source: str, targets: Sequence[str] | None = None, ignore: Sequence[str] = ()) -> list[Target]:
    """What ``hfprune prune unstructured`` would prune in ``source`` (name, shape, block, role), found on the model
    built from its config on the meta device."""
    adapter = unstructured_adapter(source)
    return list_targets(meta_model(adapter, source), targets, ignore or ())


def prune_unstructured_checkpoint(
    source: str,
    method: str,
    sparsity: float,
    out: str | Path,
    *,
    options: dict[str, Any] | None = None,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    calibration_data: str | None = None,
    image_root: str | None = None,
    calibration_path: str | None = None,
    calibration_samples: int = 128,
    loss_samples: int = 0,
    seqlen: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
    offload: str | None = None,
) -> dict[str, Any]:
    """Prune ``source`` with ``method`` (its ``options`` validated by the method's class) at ``sparsity`` and write
    the result to ``out``; returns the facts.

    With ``calibration_data`` (of the model's kind, module docstring), calibration-aware methods read
    ``calibration_samples`` of it in batches of ``batch_size``, and ``loss_samples`` > 0 measures the pruned train
    loss of a language model on that many more. ``device`` (e.g. ``cuda``) is where the model is scored,
    calibrated and masked [default: where it loads, the CPU]. ``offload`` (``cpu`` or ``disk``) puts one decoder
    layer at a time on ``device`` and keeps the rest on the CPU, or on disk: read block by block from ``source``'s
    safetensors files and written back the same way into ``out`` (:mod:`hfprune.pruning.unstructured.offload`).
    """
    chosen = method_from(method, **(options or {}))
    target_device = _device(device) if device is not None else None
    if not 0 < sparsity < 1:
        raise HfpruneError(f"--sparsity must be in (0, 1), got {sparsity}")
    chosen.check_sparsity(sparsity)
    if offload is not None:
        check_offload(chosen, offload, source)
    if loss_samples > 0 and offload == "disk":
        raise HfpruneError("--loss-samples runs the whole pruned model, which --offload disk never loads: use "
                           "--offload cpu, or drop --loss-samples")
    flags = DataFlags(calibration_data, image_root, calibration_path, calibration_samples, loss_samples, seqlen)
    adapter = unstructured_adapter(source)
    check_data_flags(adapter.kind, flags, chosen.needs_calibration, method)
    out = check_out_dir(out, source)
    model = empty_model(source) if offload == "disk" else adapter.load_pretrained(source)
    processor = adapter.load_processor(source, required=False)
    if target_device is not None and offload is None:
        model.to(target_device)
    listed = list_targets(model, targets, ignore)  # bad regexes fail before the data is read
    calibration_set, loss_set, described = data_sets(adapter.kind, flags, processor, model, seed, source)
    calibration = None
    if calibration_set is not None and chosen.needs_calibration:
        from hfprune.train.trainer import make_loader

        calibration = make_loader(calibration_set, batch_size, shuffle=False, seed=seed)
    partial = out.with_name(out.name + ".partial")
    if offload == "disk":  # weights read and written block by block; the rest below writes beside them
        pruned = prune_from_disk(source, chosen, sparsity, partial, calibration=calibration, targets=targets,
                                 ignore=ignore, device=target_device, model=model, progress=progress)
        counts, parameters, nonzero = pruned.counts, pruned.parameters, pruned.nonzero
    else:
        result = (prune_on_cpu(model, chosen, sparsity, calibration=calibration, device=target_device,
                               targets=targets, ignore=ignore, progress=progress) if offload == "cpu" else
                  chosen.masks(model, sparsity, targets=targets, ignore=ignore, calibration=calibration,
                               progress=progress))
        MaskedParameters(model, result.masks).apply()
        counts = mask_counts(result.masks)
        parameters = sum(param.numel() for param in model.parameters())
        nonzero = sum(int(torch.count_nonzero(param)) for param in model.parameters())
    metrics, directions = {}, {}
    if loss_set is not None:
        from hfprune.evaluation.lm_loss import pruned_train_loss

        measured = pruned_train_loss(model, loss_set, batch_size=batch_size, progress=progress)
        metrics = {"pruned_train_loss": measured["loss"], "pruned_train_tokens": measured["tokens"]}
        directions = {"pruned_train_loss": False}
    pattern = chosen.pattern
    command = f"hfprune prune {source} --method {method} --sparsity {sparsity:g}" + \
        (f" --pattern {pattern}" if pattern else "")
    blocks = {f"{target.name}.weight": target.block for target in listed}
    facts = {"source": source, "family": adapter.name,
             "title": f"{source} — {method.upper()} at sparsity {sparsity:g}{f' ({pattern})' if pattern else ''} "
                      "(hfprune)",
             "method": method, "requested_sparsity": sparsity, "pattern": pattern, "command": command, "seed": seed,
             "targets": list(targets) if targets else None, "ignore": list(ignore), "calibration": described,
             "metrics": metrics, "higher_is_better": directions, "parameters": parameters,
             "nonzero_parameters": nonzero, "model_class": type(model).__name__, "auto_class": auto_class_name(model),
             "options": chosen.options(), **sparsity_facts(counts, blocks), "out": str(out)}

    def write_companions(folder: Path) -> None:
        if processor is not None:
            processor.save_pretrained(folder)
        unstructured_card(facts, adapter).write(folder)
        (folder / "hfprune_pruning.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")

    if offload == "disk":
        write_companions(partial)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    else:
        save_atomically(model, out, extras=[write_companions])
    return facts


def _device(name: str) -> torch.device:
    """``name`` as a torch device this machine has; a bad or missing one is an HfpruneError naming --device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HfpruneError(f"--device '{name}' is not a torch device; give cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HfpruneError(f"--device {name}: torch sees no CUDA GPU here; drop --device to prune on the CPU")
    return device
