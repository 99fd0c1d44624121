"""Physical removal of pruned units: a smaller model of the same class, built from its config."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from hfprune.pruning.structured.groups import Group, StructuredMask, kept_index_selection


@torch.no_grad()
def shrink(
    model: PreTrainedModel, groups: dict[str, Group], mask: StructuredMask, pruned_config,
    model_class: type[PreTrainedModel] | None = None,
) -> PreTrainedModel:
    """Copy the kept slices of every parameter and buffer of ``model`` into a new model built
    from ``pruned_config`` (the config with the reduced widths) by ``model_class`` (default: the
    class of ``model``; e.g. a dense HF ViT shrinks into a per-layer-width ViT class)."""
    state = model.state_dict()
    selections = kept_index_selection(groups, mask, {name: tensor.shape for name, tensor in state.items()})
    pruned = (model_class or type(model))(pruned_config).to(model.device, model.dtype)
    pruned_state = pruned.state_dict()
    for name, tensor in state.items():
        for dim, indices in selections.get(name, []):
            tensor = tensor.index_select(dim, indices.to(tensor.device))
        if pruned_state[name].shape != tensor.shape:
            raise RuntimeError(
                f"surgery mismatch for '{name}': kept slices have shape {tuple(tensor.shape)}, "
                f"the pruned config builds {tuple(pruned_state[name].shape)}"
            )
        pruned_state[name].copy_(tensor)
    pruned.eval() if not model.training else pruned.train()
    return pruned
