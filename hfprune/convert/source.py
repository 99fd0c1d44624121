"""Source checkpoints: a directory or Hub id resolved, its config.json read, its weight shards read lazily."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator

import torch

from hfprune.errors import HfpruneError
from hfprune.convert.keys import listed


def resolve_source(source: str | Path, what: str = "source", option: str = "") -> Path:
    """A local directory as is; a Hub id downloaded with ``snapshot_download`` (HfpruneError when offline).

    ``what`` names the checkpoint in errors; ``option`` is the command-line option that takes its directory.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(source))
    except HFValidationError:
        raise HfpruneError(f"{what} '{source}' is neither a directory nor a Hugging Face Hub id") from None
    try:
        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt",
                                                                   "*.model", "*.jinja"]))
    except Exception as error:  # offline, unknown repository, network or disk trouble: all end the same way
        raise HfpruneError(
            f"cannot download '{source}' from the Hugging Face Hub ({type(error).__name__}); download it where "
            f"there is network (`hf download {source} --local-dir DIR`) and pass the local directory DIR"
            f"{f' with {option}' if option else ''}") from error


def read_source_config(directory: Path) -> dict:
    """The source's ``config.json`` as a dict."""
    path = directory / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HfpruneError(f"no config.json in {directory}; give the directory of a TinyLLaVA checkpoint") from None
    except json.JSONDecodeError as error:
        raise HfpruneError(f"{path} is not valid JSON ({error})") from None


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight shards, safetensors preferred: from the index json, else by name."""
    for index_name, pattern in (("model.safetensors.index.json", "model*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = directory / index_name
        if index.is_file():
            files = [directory / name for name in dict.fromkeys(json.loads(index.read_text())["weight_map"].values())]
            absent = [file.name for file in files if not file.is_file()]
            if absent:
                raise HfpruneError(f"{index} lists shards that are not there: {listed(absent)}")
            return files
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise HfpruneError(f"no weights in {directory}: expected model*.safetensors or pytorch_model*.bin")


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model*.bin`` shard: memory-mapped, or read whole when its (old) format cannot be mapped."""
    import pickle

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as error:
        raise HfpruneError(f"cannot read {path} as a tensor dict ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:200]})") from error


class _Shard:
    """One weight file: its keys, their shapes, and tensors read on demand (``.bin`` memory-mapped)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        if path.suffix == ".bin":
            self._loaded, self._handle = _load_bin(path), None
        else:
            self._loaded, self._handle = None, safe_open(path, framework="pt")

    def keys(self) -> list[str]:
        return list(self._loaded) if self._handle is None else list(self._handle.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        source = self._loaded[key] if self._handle is None else self._handle.get_slice(key)
        return tuple(source.shape if self._handle is None else source.get_shape())

    def get(self, key: str) -> torch.Tensor:
        return self._loaded[key] if self._handle is None else self._handle.get_tensor(key)


def _unchanged(key: str) -> str:
    return key


class _Weights:
    """What :class:`SourceWeights` and :class:`MergedWeights` share: one tensor found by name."""

    def tensors(self, wanted: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor by name."""
        for _, tensor in self.tensors((name,)):
            return tensor
        raise HfpruneError(f"no tensor '{name}' in the checkpoint")


@dataclass
class SourceWeights(_Weights):
    """A checkpoint's tensors, read one shard at a time, under the names ``rename`` gives (None leaves one out)."""

    files: list[Path]
    rename: Callable[[str], str | None] = _unchanged

    def _named(self) -> Iterator[tuple[_Shard, str, str]]:
        """``(shard, stored key, name)`` for every tensor not left out, shard after shard."""
        for path in self.files:
            shard = _Shard(path)
            for key in shard.keys():
                if (name := self.rename(key)) is not None:
                    yield shard, key, name

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every name's shape, without reading the tensors' data."""
        return {name: shard.shape(key) for shard, key, name in self._named()}

    def tensors(self, wanted: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` for every tensor (or only the ``wanted`` names), shard after shard."""
        for shard, key, name in self._named():
            if wanted is None or name in wanted:
                yield name, shard.get(key)


@dataclass
class MergedWeights(_Weights):
    """Several checkpoints' tensors as one (a legacy checkpoint and its separate vision tower)."""

    parts: list[SourceWeights]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every name's shape; HfpruneError for a name two parts give."""
        merged: dict[str, tuple[int, ...]] = {}
        for part in self.parts:
            shapes = part.shapes()
            if twice := merged.keys() & shapes.keys():
                raise HfpruneError(f"keys in more than one checkpoint: {listed(twice)}")
            merged |= shapes
        return merged

    def tensors(self, wanted: Collection[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` part after part."""
        for part in self.parts:
            yield from part.tensors(wanted)
