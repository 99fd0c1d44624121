"""Per-layer widths for any transformers architecture: the original classes, built from their own config, with the
Linears and head counts of each pruned module set as the config's ``pruned_modules`` records them.

``pruned_modules`` maps a module name to what differs from the model its config builds:

- ``{"linear": [in_features, out_features, bias]}`` — a Linear of another shape (kept heads or FFN neurons);
- ``{"config": {...}, "attributes": {...}}`` — an attention or MLP module with its own widths: ``config`` overrides
  fields of the config it reads (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
  ``intermediate_size``), ``attributes`` sets what its constructor derived from them (``num_key_value_groups``, ...).

``Pruned<Class>`` (e.g. ``PrunedLlamaForCausalLM``, ``PrunedCLIPVisionModel``) is ``transformers.<Class>`` with the
records applied after its own ``__init__``; the forward pass is the original's. Such classes are made on first use
(this module's ``__getattr__``), so one file serves every architecture.

This file imports only torch and transformers: ``save_pretrained`` copies it next to the weights, so a pruned
checkpoint loads with ``AutoModel...from_pretrained(DIR, trust_remote_code=True)`` in a process that never imported
hfprune.
"""

from __future__ import annotations

import transformers
from torch import nn

PREFIX = "Pruned"
SPEC = "pruned_modules"


class LayerConfig:
    """The config one module reads: its own widths (``own_widths``) over the model's config, which answers every
    other attribute and takes every change (so ``set_attn_implementation`` and the like reach it)."""

    def __init__(self, config, widths: dict):
        object.__setattr__(self, "_base", config)
        object.__setattr__(self, "own_widths", dict(widths))

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_base", "own_widths"):
            raise AttributeError(name)
        widths = object.__getattribute__(self, "own_widths")
        return widths[name] if name in widths else getattr(object.__getattribute__(self, "_base"), name)

    def __setattr__(self, name: str, value) -> None:
        if name in self.own_widths:
            self.own_widths[name] = value
        else:
            setattr(self._base, name, value)

    def __repr__(self) -> str:
        return f"LayerConfig({self.own_widths})"


def base_config(config):
    """The model's config under ``config`` (itself unless it is a :class:`LayerConfig`)."""
    while isinstance(config, LayerConfig):
        config = object.__getattribute__(config, "_base")
    return config


def apply_pruned_modules(model: nn.Module, records: dict) -> None:
    """Resize the Linears and set the widths ``records`` (module name -> record) name, in place."""
    for name, record in records.items():
        if "linear" in record:
            old = model.get_submodule(name)
            in_features, out_features, bias = record["linear"]
            new = nn.Linear(in_features, out_features, bias=bool(bias), device=old.weight.device,
                            dtype=old.weight.dtype)
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, new)
    for name, record in records.items():
        module = model.get_submodule(name)
        if record.get("config"):
            module.config = LayerConfig(base_config(module.config), record["config"])
        for attribute, value in (record.get("attributes") or {}).items():
            setattr(module, attribute, value)


def per_layer_class(base: type) -> type:
    """``Pruned<base>``: ``base`` whose modules follow its config's ``pruned_modules``."""
    name = PREFIX + base.__name__
    if name in globals():
        return globals()[name]

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        apply_pruned_modules(self, getattr(config, SPEC, None) or {})

    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__, "__qualname__": name,
                               "__doc__": f"``transformers.{base.__name__}`` with per-layer widths."})
    globals()[name] = cls
    return cls


def __getattr__(name: str):
    base = getattr(transformers, name[len(PREFIX):], None) if name.startswith(PREFIX) else None
    if isinstance(base, type) and issubclass(base, transformers.PreTrainedModel):
        return per_layer_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
