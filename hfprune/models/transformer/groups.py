"""The structured groups of any transformers model, found by walking it (:func:`hfprune.models.structure.find_blocks`):
per block, its attention heads, its key/value groups (grouped-query attention only), its FFN neurons, and the
blocks themselves (depth).

- ``layers.{i}.heads`` — query heads. With multi-head attention a head owns its query, key and value rows and its
  output-projection columns. With grouped-query attention (K key/value heads for H query heads) a head owns its
  query rows and output columns only, and the H heads form K partitions (one per key/value group) that keep equally
  many heads, so the pruned model still computes grouped-query attention.
- ``layers.{i}.kv_groups`` (grouped-query attention only) — a key/value head with its H/K query heads.
- ``layers.{i}.ffn`` — FFN neurons: gate and up rows (fused ``gate_up`` too), down columns, biases.
- ``layers`` — the blocks: one unit per block, owning every parameter in it.

Fused projections (``qkv``, ``gate_up``) are sliced with offsets. Group names are relative to the blocks, so a
VLM's language model has the same names as a causal LM's.

An attention module with a parameter that spans several heads outside its projections (OLMo-2's q/k norms
normalise over all heads together) cannot lose heads exactly: its blocks offer no heads or KV groups.
"""

from __future__ import annotations

from torch import nn

from hfprune.models.structure import Blocks, BlockRoles, find_blocks
from hfprune.pruning.structured.groups import Group, ParamSlice

HEADS, KV_GROUPS, FFN, LAYERS = "heads", "kv_groups", "ffn", "layers"
KINDS = (HEADS, KV_GROUPS, FFN, LAYERS)


def _rows(params: set[str], module: str, span: int, offset: int = 0) -> tuple[ParamSlice, ...]:
    """Rows ``offset + [i*span, (i+1)*span)`` of ``module``'s weight and bias (where it has one)."""
    return tuple(ParamSlice(f"{module}.{leaf}", 0, span, offset) for leaf in ("weight", "bias")
                 if f"{module}.{leaf}" in params)


def _columns(module: str, span: int) -> ParamSlice:
    return ParamSlice(f"{module}.weight", 1, span)


def _spans_heads(blocks: Blocks, roles: BlockRoles) -> bool:
    """Whether the attention module (the child of the block holding the projections) has a parameter, outside its
    projections, as wide as several heads."""
    children = {name.split(".", 1)[0] for name in roles.attention.values()}
    if len(children) != 1 or not all("." in name for name in roles.attention.values()):
        return False
    child = children.pop()
    projections = {name.split(".", 1)[1] for name in roles.attention.values()}
    module = blocks.layers[roles.index].get_submodule(child)
    dim = roles.heads.dim
    return any(param.numel() > dim and param.numel() % dim == 0 for name, param in module.named_parameters()
               if name.rpartition(".")[0] not in projections)


def _attention_groups(blocks: Blocks, roles: BlockRoles, params: set[str]) -> list[Group]:
    heads, attention = roles.heads, roles.attention
    if heads is None or "o" not in attention or _spans_heads(blocks, roles):
        return []
    name = lambda role: blocks.name(roles.index, attention[role])  # noqa: E731
    h, k, d = heads.attention, heads.key_value, heads.dim
    per_group = h // k
    if "qkv" in attention:
        query = _rows(params, name("qkv"), d)
        keys, values = (_rows(params, name("qkv"), d, h * d), _rows(params, name("qkv"), d, h * d + k * d))
        group_query = _rows(params, name("qkv"), per_group * d)
    else:
        query = _rows(params, name("q"), d)
        keys, values = _rows(params, name("k"), d), _rows(params, name("v"), d)
        group_query = _rows(params, name("q"), per_group * d)
    output = _columns(name("o"), d)
    prefix = f"layers.{roles.index}"
    if k == h:  # multi-head attention: a head is its own key/value group
        return [Group(f"{prefix}.{HEADS}", HEADS, h, (*query, *keys, *values, output))]
    return [Group(f"{prefix}.{HEADS}", HEADS, h, (*query, output), min_kept=k, partitions=k),
            Group(f"{prefix}.{KV_GROUPS}", KV_GROUPS, k,
                  (*group_query, *keys, *values, _columns(name("o"), per_group * d)))]


def _ffn_group(blocks: Blocks, roles: BlockRoles, params: set[str]) -> list[Group]:
    mlp, width = roles.mlp, roles.intermediate_size
    if "down" not in mlp or not width:
        return []
    name = lambda role: blocks.name(roles.index, mlp[role])  # noqa: E731
    owned = []
    for role in ("gate", "up"):
        if role in mlp:
            owned += _rows(params, name(role), 1)
    if "gate_up" in mlp:
        owned += [*_rows(params, name("gate_up"), 1), *_rows(params, name("gate_up"), 1, width)]
    return [Group(f"layers.{roles.index}.{FFN}", FFN, width, (*owned, _columns(name("down"), 1)))]


def _layers_group(blocks: Blocks, model: nn.Module) -> Group:
    owned = tuple(ParamSlice(blocks.name(index, param), 0, unit=index)
                  for index, block in enumerate(blocks.layers) for param, _ in block.named_parameters())
    return Group(LAYERS, LAYERS, len(blocks), owned, modules=tuple(blocks.name(i) for i in range(len(blocks))))


def block_groups(model: nn.Module, blocks: Blocks | None = None) -> dict[str, Group]:
    """Every structured group of ``model``: per block heads, KV groups (GQA), FFN neurons; then ``layers``."""
    blocks = blocks or find_blocks(model)
    params = {name for name, _ in model.named_parameters()}
    groups: dict[str, Group] = {}
    for roles in blocks.roles:
        for group in (*_attention_groups(blocks, roles, params), *_ffn_group(blocks, roles, params)):
            groups[group.name] = group
    groups[LAYERS] = _layers_group(blocks, model)
    return groups
