"""``hfprune convert tinyllava``: a TinyLLaVA-3.1B source opened, planned and written as a Llava checkpoint."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, LlavaForConditionalGeneration, PhiConfig, SiglipVisionConfig

from hfprune.errors import HfpruneError
from hfprune.convert.configs import (
    check_layout,
    detect_layout,
    llava_config,
    source_vision_config,
    text_config_from_source,
)
from hfprune.convert.keys import plan_conversion
from hfprune.convert.processor import IMAGE_TOKEN, build_processor, load_tokenizer
from hfprune.convert.source import (
    MergedWeights,
    SourceWeights,
    read_source_config,
    resolve_source,
    weight_files,
)
from hfprune.convert.tower import (
    LegacyTower,
    check_whole_tower,
    find_legacy_tower,
    separate_tower_weights,
    without_tower,
)
from hfprune.convert.writer import MAX_SHARD_BYTES, resolve_dtype, write_weights


def _check_out(out: Path) -> None:
    """HfpruneError when ``out`` exists and is not an empty directory."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HfpruneError(f"--out {out} is not empty; give a new or empty directory")


def _fresh_partial(out: Path) -> Path:
    """An empty ``OUT.partial`` beside ``out``, renamed to ``out`` once everything is written."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


@dataclass
class Source:
    """A TinyLLaVA checkpoint opened for conversion: its tensors (with a separate legacy tower's) and configs."""

    directory: Path
    config: dict
    layout: str
    weights: SourceWeights | MergedWeights
    shapes: dict[str, tuple[int, ...]]
    text: PhiConfig
    vision: SiglipVisionConfig
    tower: LegacyTower | None = None  # legacy only


def open_source(source: str | Path, layout: str = "auto", vision_tower: str | Path | None = None) -> Source:
    """The checkpoint (local directory or Hub id) with its layout told, its configs read and checked and,
    for a legacy checkpoint, its vision tower found (:func:`find_legacy_tower`)."""
    directory = resolve_source(source)
    config = read_source_config(directory)
    weights = SourceWeights(weight_files(directory))
    shapes = weights.shapes()
    layout = detect_layout(config, shapes) if layout == "auto" else layout
    text = text_config_from_source(config, layout)
    if layout != "legacy":
        if vision_tower is not None:
            raise HfpruneError("--vision-tower is for the legacy layout only; a factory checkpoint holds its tower")
        return Source(directory, config, layout, weights, shapes, text, source_vision_config(config, layout))
    tower = find_legacy_tower(config, directory, shapes, vision_tower)
    vision = source_vision_config(config, layout, tower.directory)
    if tower.separate:
        weights = MergedWeights([SourceWeights(weights.files, rename=without_tower),
                                 separate_tower_weights(tower.directory, vision)])
        shapes = weights.shapes()
    return Source(directory, config, layout, weights, shapes, text, vision, tower)


def convert_tinyllava(source: str | Path, out: str | Path, *, layout: str = "auto", dtype: str = "auto",
                      vision_tower: str | Path | None = None, progress: bool = True,
                      max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Convert a TinyLLaVA-3.1B checkpoint (local directory or Hub id) into ``out``; return ``out``.

    ``out`` then loads with plain ``LlavaForConditionalGeneration.from_pretrained`` and
    ``LlavaProcessor.from_pretrained``. ``layout``: auto, legacy or factory; ``dtype``: auto (as stored),
    float16, bfloat16 or float32; ``vision_tower`` (legacy only): a SigLIP checkpoint (directory or Hub id) whose
    tower replaces the checkpoint's own; without it a legacy checkpoint's own tower, else the one its
    ``mm_vision_tower`` names (see :mod:`hfprune.convert`). Source tensors are read one shard at a time
    and written in shards of at most ``max_shard_bytes``, so memory holds one output shard, never the whole model.
    """
    out = Path(out).expanduser()
    resolved_dtype = resolve_dtype(dtype)
    if layout != "auto":
        check_layout(layout)
    _check_out(out)
    src = open_source(source, layout, vision_tower)
    tokenizer = load_tokenizer(src.directory, src.config, src.text)
    llava = llava_config(src.config, src.layout, src.shapes, vision=src.vision, vocab_size=len(tokenizer),
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava)
    targets = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    if src.tower is not None:
        check_whole_tower(src.shapes, targets, src.tower)
    plan = plan_conversion(src.shapes, src.layout, targets)
    tower_dir = src.tower.directory if src.tower is not None else None
    partial = _fresh_partial(out)
    try:
        llava.dtype = write_weights(src.weights, plan, src.layout, model, partial, resolved_dtype, progress,
                                    max_shard_bytes)
        llava.architectures = ["LlavaForConditionalGeneration"]
        llava.save_pretrained(partial)
        GenerationConfig(bos_token_id=llava.text_config.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id).save_pretrained(partial)
        build_processor(src.directory, src.config, tokenizer, llava, tower_dir).save_pretrained(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out
