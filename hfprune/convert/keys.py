"""Source checkpoint key names → ``LlavaForConditionalGeneration`` parameter names, and the plan that maps them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Collection, Mapping

from hfprune.errors import HfpruneError

LEGACY_TOWER = "model.vision_tower.vision_tower.vision_model."  # the legacy checkpoint's SigLIP tower
TOWER_TARGET = "model.vision_tower."

# Source key prefix → LlavaForConditionalGeneration parameter prefix; the first matching prefix wins.
LEGACY_KEY_MAP: tuple[tuple[str, str], ...] = (
    (LEGACY_TOWER, TOWER_TARGET),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)
FACTORY_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("vision_tower._vision_tower.vision_model.", "model.vision_tower."),
    ("connector._connector.0.", "model.multi_modal_projector.linear_1."),
    ("connector._connector.2.", "model.multi_modal_projector.linear_2."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)
KEY_MAPS = {"legacy": LEGACY_KEY_MAP, "factory": FACTORY_KEY_MAP}

# Phi's lm_head bias has no target (Llava's lm_head has none): folded into lm_head.weight, see writer.fold_lm_head_bias.
LM_HEAD_BIAS = {"legacy": "lm_head.bias", "factory": "language_model.lm_head.bias"}
FINAL_NORM = {"legacy": "model.final_layernorm", "factory": "language_model.model.final_layernorm"}

# Source keys without a target on purpose (re.fullmatch pattern → reason).
DROPPED_KEYS: tuple[tuple[str, str], ...] = (
    (r".*\.rotary_emb\.inv_freq", "rotary-embedding buffer that some transformers versions saved; rebuilt"),
    (r".*\.embeddings\.position_ids", "position-index buffer that some transformers versions saved; rebuilt"),
)


def target_name(key: str, layout: str) -> str | None:
    """The ``LlavaForConditionalGeneration`` parameter a source key becomes, or None if no prefix matches."""
    for source, target in KEY_MAPS[layout]:
        if key.startswith(source):
            return target + key[len(source):]
    return None


def source_name(target: str, layout: str) -> str:
    """The source key a target parameter comes from (the inverse of :func:`target_name`)."""
    for source, prefix in KEY_MAPS[layout]:
        if target.startswith(prefix):
            return source + target[len(prefix):]
    return target


def dropped_reason(key: str) -> str | None:
    """Why a source key is dropped on purpose, or None if it is not."""
    return next((reason for pattern, reason in DROPPED_KEYS if re.fullmatch(pattern, key)), None)


@dataclass
class ConversionPlan:
    """Which source key becomes which parameter; what is dropped (with why) and folded."""

    renames: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    lm_head_bias: str | None = None


def listed(keys: Collection[str], limit: int = 5) -> str:
    """The first ``limit`` names, sorted, for an error message."""
    names = sorted(keys)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def plan_conversion(source_shapes: Mapping[str, tuple[int, ...]], layout: str,
                    target_shapes: Mapping[str, tuple[int, ...]]) -> ConversionPlan:
    """Map every source key onto exactly one target parameter; HfpruneError on any gap or mismatch."""
    plan = ConversionPlan()
    unknown = []
    for key in source_shapes:
        if key == LM_HEAD_BIAS[layout]:
            plan.lm_head_bias = key
        elif (reason := dropped_reason(key)) is not None:
            plan.dropped[key] = reason
        elif (target := target_name(key, layout)) is not None:
            plan.renames[key] = target
        else:
            unknown.append(key)
    if unknown:
        raise HfpruneError(f"unknown keys in the {layout} checkpoint: {listed(unknown)}; "
                           f"is it a TinyLLaVA-3.1B (Phi-2 + SigLIP) checkpoint in the {layout} layout?")
    unexpected = [key for key, target in plan.renames.items() if target not in target_shapes]
    if unexpected:
        raise HfpruneError(f"unexpected keys in the {layout} checkpoint (no such parameter in the converted model, "
                           f"whose sizes come from config.json): {listed(unexpected)}")
    missing = set(target_shapes) - set(plan.renames.values())
    if missing:
        raise HfpruneError(f"missing keys in the {layout} checkpoint: "
                           f"{listed([source_name(target, layout) for target in missing])} "
                           f"({len(missing)} of the converted model's parameters have no source)")
    for key, target in plan.renames.items():
        _check_shape(key, source_shapes[key], target_shapes[target])
    return plan


def _check_shape(key: str, source: tuple[int, ...], target: tuple[int, ...]) -> None:
    """Shapes agree; the vocabulary rows of the embeddings and lm_head may grow (padded later)."""
    vocab_grows = key.endswith(("embed_tokens.weight", "lm_head.weight")) and source[1:] == target[1:] \
        and source[0] <= target[0]
    if tuple(source) != tuple(target) and not vocab_grows:
        raise HfpruneError(f"shape mismatch for '{key}': the checkpoint has {list(source)}, the converted model "
                           f"(sizes from config.json) expects {list(target)}")


def layer_index(key: str, prefix: str) -> int | None:
    """``i`` for a key ``{prefix}encoder.layers.{i}.…``, else None."""
    start = prefix + "encoder.layers."
    return int(key[len(start):].split(".")[0]) if key.startswith(start) else None


def layer_count(keys: Collection[str], prefix: str) -> int:
    """How many encoder layers the keys under ``prefix`` hold (the highest index + 1; 0 for none)."""
    indices = [index for key in keys if (index := layer_index(key, prefix)) is not None]
    return max(indices) + 1 if indices else 0
