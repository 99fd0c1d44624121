"""Physical pruning of any transformers model by a structured mask of its block groups
(:mod:`hfprune.models.transformer.groups`): a smaller model that computes what the masked model computes.

The pruned model is of the original architecture, built from its own config:

- **native** when its config can say the pruned widths — every kept block has the same heads, key/value heads and
  FFN width, written as ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` (kept explicitly),
  ``intermediate_size`` (or ``mlp_ratio``), and removed blocks as ``num_hidden_layers`` with per-layer lists such
  as ``layer_types`` filtered. Whether it can is checked, not assumed: the original class built from that config
  must have exactly the pruned shapes (a ViT-like config that derives ``head_dim`` from ``hidden_size /
  num_attention_heads`` cannot, Qwen2.5-VL's text attention neither). Plain transformers loads it, no remote code.
- **own code** otherwise: the original config (dense widths, blocks removed) plus ``pruned_modules``, the per-module
  differences :mod:`~hfprune.models.transformer.modeling_per_layer` applies (``Pruned<Class>``; loads with
  ``trust_remote_code=True``). The attributes an attention or MLP module derives from its widths (e.g.
  ``num_key_value_groups``) are found by building that module again from a config with its own widths and keeping
  what changed — except what equals the block's hidden size, which no pruning changes.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.models.structure import BlockRoles, Blocks, auto_class_name, find_blocks
from hfprune.models.transformer.groups import FFN, HEADS, KV_GROUPS, LAYERS
from hfprune.models.transformer.modeling_per_layer import SPEC, LayerConfig, per_layer_class
from hfprune.pruning.structured.groups import Group, StructuredMask, kept_index_selection, removed_parameters

NATIVE, OWN_CODE = "native", "own_code"


def original_class(model: nn.Module) -> type[PreTrainedModel]:
    """The transformers class a (possibly per-layer-width) model is built on."""
    for cls in type(model).__mro__:
        if getattr(transformers, cls.__name__, None) is cls:
            return cls
    raise HfpruneError(f"a {type(model).__name__} is no transformers model class; hfprune prunes transformers models")


def dense_config(config: PretrainedConfig) -> PretrainedConfig:
    """A copy of ``config`` without per-layer records (``pruned_modules``, ``auto_map``): what the original class
    builds from it has the widths the config says."""
    config = copy.deepcopy(config)
    for key in (SPEC, "auto_map"):
        if key in config.__dict__:
            delattr(config, key)
    return config


def checkpoint_kind(config: PretrainedConfig) -> str:
    """``native`` (the config says every width) or ``own_code`` (it records ``pruned_modules``)."""
    return OWN_CODE if getattr(config, SPEC, None) else NATIVE


def build_on_meta(cls: type, config: PretrainedConfig) -> PreTrainedModel:
    """``cls(config)`` on the meta device: shapes without memory."""
    with torch.device("meta"):
        return cls(config)


def model_class_for(config: PretrainedConfig, base: type[PreTrainedModel]) -> type[PreTrainedModel]:
    """The class that builds a model of ``config``: ``base``, or its per-layer-width class for own-code configs."""
    return per_layer_class(base) if checkpoint_kind(config) == OWN_CODE else base


# -- widths ---------------------------------------------------------------------------------------------------------

def _kept(mask: StructuredMask, name: str, size: int) -> int:
    return len(mask[name]) if name in mask else size


def block_widths(roles: BlockRoles, mask: StructuredMask) -> tuple[int, int, int] | None:
    """(heads, key/value heads, FFN width) block ``roles.index`` keeps under ``mask`` (None: no attention found)."""
    if roles.heads is None:
        return None
    prefix = f"layers.{roles.index}"
    h, k = roles.heads.attention, roles.heads.key_value
    if f"{prefix}.{KV_GROUPS}" in mask:
        kept_groups = len(mask[f"{prefix}.{KV_GROUPS}"])
        h, k = kept_groups * (h // k), kept_groups
    elif f"{prefix}.{HEADS}" in mask:
        kept = len(mask[f"{prefix}.{HEADS}"])
        h, k = (kept, kept) if k == h else (kept, k)
    return h, k, _kept(mask, f"{prefix}.{FFN}", roles.intermediate_size or 0)


def check_mask(groups: dict[str, Group], mask: StructuredMask) -> None:
    """An HfpruneError when ``mask`` names a block's heads and its key/value groups both (prune one of the two), or
    keeps an uneven number of query heads per key/value group."""
    for name, kept in mask.items():
        group = groups[name]
        if group.kind == HEADS and name.replace(HEADS, KV_GROUPS) in mask:
            raise HfpruneError(f"the mask prunes both {name} and {name.replace(HEADS, KV_GROUPS)}; prune a block's "
                               "query heads (heads=...) or its key/value groups (kv_groups=...), not both")
        if group.partitions > 1:
            per_part = [sum(1 for unit in kept if group.partition_of(unit) == part) for part in range(group.partitions)]
            if len(set(per_part)) > 1 or not per_part[0]:
                raise HfpruneError(f"group '{name}' keeps {per_part} query heads per key/value group; grouped-query "
                                   "attention needs the same number (at least one) in every group")


# -- configs --------------------------------------------------------------------------------------------------------

def _sub_config(config: PretrainedConfig, original: PretrainedConfig, blocks: Blocks) -> PretrainedConfig:
    """The copy in ``config`` of the sub-config the blocks follow in ``original`` (``text_config``, ...)."""
    if blocks.config is original:
        return config
    for key, value in vars(original).items():
        if value is blocks.config:
            return getattr(config, key)
    for key in ("text_config", "vision_config"):
        if getattr(original, key, None) is not None and type(getattr(original, key)) is type(blocks.config):
            return getattr(config, key)
    raise HfpruneError(f"cannot find the config of the blocks at {blocks.path} in the {type(original).__name__}")


def _remove_layers(sub: PretrainedConfig, total: int, kept: list[int]) -> None:
    if len(kept) == total:
        return
    if getattr(sub, "num_hidden_layers", None) != total:
        raise HfpruneError(f"cannot remove layers of this model: its {type(sub).__name__} has no num_hidden_layers "
                           f"equal to its {total} blocks")
    sub.num_hidden_layers = len(kept)
    for key, value in list(vars(sub).items()):
        if "layer" in key and isinstance(value, list) and len(value) == total:
            setattr(sub, key, [value[index] for index in kept])
    stages = getattr(sub, "stage_names", None)
    if isinstance(stages, list) and len(stages) == total + 1:  # a backbone config: stage i is block i - 1's output
        renumber = {old + 1: new + 1 for new, old in enumerate(kept)} | {0: 0}
        indices = [renumber[index % len(stages)] for index in (getattr(sub, "out_indices", None) or [])
                   if index % len(stages) in renumber]
        sub.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(kept) + 1)]
        sub.out_indices = indices or [len(kept)]
        sub.out_features = [sub.stage_names[index] for index in sub.out_indices]


def _set_widths(sub: PretrainedConfig, hidden: int, heads: tuple[int, int, int], dense: tuple[int, int],
                ffn: tuple[int, int]) -> None:
    """Write uniform widths into ``sub``: (heads, key/value heads, head_dim) over dense (heads, key/value heads),
    FFN width over the dense one."""
    (h, k, d), (dense_h, dense_k), (f, dense_f) = heads, dense, ffn
    if (h, k) != (dense_h, dense_k):
        sub.head_dim = d
        sub.num_attention_heads = h
        if hasattr(sub, "num_key_value_heads") or k != h:
            sub.num_key_value_heads = k
    if f != dense_f:
        if hasattr(sub, "intermediate_size"):
            sub.intermediate_size = f
        elif hasattr(sub, "mlp_ratio") and f % hidden == 0:
            sub.mlp_ratio = f // hidden


def _layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of a model's state (parameters and saved buffers), by name."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _fits(model: nn.Module, shapes: dict[str, tuple[int, ...]], buffers: dict[str, torch.Tensor]) -> list[str]:
    """What of ``model`` (built from a pruned config) does not have the pruned ``shapes``, nor the dense model's
    other ``buffers`` (e.g. rotary frequencies, derived from head_dim) where it has them too: names, or none."""
    layout = _layout(model)
    wrong = [name for name in {*layout, *shapes} if layout.get(name) != shapes.get(name)]
    return wrong + [name for name, buffer in model.named_buffers()
                    if name not in layout and name in buffers and tuple(buffer.shape) != tuple(buffers[name].shape)]


def _native(base: type, config: PretrainedConfig, shapes: dict, buffers: dict) -> bool:
    try:
        return not _fits(build_on_meta(base, config), shapes, buffers)
    except (ValueError, TypeError, RuntimeError):  # the architecture refuses these widths in its config
        return False


def _parent(names: list[str]) -> str:
    """The deepest module name that holds every one of ``names`` (relative names inside a block)."""
    parts = [name.split(".")[:-1] for name in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _plain(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _derived_attributes(module: nn.Module, sub: PretrainedConfig, widths: dict[str, int], layer: int,
                        hidden: int) -> dict[str, Any]:
    """What ``module``'s constructor derives differently from ``widths``: it is built again (on the meta device)
    from a config with those widths; numbers that changed are kept, but none that equals ``hidden``."""
    def probe(overrides: dict[str, int]) -> nn.Module | None:
        config = LayerConfig(sub, overrides)
        keywords = {"layer_idx": layer} if "layer_idx" in inspect.signature(type(module).__init__).parameters else {}
        try:
            with torch.device("meta"):
                return type(module)(config, **keywords)
        except Exception:  # noqa: BLE001 - a constructor that does not take a config: nothing derived
            return None

    rebuilt = probe(widths)
    if rebuilt is not None and "head_dim" in widths and getattr(rebuilt, "head_dim", widths["head_dim"]) != \
            widths["head_dim"]:  # it derives head_dim from hidden_size / heads: give it the width that yields it
        rebuilt = probe({**widths, "hidden_size": widths["num_attention_heads"] * widths["head_dim"]})
    if rebuilt is None:
        return {}
    return {key: getattr(rebuilt, key) for key, value in vars(module).items()
            if _plain(value) and value != hidden and _plain(getattr(rebuilt, key, None))
            and getattr(rebuilt, key) != value}


def _own_code_records(reference: PreTrainedModel, blocks: Blocks, kept_layers: list[int], state: dict,
                      widths: dict[int, tuple[int, int, int]], dense: tuple[int, int, int, int]) -> dict[str, dict]:
    """``pruned_modules`` of the pruned model (new block numbering) against ``reference``, the model its config
    builds."""
    records: dict[str, dict] = {}
    for name, module in reference.named_modules():
        if not isinstance(module, nn.Linear) or f"{name}.weight" not in state:
            continue
        out_features, in_features = state[f"{name}.weight"].shape
        bias = f"{name}.bias" in state
        if (in_features, out_features, bias) != (module.in_features, module.out_features, module.bias is not None):
            records[name] = {"linear": [in_features, out_features, bias]}
    dense_h, dense_k, head_dim, dense_f = dense
    sub = reference.get_submodule(blocks.path)  # the reference's blocks, numbered as the pruned model's
    for new, old in enumerate(kept_layers):
        roles, (h, k, f) = blocks.roles[old], widths[old]
        block_name = f"{blocks.path}.{new}"
        block = sub[new]
        config = blocks.config
        if (h, k) != (dense_h, dense_k) and roles.attention:
            where = _parent(list(roles.attention.values()))
            own = {"num_attention_heads": h, "num_key_value_heads": k, "head_dim": head_dim}
            module = block.get_submodule(where) if where else block
            records[f"{block_name}.{where}".rstrip(".")] = {
                "config": own, "attributes": _derived_attributes(module, config, own, new, roles.hidden_size)}
        if f != dense_f and roles.mlp:
            where = _parent(list(roles.mlp.values()))
            own = {"intermediate_size": f}
            module = block.get_submodule(where) if where else block
            records[f"{block_name}.{where}".rstrip(".")] = {
                "config": own, "attributes": _derived_attributes(module, config, own, new, roles.hidden_size)}
    return records


# -- surgery --------------------------------------------------------------------------------------------------------

def _renamed(name: str, blocks: Blocks, renumber: dict[int, int]) -> str:
    index = blocks.index_of(name)
    if index is None:
        return name
    prefix = f"{blocks.path}.{index}."
    return f"{blocks.path}.{renumber[index]}.{name[len(prefix):]}"


def _kept_buffers(model: nn.Module, blocks: Blocks, kept_layers: list[int]) -> dict[str, torch.Tensor]:
    """The buffers of ``model`` outside removed blocks, by their names in the pruned model."""
    renumber = {old: new for new, old in enumerate(kept_layers)}
    return {_renamed(name, blocks, renumber): buffer for name, buffer in model.named_buffers()
            if blocks.index_of(name) is None or blocks.index_of(name) in renumber}


def pruned_state(model: PreTrainedModel, groups: dict[str, Group], mask: StructuredMask,
                 blocks: Blocks) -> tuple[dict[str, torch.Tensor], list[int]]:
    """(the kept slices of ``model``'s state, renamed for the kept blocks; the kept block indices)."""
    state = model.state_dict()
    selections = kept_index_selection(groups, mask, {name: tensor.shape for name, tensor in state.items()})
    gone = removed_parameters(groups, mask)
    kept_layers = sorted(mask.get(LAYERS, range(len(blocks))))
    renumber = {old: new for new, old in enumerate(kept_layers)}
    new_state = {}
    for name, tensor in state.items():
        if name in gone or (blocks.index_of(name) is not None and blocks.index_of(name) not in renumber):
            continue
        for dim, indices in selections.get(name, []):
            tensor = tensor.index_select(dim, indices.to(tensor.device))
        new_state[_renamed(name, blocks, renumber)] = tensor
    return new_state, kept_layers


def pruned_config(model: PreTrainedModel, groups: dict[str, Group], mask: StructuredMask,
                  state: dict[str, torch.Tensor] | None = None) -> PretrainedConfig:
    """The config of ``model`` pruned by ``mask``: native where the original class built from it has exactly the
    pruned shapes, else the original widths plus ``pruned_modules`` (own code)."""
    check_mask(groups, mask)
    blocks = find_blocks(model)
    if state is None:
        state = pruned_state(model, groups, mask, blocks)[0]
    kept_layers = sorted(mask.get(LAYERS, range(len(blocks))))
    base = original_class(model)
    config = dense_config(model.config)
    sub = _sub_config(config, model.config, blocks)
    _remove_layers(sub, len(blocks), kept_layers)
    reference = build_on_meta(base, config)
    reference_blocks = find_blocks(reference)
    first = reference_blocks.roles[0]
    if first.heads is None:
        raise HfpruneError(f"found no attention in the blocks at {blocks.path}; hfprune prunes transformer blocks")
    dense = (first.heads.attention, first.heads.key_value, first.heads.dim, first.intermediate_size or 0)
    widths = {old: block_widths(blocks.roles[old], mask) for old in kept_layers}
    buffers = _kept_buffers(model, blocks, kept_layers)
    pruned_shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    distinct = set(widths.values())
    if len(distinct) == 1 and None not in distinct:
        h, k, f = next(iter(distinct))
        native = copy.deepcopy(config)
        try:
            _set_widths(_sub_config(native, config, reference_blocks), first.hidden_size, (h, k, dense[2]),
                        dense[:2], (f, dense[3]))
            fits = _native(base, native, pruned_shapes, buffers)
        except (ValueError, TypeError):  # a config field that refuses the value
            fits = False
        if fits:
            return native
    setattr(config, SPEC, _own_code_records(reference, blocks, kept_layers, state, widths, dense))
    wrong = _fits(build_on_meta(per_layer_class(base), config), pruned_shapes, buffers)
    if wrong:
        raise HfpruneError(f"the per-layer-width {base.__name__} does not build the pruned shape of {wrong[0]}; "
                           "this architecture is not supported")
    return config


def prune_model(model: PreTrainedModel, groups: dict[str, Group], mask: StructuredMask) -> PreTrainedModel:
    """A smaller model of ``model``'s architecture (native, or its per-layer-width class) that computes what
    ``model`` masked by ``mask`` computes; ``model`` is left as it is."""
    blocks = find_blocks(model)
    state, kept_layers = pruned_state(model, groups, mask, blocks)
    config = pruned_config(model, groups, mask, state)
    cls = model_class_for(config, original_class(model))
    if cls is not original_class(model):
        cls.register_for_auto_class(auto_class_name(model))
    pruned = build_on_meta(cls, config)
    pruned.load_state_dict(state, assign=True, strict=True)
    dense_buffers = _kept_buffers(model, blocks, kept_layers)
    for name, buffer in list(pruned.named_buffers()):
        if buffer.is_meta:
            parent, _, leaf = name.rpartition(".")
            pruned.get_submodule(parent)._buffers[leaf] = dense_buffers[name].clone()
    pruned.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned.train(model.training)
