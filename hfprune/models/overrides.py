"""A recipe's ``model.config`` overrides, checked against the family's config before any model is built.

Two checks: :func:`override_problems` (when the recipe is read) compares every key and value with the family
config's own defaults — unknown keys, wrong types, non-finite numbers, and sizes that the family makes positive
set to zero or less; :func:`check_buildable` (once the data fixes channels and image size) builds the model on
the ``meta`` device and runs one forward pass there, so a kernel larger than its input or widths that do not
fit together fail in milliseconds, with no memory allocated, instead of deep inside weight init or training.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from transformers import PretrainedConfig

from hfprune.errors import HfpruneError, reason

MAX_SIZE = 1 << 20  # no width, count or size of a model a recipe builds from scratch is larger


def _own_defaults(config_class: type[PretrainedConfig]) -> dict[str, Any]:
    """The config's own keyword arguments and their defaults (None where it has none)."""
    parameters = inspect.signature(config_class.__init__).parameters.values()
    return {p.name: None if p.default is p.empty else p.default for p in parameters
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value_problem(key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot replace the family's ``default`` for ``key``, or None."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"model.config.{key} must be true or false, got {value!r}"
    if _is_int(default):
        if not _is_int(value):
            return f"model.config.{key} must be a whole number, got {value!r}"
        low = 1 if default >= 1 else 0
        if not low <= value <= MAX_SIZE:
            return f"model.config.{key} must be in {low}..{MAX_SIZE:,}, got {value}"
        return None
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"model.config.{key} must be a finite number, got {value!r}"
        return None
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"model.config.{key} must be a list like {list(default)}, got {value!r}"
        if default and all(_is_int(item) and item >= 1 for item in default):
            bad = [item for item in value if not (_is_int(item) and 1 <= item <= MAX_SIZE)]
            if bad:
                return f"model.config.{key} must list whole numbers in 1..{MAX_SIZE:,}, got {list(value)}"
        return None
    if isinstance(default, str) and not isinstance(value, str):
        return f"model.config.{key} must be text, got {value!r}"
    return None


def override_problems(family: str, config_class: type[PretrainedConfig], overrides: dict[str, Any]) -> list[str]:
    """Every problem of ``overrides`` for a config of ``config_class`` (family ``family``), one phrase each."""
    own = _own_defaults(config_class)
    built = config_class()
    defaults = {**built.to_dict(), **{key: value for key, value in own.items() if value is not None}}
    # a keyword defaulting to None may still be a size the built config sets (e.g. num_labels from id2label)
    defaults.update({key: getattr(built, key) for key, value in own.items()
                     if value is None and defaults.get(key) is None and getattr(built, key, None) is not None})
    known = set(defaults) | set(own)
    problems = []
    for key, value in overrides.items():
        if key not in known:
            problems.append(f"unknown key '{key}' in model.config; {family}'s config takes: {', '.join(own)}")
            continue
        problem = _value_problem(key, value, defaults.get(key))
        if problem:
            problems.append(problem)
    return problems


def _dummy_inputs(config: PretrainedConfig) -> dict[str, torch.Tensor] | None:
    """One image of the config's channels and size, on the meta device; None where the config says neither."""
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if not _is_int(channels) or not _is_int(size):
        return None
    return {"pixel_values": torch.zeros(1, channels, size, size, device="meta")}


def check_buildable(model_class: type, config: PretrainedConfig) -> None:
    """Build ``model_class(config)`` on the meta device and run one forward pass there; any failure is one
    HfpruneError line about model.config."""
    try:
        with torch.device("meta"):
            model = model_class(config)
        inputs = _dummy_inputs(config)
        if inputs is not None:
            with torch.no_grad():
                model.eval()(**inputs)
    except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError, AssertionError) as error:
        raise HfpruneError(f"model.config: a {config.model_type} model cannot be built with these settings "
                           f"({reason(error, 200)}); check the widths, kernel size and image size") from None
