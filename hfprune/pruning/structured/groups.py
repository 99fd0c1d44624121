"""Structured groups: prunable units of one kind in one place, what each unit owns, and how many a ratio keeps.

A structured mask is ``{group name: sorted kept indices}``. It converts to per-parameter boolean
masks (for masked training) and to index selections (for physical surgery).

Ratios name a group (``layers.3.heads``), a set the group belongs to (``stage2``: every block of a ResNet
stage), or a kind of group (``heads``, ``ffn``, ``filters``) that stands for every group of that kind; a
group's own entry wins over its set's, a set's over its kind's. A ratio is the fraction of the
group's units to remove, rounded half up (:func:`~hfprune.pruning.counts.num_pruned`, as everywhere in
hfprune).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from hfprune.errors import HfpruneError
from hfprune.pruning.counts import num_pruned

StructuredMask = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class ParamSlice:
    """Unit ``i`` of a group owns indices ``offset + [i*span, (i+1)*span)`` of ``param`` along ``dim`` (``offset``:
    where the group's part of a fused parameter starts, e.g. the keys inside a fused qkv weight).

    With ``unit`` set, the whole parameter belongs to that one unit and goes with it (a decoder layer's weights)."""

    param: str
    dim: int
    span: int = 1
    offset: int = 0
    unit: int | None = None


@dataclass(frozen=True)
class Group:
    """``size`` prunable units (filters, heads, neurons) named ``name``, of kind ``kind``.

    ``owned`` are the slices that disappear with a unit: its own weights and bias, its BN entries
    and the next layer's input channels. ``min_kept`` is the fewest units the model can keep (0 where a
    layer without them still works, e.g. a ViT layer without heads). ``sets`` are further names a ratio may
    give for this group together with others (e.g. its stage), most specific first.

    ``partitions`` > 1 splits the units into that many consecutive equal parts that must keep equally many units
    each (the query heads of the key/value groups of grouped-query attention). ``modules`` name, for groups whose
    units are whole modules (decoder layers), the module of each unit: a pruned one passes its input through.
    """

    name: str
    kind: str
    size: int
    owned: tuple[ParamSlice, ...] = field(default_factory=tuple)
    min_kept: int = 1
    sets: tuple[str, ...] = ()
    partitions: int = 1
    modules: tuple[str, ...] = ()

    @property
    def part_size(self) -> int:
        """Units per partition."""
        return self.size // self.partitions

    def partition_of(self, unit: int) -> int:
        return unit // self.part_size


def batchnorm_slices(prefix: str) -> tuple[ParamSlice, ...]:
    """The entries of BatchNorm ``prefix`` that go with its channels: weight, bias and running statistics."""
    return tuple(ParamSlice(f"{prefix}.{name}", 0) for name in ("weight", "bias", "running_mean", "running_var"))


def conv_filter_group(name: str, size: int, conv: str, bn: str, consumer: str, sets: tuple[str, ...]) -> Group:
    """The filters of ``conv`` (no bias) with their BatchNorm ``bn`` entries and ``consumer``'s input channels."""
    return Group(name, "filters", size, (ParamSlice(f"{conv}.weight", 0), *batchnorm_slices(bn),
                                         ParamSlice(f"{consumer}.weight", 1)), sets=sets)


def _aliases(group: Group) -> tuple[str, ...]:
    """The names other than its own that a ratio may give for ``group``, most specific first."""
    return (*group.sets, group.kind)


def _known_aliases(groups: dict[str, Group]) -> list[str]:
    return list(dict.fromkeys(alias for group in groups.values() for alias in _aliases(group)))


def expand_kinds(groups: dict[str, Group], ratios: Mapping[str, float]) -> dict[str, float]:
    """Replace set keys (``stage2``) and kind keys (``heads``) by the groups they stand for; group names win
    over sets, sets over kinds; keys that are none of these stay as they are (for the caller to report)."""
    aliases = set(_known_aliases(groups))
    expanded = {key: ratio for key, ratio in ratios.items() if key not in aliases or key in groups}
    for name, group in groups.items():
        alias = next((a for a in _aliases(group) if a in ratios and a not in groups), None)
        if name not in expanded and alias is not None:
            expanded[name] = ratios[alias]
    return {name: expanded[name] for name in [*groups, *expanded] if name in expanded}


def expand_ratios(groups: dict[str, Group], ratios: Mapping[str, float]) -> dict[str, float]:
    """Per-group ratios from group names, sets and/or kinds; unknown keys are an HfpruneError."""
    aliases = _known_aliases(groups)
    unknown = [key for key in ratios if key not in groups and key not in aliases]
    if unknown:
        kinds = sorted({group.kind for group in groups.values()})
        sets = [alias for alias in aliases if alias not in kinds]
        named_sets = f", a set ({', '.join(sets)})" if sets else ""
        raise HfpruneError(
            f"unknown structure '{unknown[0]}'; use a kind ({', '.join(kinds)}){named_sets} or a group name "
            f"(e.g. {', '.join(list(groups)[:3])}, ...)"
        )
    expanded = expand_kinds(groups, ratios)
    for name, ratio in expanded.items():
        if not 0 <= ratio <= 1:
            raise HfpruneError(f"ratio of '{name}' must be in [0, 1], got {ratio}")
    return expanded


def kept_counts(groups: dict[str, Group], ratios: Mapping[str, float], where: str = "") -> dict[str, int]:
    """Units kept per group at ``ratios`` (group or kind keys); ``where`` prefixes errors (e.g. the setting).

    A ratio of 0 keeps a group whole. Any other ratio must remove at least one unit and keep at least the
    group's ``min_kept``: a ratio that prunes nothing, or more than the model can lose, is an error.
    """
    aliases = set(_known_aliases(groups))
    unknown = [key for key in ratios if key not in groups and key not in aliases]
    if unknown:
        raise HfpruneError(f"{where}unknown group '{unknown[0]}'; this model's groups are: {', '.join(groups)}")
    counts = {}
    for name, ratio in expand_ratios(groups, ratios).items():
        group = groups[name]
        keep = group.size - num_pruned(group.size, ratio)
        if ratio and (keep == group.size or keep < group.min_kept):
            problem = "removes nothing" if keep == group.size else "removes every unit"
            raise HfpruneError(f"{where}ratio {ratio} of group '{name}' ({group.size} units) {problem}; choose a "
                               f"ratio that keeps {group.min_kept}..{group.size - 1} units")
        check_partitions(group, keep, f"{where}ratio {ratio} of ")
        counts[name] = keep
    return counts


def check_partitions(group: Group, keep: int, what: str = "") -> None:
    """An HfpruneError unless ``keep`` units split evenly over ``group``'s partitions (GQA: every key/value group
    keeps as many query heads)."""
    if group.partitions > 1 and keep % group.partitions:
        valid = [f"{(group.size - k) / group.size:g}" for k in range(group.partitions, group.size, group.partitions)]
        raise HfpruneError(
            f"{what}group '{group.name}' keeps {keep} of {group.size} {group.kind}, which do not split evenly over "
            f"its {group.partitions} key/value groups (each must keep as many query heads); choose a ratio that "
            f"keeps a multiple of {group.partitions} ({', '.join(valid) or 'none'}), or prune whole key/value "
            "groups with kv_groups=RATIO")


def _unit_indices(kept: tuple[int, ...], span: int) -> torch.Tensor:
    kept_tensor = torch.as_tensor(kept, dtype=torch.long)
    return (kept_tensor[:, None] * span + torch.arange(span)).flatten()


def removed_indices(group: Group, piece: ParamSlice, kept: tuple[int, ...]) -> torch.Tensor:
    """Indices along ``piece.dim`` of ``piece.param`` that go when ``group`` keeps only ``kept`` (none for a piece
    owned by one unit: that parameter goes whole or stays whole)."""
    removed = sorted(set(range(group.size)) - set(kept))
    return _unit_indices(tuple(removed), piece.span) + piece.offset


def _removed_units(group: Group, kept: tuple[int, ...]) -> set[int]:
    return set(range(group.size)) - set(kept)


def removed_parameters(groups: dict[str, Group], mask: StructuredMask) -> set[str]:
    """Parameters that go whole with the units ``mask`` removes (e.g. every weight of a removed decoder layer)."""
    gone = set()
    for group_name, kept in mask.items():
        removed = _removed_units(groups[group_name], kept)
        gone |= {piece.param for piece in groups[group_name].owned if piece.unit is not None and piece.unit in removed}
    return gone


def parameter_masks(
    groups: dict[str, Group], mask: StructuredMask, parameters: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Boolean masks (True = kept) for every parameter that ``mask`` touches (buffers such as
    BatchNorm running statistics are left to surgery)."""
    masks: dict[str, torch.Tensor] = {}
    gone = removed_parameters(groups, mask)
    for group_name, kept in mask.items():
        group = groups[group_name]
        for piece in group.owned:
            if piece.param not in parameters:
                continue
            param = parameters[piece.param]
            current = masks.get(piece.param)
            if current is None:
                current = torch.ones_like(param, dtype=torch.bool)
            if piece.unit is not None:
                masks[piece.param] = current & (piece.param not in gone)
                continue
            keep_along_dim = torch.ones(param.shape[piece.dim], dtype=torch.bool, device=param.device)
            keep_along_dim[removed_indices(group, piece, kept).to(param.device)] = False
            shape = [1] * param.ndim
            shape[piece.dim] = -1
            masks[piece.param] = current & keep_along_dim.view(shape)
    return masks


def kept_index_selection(
    groups: dict[str, Group], mask: StructuredMask, shapes: dict[str, torch.Size]
) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """For physical surgery: per parameter (of ``shapes``), the ``(dim, kept indices)`` selections to apply, one
    per dimension that loses indices (whole parameters that go: :func:`removed_parameters`)."""
    removed: dict[str, dict[int, set[int]]] = {}
    for group_name, kept in mask.items():
        group = groups[group_name]
        for piece in group.owned:
            if piece.unit is None and piece.param in shapes:
                gone = removed.setdefault(piece.param, {}).setdefault(piece.dim, set())
                gone.update(removed_indices(group, piece, kept).tolist())
    return {param: [(dim, torch.tensor([i for i in range(shapes[param][dim]) if i not in gone], dtype=torch.long))
                    for dim, gone in sorted(dims.items())]
            for param, dims in removed.items()}
