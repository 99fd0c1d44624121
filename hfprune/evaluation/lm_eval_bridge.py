"""Text-only evaluation of the (pruned) language model through lm-eval's Python API.

lm-eval is an optional extra (``pip install 'hfprune[lmeval]'``). The already-loaded model is handed to
``HFLM`` as is; for a LLaVA model that is its language model and LM head, sharing their weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.io import write_json_atomically


def causal_lm_of(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` itself, or for a vision-language model a causal LM made of its language model and LM head."""
    language_model = getattr(getattr(model, "model", None), "language_model", None)
    if language_model is None:
        return model
    with torch.device("meta"):
        causal_lm = AutoModelForCausalLM.from_config(model.config.text_config)
    causal_lm.model = language_model
    causal_lm.lm_head = model.get_output_embeddings()
    if any(tensor.is_meta for tensor in [*causal_lm.parameters(), *causal_lm.buffers()]):
        raise HfpruneError(f"cannot take the language model out of {type(model).__name__} for lm-eval")
    return causal_lm.eval()


def run_lm_eval(model: PreTrainedModel, tokenizer, tasks: list[str], out_dir: str | Path, limit: int | None = None,
                batch_size: int = 8, include_path: str | Path | None = None) -> dict:
    """lm-eval ``tasks`` on the model's language model; results written to ``out_dir/lm_eval.json`` and returned.

    ``include_path`` adds task YAMLs (e.g. over local data files, for machines without the Hub).
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HfpruneError("lm-eval is not installed; install it with: pip install 'hfprune[lmeval]'") from None
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        raise HfpruneError(f"unknown lm-eval task(s): {', '.join(unknown)}; `lm-eval ls tasks` lists them, "
                           "or add your own YAMLs with --lm-eval-include")
    lm = HFLM(pretrained=causal_lm_of(model), tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager,
                                         log_samples=False)
    except OSError as error:  # datasets raise OSError subclasses when the Hub is out of reach
        raise HfpruneError(f"lm-eval could not load the data of {', '.join(tasks)}: {error}; offline, give task "
                           "YAMLs over local files with --lm-eval-include") from None
    results = output["results"]
    payload = {"results": results, "n-shot": output.get("n-shot"), "versions": output.get("versions"),
               "limit": limit}
    write_json_atomically(Path(out_dir) / "lm_eval.json", payload)
    return results
