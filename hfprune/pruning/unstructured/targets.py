"""Which Linear layers an unstructured method prunes, and which block (decoder layer) each belongs to.

By default the targets are found by walking the model (:func:`hfprune.models.structure.find_blocks`): every
``nn.Linear`` inside the transformer blocks of a causal LM's or VLM's language model (never the vision tower, the
projector, the embeddings or the LM head), or of a vision encoder. Regex ``targets``/``ignore`` given by a user
win. A target's block is the item of the outermost ``nn.ModuleList`` it lies in; one outside every block is a
group of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from torch import nn

from hfprune.errors import HfpruneError
from hfprune.models.structure import block_of, find_blocks

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


def default_targets(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside the model's transformer blocks (:func:`~hfprune.models.structure.find_blocks`),
    by module name, in block order; an HfpruneError naming the fix when the model has no recognisable blocks."""
    return find_blocks(model).linears()


def select_targets(model: nn.Module, targets: str | Iterable[str] | None = None,
                   ignore: str | Iterable[str] = ()) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose full name ``re.fullmatch``es a ``targets`` regex and no ``ignore`` regex,
    in model order; ``targets=None`` means :func:`default_targets` (the Linears of the model's blocks)."""
    ignore_texts = _as_list(ignore)
    unwanted = _compile(ignore_texts, "ignore")
    if targets is None:
        linears, target_texts = default_targets(model), None
        selected = {name: module for name, module in linears.items() if not any(p.fullmatch(name) for p in unwanted)}
    else:
        target_texts = _as_list(targets)
        if not target_texts:
            raise HfpruneError("no target regexes given; pass at least one (e.g. r'.*\\.mlp\\.fc1')")
        wanted = _compile(target_texts, "target")
        linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        selected = {name: module for name, module in linears.items()
                    if any(p.fullmatch(name) for p in wanted) and not any(p.fullmatch(name) for p in unwanted)}
    if not selected:
        asked = "the Linears of the model's blocks" if target_texts is None else f"targets {target_texts}"
        ignored = f" and not ignore {ignore_texts}" if ignore_texts else ""
        raise HfpruneError(f"no Linear layer matches {asked}{ignored}; this model's Linear layers include "
                           f"{_name_shapes(linears) or 'none'} (N = a layer index): change the regexes")
    return selected


@dataclass(frozen=True)
class Target:
    """One Linear an unstructured method would prune: its module name, weight shape, block index and role."""

    name: str
    shape: tuple[int, ...]
    block: int | None  # the index of the block it lies in (None: in no block)
    role: str | None  # q, k, v, qkv, o, gate, up, gate_up, down (hfprune.models.structure), or None


def list_targets(model: nn.Module, targets: str | Iterable[str] | None = None,
                 ignore: str | Iterable[str] = ()) -> list[Target]:
    """What :func:`select_targets` selects, with each Linear's shape, block and role (``hfprune prune
    --list-targets``)."""
    selected = select_targets(model, targets, ignore)
    try:
        blocks = find_blocks(model)
    except HfpruneError:  # user regexes on a model without recognisable blocks: no roles
        blocks = None
    listed = []
    for name, linear in selected.items():
        found = block_of(model, name)
        role = None
        if blocks is not None and (index := blocks.index_of(name)) is not None:
            role = blocks.roles[index].role_of(name[len(blocks.name(index)) + 1:])
        listed.append(Target(name, tuple(linear.weight.shape), found[1] if found else None, role))
    return listed


def block_group(model: nn.Module, name: str) -> str:
    """The block module ``name`` lies in, as its module name (``model.language_model.layers.3``), or ``name``
    itself when it lies in no block (found from the model's ``nn.ModuleList`` s, not from the name)."""
    found = block_of(model, name)
    return f"{found[0]}.{found[1]}" if found else name


def layer_group(name: str) -> str:
    """From a name alone (a record's, with no model at hand): the decoder layer a module belongs to (its name up to
    ``layers.N``), or the module itself without one. With a model, :func:`block_group` is exact."""
    match = _LAYER.search(name)
    return name[:match.end() - 1] if match else name


def layer_index(name: str) -> int | None:
    """The ``N`` of ``layers.N.`` in a module or parameter name, or None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def group_by_layer(names: Iterable[str], model: nn.Module | None = None) -> dict[str, list[str]]:
    """Module names grouped by block, in first-seen order: by :func:`block_group` in ``model``, or by
    :func:`layer_group` (names alone) without one."""
    groups: dict[str, list[str]] = {}
    for name in names:
        key = block_group(model, name) if model is not None else layer_group(name)
        groups.setdefault(key, []).append(name)
    return groups
