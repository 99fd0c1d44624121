"""Upload a pruned checkpoint, with its model card, to the Hugging Face Hub.

Tokens come only from the usual Hugging Face login (`hf auth login`, or the ``HF_TOKEN`` variable):
hfprune never reads one from a recipe or a flag, and never writes or prints one.
"""

from __future__ import annotations

import re
from pathlib import Path

from hfprune.errors import HfpruneError, reason


def push_checkpoint(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None) -> str:
    """Upload a saved checkpoint folder (weights, processor, model card) to ``repo_id``; returns its URL."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HfpruneError(f"'{folder}' has no config.json; give a folder written by hfprune prune, hfprune run's "
                           "export, or save_pretrained")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise HfpruneError(f"repo id '{repo_id}' is not NAMESPACE/NAME, e.g. my-user/tinyllava-ump-0.44")
    if get_token() is None:
        raise HfpruneError("not logged in to the Hugging Face Hub; run `hf auth login` (or set HF_TOKEN) and retry")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                                   commit_message=commit_message or f"Upload pruned checkpoint ({folder.name})",
                                   ignore_patterns=["*.partial", "hfprune_*.tmp"])
    except Exception as error:  # noqa: BLE001 - network, auth and permission errors all end the same way
        raise HfpruneError(f"upload of '{folder}' to '{repo_id}' failed: {reason(error)}") from None
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
