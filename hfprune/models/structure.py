"""What a Hugging Face model is and where its transformer blocks are, found from transformers' own mappings and by
walking the model — no list of architectures.

- :func:`model_kind` — a causal LM, a vision-language model or a ViT-like vision encoder, from transformers' Auto
  mappings (``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES``, ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, image
  classification / image / base-model mappings with a patch-transformer vision config); :func:`auto_class_name`
  the Auto class that loads it.
- :func:`find_blocks` — the ``nn.ModuleList`` of transformer blocks that matter: a language model's decoder layers
  (for a VLM the text decoder's, never the vision tower's), a vision encoder's encoder layers. It is the outermost
  ``ModuleList`` of Linear-holding blocks whose sub-model's config (the nearest ``.config`` above it) is the
  model's text config (``config.get_text_config(decoder=True)``) or vision config.
- :func:`block_roles` — the role of every Linear of one block, from shapes against the sub-model's head counts:
  attention ``q``, ``k``, ``v`` (or fused ``qkv``) read the block's hidden size and write heads × head_dim (key and
  value: key/value heads × head_dim); ``o`` reads heads × head_dim and writes the hidden size; the MLP's ``down``
  writes the hidden size from its intermediate width I, ``gate`` and ``up`` read the hidden size and write I (a
  lone one is ``up``: fc1 is ``up``, fc2 is ``down``), a fused ``gate_up`` writes 2·I. Attention is the block's
  child module whose Linears have that signature. Names only break ties between Linears of equal shape (CLIP
  registers k, v, q; a square MLP's gate vs up), then registration order decides.

Imports only torch, transformers and :mod:`hfprune.errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import transformers
from torch import nn
from transformers import CONFIG_MAPPING, PretrainedConfig
from transformers.models.auto import modeling_auto as auto

from hfprune.errors import HfpruneError

CAUSAL_LM, VISION_LANGUAGE, VISION_ENCODER = "causal_lm", "vision_language", "vision_encoder"
KINDS = (CAUSAL_LM, VISION_LANGUAGE, VISION_ENCODER)
ATTENTION_ROLES = ("q", "k", "v", "qkv", "o")
MLP_ROLES = ("gate", "up", "gate_up", "down")

# Which Auto class loads a model, by the mapping its model_type and class name appear in (first match wins).
_AUTO_CLASSES = (
    ("AutoModelForImageTextToText", auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES),
    ("AutoModelForCausalLM", auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    ("AutoModelForImageClassification", auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
    ("AutoModel", auto.MODEL_MAPPING_NAMES),
)
_KIND_AUTO_CLASS = {VISION_LANGUAGE: "AutoModelForImageTextToText", CAUSAL_LM: "AutoModelForCausalLM"}

# Name tokens that break ties between Linears of equal shape (never decide a role on their own).
_HINTS = {"q": {"q", "query", "wq"}, "k": {"k", "key", "wk"}, "v": {"v", "value", "wv"},
          "o": {"o", "out", "output", "dense", "wo"}, "qkv": {"qkv", "wqkv"},
          "gate": {"gate"}, "up": {"up", "fc1"}, "gate_up": {"gate_up"}, "down": {"down", "fc2"}}
_ATTENTION_HINTS = {"attn", "attention", "self_attn", "self_attention"}


# -- what a model is ------------------------------------------------------------------------------------------------

def _config_of(config: PretrainedConfig | str) -> PretrainedConfig:
    if isinstance(config, PretrainedConfig):
        return config
    if config not in CONFIG_MAPPING:
        raise HfpruneError(f"'{config}' is not a model_type transformers knows; give a config or a known model_type")
    try:
        return CONFIG_MAPPING[config]()
    except (TypeError, ValueError) as error:
        raise HfpruneError(f"transformers cannot build a default '{config}' config ({error}); give the config") \
            from None


def _mapped(names: Mapping, model_type: str) -> tuple[str, ...]:
    value = names.get(model_type, ())
    return (value,) if isinstance(value, str) else tuple(value)


def vision_config(config: PretrainedConfig) -> PretrainedConfig:
    """The config of a model's vision tower (``config.vision_config``) or, for a vision-only model, the config."""
    return getattr(config, "vision_config", None) or config


def _is_patch_transformer(config: PretrainedConfig) -> bool:
    vision = vision_config(config)
    return getattr(vision, "patch_size", None) is not None and getattr(vision, "num_attention_heads", None) is not None


def model_kind(config: PretrainedConfig | str) -> str:
    """``causal_lm``, ``vision_language`` or ``vision_encoder`` for a config or a ``model_type``, read from
    transformers' Auto mappings (image-text-to-text first: Gemma 3 is in both); an HfpruneError otherwise."""
    config = _config_of(config)
    model_type = config.model_type
    if model_type in auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return VISION_LANGUAGE
    if model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return CAUSAL_LM
    vision_mappings = (auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, auto.MODEL_FOR_IMAGE_MAPPING_NAMES,
                       auto.MODEL_MAPPING_NAMES)
    if any(model_type in names for names in vision_mappings) and _is_patch_transformer(config):
        return VISION_ENCODER
    raise HfpruneError(f"a '{model_type}' model is not a causal LM, a vision-language model or a ViT-like vision "
                       "encoder in transformers' Auto mappings; hfprune finds the blocks of those only: name the "
                       "Linear layers to prune with targets (regexes)")


def auto_class_name(model: nn.Module | PretrainedConfig | str) -> str:
    """The transformers Auto class that loads ``model`` (its class's entry in the Auto mappings); for a config or
    ``model_type``, the class of its kind (vision encoders: image classification if mapped, else ``AutoModel``)."""
    if isinstance(model, nn.Module):
        config = model.config
        # a subclass of a transformers class (a per-layer-width model) is loaded as its base is
        name = next((cls.__name__ for cls in type(model).__mro__ if getattr(transformers, cls.__name__, None) is cls),
                    type(model).__name__)
        for auto_class, names in _AUTO_CLASSES:
            if name in _mapped(names, config.model_type):
                return auto_class
    else:
        config = _config_of(model)
    kind = model_kind(config)
    if kind in _KIND_AUTO_CLASS:
        return _KIND_AUTO_CLASS[kind]
    return ("AutoModelForImageClassification" if config.model_type in auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
            else "AutoModel")


# -- the roles of one block's Linears ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Heads:
    """Attention head counts of a sub-model: query heads, key/value heads (fewer with GQA) and one head's width."""

    attention: int
    key_value: int
    dim: int

    @classmethod
    def from_config(cls, config: PretrainedConfig, hidden_size: int) -> "Heads | None":
        heads = getattr(config, "num_attention_heads", None)
        if not isinstance(heads, int) or heads <= 0:
            return None
        key_value = getattr(config, "num_key_value_heads", None) or heads
        return cls(heads, key_value, getattr(config, "head_dim", None) or hidden_size // heads)


@dataclass(frozen=True)
class BlockRoles:
    """The Linears of one block by role; module names are relative to the block (``self_attn.q_proj``)."""

    index: int
    roles: Mapping[str, str]  # role (ATTENTION_ROLES, MLP_ROLES) -> module name
    others: tuple[str, ...]  # Linears of the block without a role
    hidden_size: int
    heads: Heads | None
    intermediate_size: int | None  # the MLP's width I (down reads it)

    def role_of(self, name: str) -> str | None:
        """The role of the Linear ``name`` (relative to the block), or None."""
        return next((role for role, module in self.roles.items() if module == name), None)

    @property
    def attention(self) -> dict[str, str]:
        return {role: name for role, name in self.roles.items() if role in ATTENTION_ROLES}

    @property
    def mlp(self) -> dict[str, str]:
        return {role: name for role, name in self.roles.items() if role in MLP_ROLES}


def _tokens(name: str) -> set[str]:
    """The words of a module name (split at dots and underscores), single and as neighbouring pairs."""
    words = re.split(r"[._]", name.lower())
    return set(words) | {f"{first}_{second}" for first, second in zip(words, words[1:])}


Shape = Callable[[nn.Linear], bool]


def _reads(hidden: int, out: int) -> Shape:
    """Fits a Linear that reads the block's hidden size and writes ``out``."""
    return lambda linear: linear.in_features == hidden and linear.out_features == out


def _assign(linears: Mapping[str, nn.Linear], wanted: list[tuple[str, Shape]]) -> dict[str, str]:
    """Roles to Linears: each role in turn takes, among the unassigned Linears of its shape, the one whose name
    hints at it, else the first (in registration order) whose name hints at no other wanted role, else the first."""
    roles: dict[str, str] = {}
    for role, shape in wanted:
        free = [name for name, linear in linears.items() if name not in roles.values() and shape(linear)]
        if not free:
            continue
        others = set().union(*(_HINTS[other] for other, _ in wanted if other != role))
        hinted = [name for name in free if _tokens(name) & _HINTS[role]]
        unclaimed = [name for name in free if not _tokens(name) & others]
        roles[role] = (hinted or unclaimed or free)[0]
    return roles


def _attention_roles(linears: Mapping[str, nn.Linear], hidden: int, heads: Heads) -> dict[str, str]:
    """q/k/v/o or qkv/o of an attention module's Linears, or {} when their shapes do not fit ``heads``."""
    width, key_value = heads.attention * heads.dim, heads.key_value * heads.dim
    output = ("o", lambda linear: linear.in_features == width and linear.out_features == hidden)
    fused = _assign(linears, [("qkv", _reads(hidden, width + 2 * key_value)), output])
    if len(fused) == 2:
        return fused
    separate = _assign(linears, [("q", _reads(hidden, width)), ("k", _reads(hidden, key_value)),
                                 ("v", _reads(hidden, key_value)), output])
    return separate if len(separate) == 4 else {}


def _mlp_roles(linears: Mapping[str, nn.Linear], hidden: int) -> tuple[dict[str, str], int | None]:
    """gate/up/down (or gate_up/down, or up/down for fc1/fc2) of the Linears outside attention, and I."""
    down = _assign(linears, [("down", lambda linear: linear.out_features == hidden)])
    if not down:
        return {}, None
    width = linears[down["down"]].in_features
    rest = {name: linear for name, linear in linears.items() if name != down["down"]}
    reads = _reads(hidden, width)
    fused = _assign(rest, [("gate_up", _reads(hidden, 2 * width))])
    pair = sum(map(reads, rest.values())) >= 2
    split = _assign(rest, [("gate", reads), ("up", reads)] if pair else [("up", reads)])
    found = split or fused
    return ({**found, **down}, width) if found else ({}, None)


def _hidden_size(linears: Mapping[str, nn.Linear], config: PretrainedConfig) -> int:
    """The width a block reads and writes: the config's ``hidden_size`` when some Linear reads it and some writes
    it, else the most common input width of the block's Linears."""
    hidden = getattr(config, "hidden_size", None)
    if any(linear.in_features == hidden for linear in linears.values()) and \
            any(linear.out_features == hidden for linear in linears.values()):
        return hidden
    widths = [linear.in_features for linear in linears.values()]
    return max(set(widths), key=widths.count)


def _own_config(block: nn.Module, config: PretrainedConfig) -> PretrainedConfig:
    """The config that holds a block's head counts: ``config``, or the block's attention module's own config where a
    per-layer-width model gave it one (a config with ``own_widths`` naming ``num_attention_heads``)."""
    for module in block.modules():
        own = getattr(module, "config", None)
        if own is not config and "num_attention_heads" in (getattr(own, "own_widths", None) or {}):
            return own
    return config


def block_roles(block: nn.Module, config: PretrainedConfig, index: int = 0) -> BlockRoles:
    """The role of every Linear of ``block`` (one transformer block), with the head counts of ``config``, the config
    of the sub-model the block belongs to (e.g. a VLM's ``text_config``), or of the block's own where it has them."""
    linears = {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}
    if not linears:
        return BlockRoles(index, {}, (), getattr(config, "hidden_size", 0) or 0, None, None)
    hidden = _hidden_size(linears, config)
    heads = Heads.from_config(_own_config(block, config), hidden)
    children: dict[str, dict[str, nn.Linear]] = {}
    for name, linear in linears.items():
        children.setdefault(name.split(".", 1)[0], {})[name] = linear
    found = {child: roles for child, members in children.items()
             if heads is not None and (roles := _attention_roles(members, hidden, heads))}
    if len(found) > 1:  # shapes fit twice (rare): the child whose name says attention
        found = {child: roles for child, roles in found.items() if _tokens(child) & _ATTENTION_HINTS} or found
    if found:
        child, attention = next(iter(found.items()))
        inside = set(children[child])
    else:  # Linears directly in the block: attention is those that fit the heads
        attention = _attention_roles(linears, hidden, heads) if heads is not None else {}
        inside = set(attention.values())
    roles, intermediate = {}, None
    if attention:
        mlp, intermediate = _mlp_roles({name: linear for name, linear in linears.items() if name not in inside},
                                       hidden)
        roles = {**attention, **mlp}
    others = tuple(name for name in linears if name not in roles.values())
    return BlockRoles(index, roles, others, hidden, heads, intermediate)


# -- where the blocks are -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Blocks:
    """The transformer blocks of a model: ``layers`` is the ``nn.ModuleList`` at ``path``; ``kind`` the model's
    (:data:`KINDS`); ``config`` the config of the sub-model they belong to (its head counts); ``roles`` one
    :class:`BlockRoles` per block."""

    path: str
    layers: nn.ModuleList
    kind: str
    config: PretrainedConfig
    roles: tuple[BlockRoles, ...]

    def __len__(self) -> int:
        return len(self.layers)

    def name(self, index: int, relative: str = "") -> str:
        """The full module name of block ``index`` (or of ``relative`` inside it)."""
        prefix = f"{self.path}.{index}" if self.path else str(index)
        return f"{prefix}.{relative}" if relative else prefix

    def index_of(self, name: str) -> int | None:
        """The block a module or parameter ``name`` lies in, or None."""
        prefix = f"{self.path}." if self.path else ""
        if not name.startswith(prefix):
            return None
        head = name[len(prefix):].split(".", 1)[0]
        return int(head) if head.isdigit() and int(head) < len(self.layers) else None

    def linears(self) -> dict[str, nn.Linear]:
        """Every ``nn.Linear`` inside the blocks, by full module name, in block order."""
        return {self.name(index, name): module for index, block in enumerate(self.layers)
                for name, module in block.named_modules() if isinstance(module, nn.Linear)}


def _holds_linears(module: nn.Module) -> bool:
    return any(isinstance(child, nn.Linear) for child in module.modules())


def block_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """Every outermost ``nn.ModuleList`` whose items all hold a Linear (a ModuleList inside a block, such as a list
    of experts, belongs to its block), by module name, in model order."""
    found: dict[str, nn.ModuleList] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or not len(module) or not all(map(_holds_linears, module)):
            continue
        if not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = module
    return found


def owning_config(model: nn.Module, path: str) -> PretrainedConfig | None:
    """The config of the nearest module at or above ``path`` that has one (the sub-model the path belongs to)."""
    parts = path.split(".") if path else []
    for end in range(len(parts), -1, -1):
        config = getattr(model.get_submodule(".".join(parts[:end])), "config", None)
        if isinstance(config, PretrainedConfig):
            return config
    return None


def _wanted_config(config: PretrainedConfig, kind: str) -> PretrainedConfig:
    return vision_config(config) if kind == VISION_ENCODER else config.get_text_config(decoder=True)


def find_blocks(model: nn.Module, kind: str | None = None) -> Blocks:
    """The blocks of a causal LM's or VLM's language model, or of a vision encoder (``kind`` from
    :func:`model_kind` of the model's config unless given); an HfpruneError when there are none."""
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig):
        raise HfpruneError(f"a {type(model).__name__} has no transformers config; hfprune finds the blocks of "
                           "transformers models only: name the Linear layers to prune with targets (regexes)")
    kind = kind or model_kind(config)
    wanted = _wanted_config(config, kind)
    lists = block_lists(model)
    owners = {path: owning_config(model, path) for path in lists}
    chosen = [path for path in lists if owners[path] is wanted] or \
             [path for path in lists if type(owners[path]) is type(wanted)]
    if not chosen:  # a language model that is no sub-model of its own: the one list the model's config owns
        chosen = [path for path in lists if owners[path] is config][:2]
        chosen = chosen if len(chosen) == 1 else []
    if not chosen:
        where = f" (it has {', '.join(lists)})" if lists else ""
        raise HfpruneError(f"found no list of transformer blocks belonging to the {type(wanted).__name__} of this "
                           f"{type(model).__name__}{where}; name the Linear layers to prune with targets (regexes)")
    path = max(chosen, key=lambda candidate: len(lists[candidate]))  # several of one config: the deepest stack
    layers = lists[path]
    block_config = owners[path]
    roles = tuple(block_roles(block, block_config, index) for index, block in enumerate(layers))
    return Blocks(path, layers, kind, block_config, roles)


def block_of(model: nn.Module, name: str) -> tuple[str, int] | None:
    """(path of the list, index) of the outermost ``nn.ModuleList`` item that module ``name`` lies in, or None."""
    parts = name.split(".")
    for end in range(1, len(parts)):
        if parts[end].isdigit():
            try:
                holder = model.get_submodule(".".join(parts[:end]))
            except AttributeError:
                return None
            if isinstance(holder, nn.ModuleList):
                return ".".join(parts[:end]), int(parts[end])
    return None
