"""Which Linear layers an unstructured method prunes, and which decoder layer each belongs to."""

from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from hfprune.errors import HfpruneError

_LAYER = re.compile(r"layers\.(\d+)\.")


def _compile(patterns: Iterable[str], role: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as error:
            raise HfpruneError(f"invalid {role} regex {pattern!r}: {error}") from None
    return compiled


def _as_list(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _name_shapes(names: Iterable[str], limit: int = 8) -> list[str]:
    """Distinct names with layer indices replaced by N, to show what exists without listing every layer."""
    shapes = dict.fromkeys(re.sub(r"\.\d+\.", ".N.", name) for name in names)
    return list(shapes)[:limit]


def default_targets(model: nn.Module) -> list[str]:
    """The target regexes of the model's family (e.g. a Llava's language-model decoder Linears)."""
    from hfprune.models import adapter_for_model_type

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    adapter = adapter_for_model_type(model_type)
    targets = getattr(adapter, "default_targets", None)
    if not targets:
        raise HfpruneError(f"hfprune has no default unstructured targets for a '{model_type}' model; name the "
                           "Linear layers to prune with targets (regexes, e.g. r'.*\\.mlp\\.fc1')")
    return list(targets)


def select_targets(model: nn.Module, targets: str | Iterable[str] | None = None,
                   ignore: str | Iterable[str] = ()) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose full name ``re.fullmatch``es a ``targets`` regex and no ``ignore`` regex,
    in model order; ``targets=None`` means the model family's :func:`default_targets`."""
    target_texts = default_targets(model) if targets is None else _as_list(targets)
    ignore_texts = _as_list(ignore)
    if not target_texts:
        raise HfpruneError("no target regexes given; pass at least one (e.g. r'.*\\.mlp\\.fc1')")
    wanted, unwanted = _compile(target_texts, "target"), _compile(ignore_texts, "ignore")
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    selected = {name: module for name, module in linears.items()
                if any(p.fullmatch(name) for p in wanted) and not any(p.fullmatch(name) for p in unwanted)}
    if not selected:
        ignored = f" and not ignore {ignore_texts}" if ignore_texts else ""
        raise HfpruneError(f"no Linear layer matches targets {target_texts}{ignored}; this model's Linear layers "
                           f"include {_name_shapes(linears) or 'none'} (N = a layer index)")
    return selected


def layer_group(name: str) -> str:
    """The decoder layer a module belongs to (its name up to ``layers.N``), or the module itself without one."""
    match = _LAYER.search(name)
    return name[:match.end() - 1] if match else name


def layer_index(name: str) -> int | None:
    """The ``N`` of ``layers.N.`` in a module or parameter name, or None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def group_by_layer(names: Iterable[str]) -> dict[str, list[str]]:
    """Module names grouped by :func:`layer_group`, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(layer_group(name), []).append(name)
    return groups
