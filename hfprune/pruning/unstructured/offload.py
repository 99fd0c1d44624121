"""Layer-by-layer pruning of models that do not fit: one block (decoder layer) at a time on the device.

Calibration-based methods already prune block after block (:func:`~.calibration.prune_layer_by_layer`); here the
blocks' weights are kept elsewhere between their turns (a :class:`~.calibration.Residency`):

- ``cpu`` (:class:`CpuResidency`): the model is loaded on the CPU; each block moves to the device for its turn
  and back, the modules before the blocks (embeddings, a vision tower) only for the pass that captures the first
  block's inputs;
- ``disk`` (:func:`prune_from_disk`): nothing is loaded. The model is built without weights (parameters on the meta
  device), each block's tensors are read from the checkpoint's safetensors files (``safe_open``, that block's keys
  only) when its turn comes, pruned (SparseGPT updates them), written into the output checkpoint and dropped; the
  modules before the blocks are read for the capture pass only. Resident at any time: one block and the
  calibration activations, and during the capture pass what runs before the first block (the embeddings, a vision
  tower and its projector; a module after the blocks only while it runs, which none does before the last block).

The output of ``disk`` is a copy of the source folder's files (config, processor, safetensors shards and index;
not weights in other formats) whose pruned tensors are overwritten where they lie in their shard: the keys, dtypes,
shards and index that the source's ``save_pretrained`` wrote, untargeted tensors byte for byte. A safetensors file
is an 8-byte header length, a JSON header with each tensor's dtype, shape and byte range, then the data: the
writer reads those byte ranges from the header (safetensors has no call that rewrites one tensor of a file);
every tensor is read with safetensors.

Methods whose allocation needs every layer's statistics before the first is pruned (OWL's outlier ratios, ONP's,
PNP's PCA shares) get them in a first pass over the dense blocks, one at a time, then prune in a second. Methods
that score without layer-by-layer calibration (UMP, GMP, ONP and PNP by default) are refused with one line
(:func:`check_offload`).
"""

from __future__ import annotations

import json
import shutil
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import transformers
from accelerate import init_empty_weights
from accelerate.utils import named_module_tensors, set_module_tensor_to_device
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from hfprune.errors import HfpruneError, reason
from hfprune.models.structure import auto_class_name
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured.calibration import (
    DecoderStack,
    InputNorms,
    Residency,
    blocks_resident,
    prune_layer_by_layer,
)
from hfprune.pruning.unstructured.methods import ScoredMethod, UnstructuredMethod, UnstructuredResult
from hfprune.pruning.unstructured.scores import weight_score
from hfprune.pruning.unstructured.sparsegpt import SparseGPT
from hfprune.pruning.unstructured.targets import block_group

OFFLOADS = ("cpu", "disk")
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_FILE = "model.safetensors"
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_FLOATS = ("F64", "F32", "F16", "BF16")
_OTHER_WEIGHTS = (".bin", ".bin.index.json", ".pth", ".pt", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")
Counts = dict[str, tuple[int, int]]  # parameter name -> (pruned entries, all entries), as hfprune.report counts


# -- which methods ----------------------------------------------------------------------------------------------------

def offload_problem(method: UnstructuredMethod) -> str | None:
    """Why ``method`` cannot prune one block at a time, or None."""
    if isinstance(method, SparseGPT) or (isinstance(method, ScoredMethod) and method.layer_by_layer):
        return None
    if isinstance(method, ScoredMethod) and not method.needs_calibration:
        why = "scores weights without calibration"
    else:
        why = "scores every layer on the dense model in one pass (sequential false)"
    return (f"--offload prunes one decoder layer at a time, but {method.name} with these options {why}; --offload "
            f"runs wanda, owl and sparsegpt (any --pattern), or onp/pnp/ump with --option prune_score=activation "
            f"--option sequential=true: run {method.name} without --offload")


def check_offload(method: UnstructuredMethod, offload: str, source: str | Path | None = None) -> None:
    """One HfpruneError line when ``offload`` is unknown, ``method`` cannot run offloaded, or ``disk`` is given a
    ``source`` that is no local folder."""
    if offload not in OFFLOADS:
        raise HfpruneError(f"--offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
    problem = offload_problem(method)
    if problem:
        raise HfpruneError(problem)
    if offload == "disk" and source is not None and not Path(source).is_dir():
        raise HfpruneError(f"--offload disk reads a local checkpoint folder; '{source}' is none (download it first, "
                           "e.g. hf download ID --local-dir DIR)")


# -- the modules before the blocks, while they run --------------------------------------------------------------------

def _outside(model: nn.Module, stack: DecoderStack) -> Iterator[tuple[str, nn.Module, bool, bool]]:
    """(name, module, whole, early) of what lies outside the stack of blocks: each module above the stack with its
    own tensors only (``whole`` False), and each other child of those whole, with its submodules (``whole`` True: a
    vision tower, the embeddings, the LM head — a module may use its children's weights without calling them).
    ``early``: registered before the blocks (the embeddings, a vision tower), not after (the final norm, the head)."""
    parts = stack.path.split(".")
    above = {".".join(parts[:end]) for end in range(len(parts))}
    early = True
    for name, module in model.named_modules():
        early = early and name != stack.path
        whole = name not in above
        if whole and (name == stack.path or name.rpartition(".")[0] not in above):
            continue
        if next(named_module_tensors(module, recurse=whole), None) is not None:
            yield name, module, whole, early


Place = Callable[[str, nn.Module, bool], None]  # (module name, module, with its submodules)


@contextmanager
def _before_blocks(model: nn.Module, stack: DecoderStack, bring: Place, send_back: Place) -> Iterator[None]:
    """While the first block's inputs are captured: the modules outside the blocks (:func:`_outside`) registered
    before them brought for the whole pass (what runs before the first block, and what a model reads its device
    from), the others only while they run; all sent back after."""
    modules = list(_outside(model, stack))
    handles = []
    for name, module, whole, early in modules:
        if early:
            bring(name, module, whole)
            continue
        handles.append(module.register_forward_pre_hook(
            lambda module, args, name=name, whole=whole: bring(name, module, whole)))
        handles.append(module.register_forward_hook(
            lambda module, args, output, name=name, whole=whole: send_back(name, module, whole)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, module, whole, _ in modules:
            send_back(name, module, whole)


class _OneBlockAtATime(Residency):
    """Per-layer allocations (OWL's outlier ratios, PNP's PCA shares) score every block before the first is pruned:
    here in a first pass over the dense blocks, one at a time, each scored from its weights and the input norms of
    its targets — the dense model's, as one forward pass gives them."""

    def group_scores(self, profile, groups, targets, scoring, progress=False):
        score = getattr(profile, "score", None)
        scores: dict[str, float] = {}

        def visit(layer: dict[str, nn.Linear], stats: dict) -> dict:
            bound = score.from_statistics(stats) if score is not None and score.needs_calibration else weight_score
            group = block_group(scoring.model, next(iter(layer)))
            scores[group] = profile.group_score(list(layer.items()), lambda _: bound)
            return {}

        prune_layer_by_layer(scoring.model, targets, scoring.calibration, InputNorms, visit, progress)
        return {group: scores[group] for group in groups}


class CpuResidency(_OneBlockAtATime):
    """The model stays on the CPU; each block comes to ``device`` for its turn, and the modules before the blocks
    while the first block's inputs are captured (their tensors move in place, so tied weights stay tied)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)

    @staticmethod
    def _move(module: nn.Module, whole: bool, device: torch.device) -> None:
        for _, tensor in named_module_tensors(module, recurse=whole):
            tensor.data = tensor.data.to(device)

    def capturing(self, model, stack):
        return _before_blocks(model, stack, lambda name, module, whole: self._move(module, whole, self.device),
                              lambda name, module, whole: self._move(module, whole, torch.device("cpu")))

    def load(self, name, block):
        block.to(self.device)

    def release(self, name, block, masks):
        block.to("cpu")
        return masks


# -- a safetensors checkpoint, tensor by tensor -----------------------------------------------------------------------

@dataclass(frozen=True)
class Stored:
    """Where one tensor lies: its file, its name there, its dtype and the byte range of its data in the file."""

    file: Path
    key: str
    dtype: str
    start: int
    end: int


def _header(file: Path) -> tuple[dict, int]:
    """A safetensors file's header (tensor name -> dtype, shape, data_offsets) and where its data begins."""
    with open(file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def _stored(folder: Path) -> dict[str, Stored]:
    """Every tensor of the safetensors checkpoint in ``folder`` by its name in the checkpoint."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (folder / SAFETENSORS_FILE).is_file():
        files = [SAFETENSORS_FILE]
    else:
        raise HfpruneError(f"--offload disk reads safetensors checkpoints, and '{folder}' has neither "
                           f"{SAFETENSORS_FILE} nor {SAFETENSORS_INDEX}; save it with save_pretrained first")
    stored = {}
    for file in files:
        header, data = _header(folder / file)
        for key, entry in header.items():
            start, end = entry["data_offsets"]
            stored[key] = Stored(folder / file, key, entry["dtype"], data + start, data + end)
    return stored


def _model_names(model: PreTrainedModel, keys: Iterable[str]) -> dict[str, str]:
    """The model's name of each checkpoint key, renamed as ``from_pretrained`` renames it (legacy layouts)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    conversions = get_model_conversion_mapping(model)
    renamings = [entry for entry in conversions if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in conversions if isinstance(entry, WeightConverter)]
    meta = model.state_dict()
    names = {}
    for key in keys:
        name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, meta)
        if name not in meta and key in meta:
            name, converted = rename_source_key(key, [], [], model.base_model_prefix, meta)
        if converted is not None:
            raise HfpruneError(f"checkpoint tensor '{key}' is converted (merged or split) when transformers loads "
                               "it, so it cannot be read one block at a time; use --offload cpu")
        names[key] = name
    return names


class Checkpoint:
    """The tensors of a safetensors checkpoint folder (one file, or shards and their index), by the model's
    parameter and buffer names; each read opens its file, reads that tensor and closes it."""

    def __init__(self, folder: Path, model: PreTrainedModel):
        self.folder = folder
        stored = _stored(folder)
        self.tensors = {name: stored[key] for key, name in _model_names(model, stored).items()}
        own = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        missing = [name for name in model.state_dict() if name not in self.tensors and name in own]  # not tied ones
        if missing:
            raise HfpruneError(f"checkpoint '{folder}' has no tensor for the model's '{missing[0]}' "
                               f"({len(missing)} missing); give a complete checkpoint written by save_pretrained")

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        stored = self.tensors[name]
        with safe_open(stored.file, framework="pt", device="cpu") as handle:
            return handle.get_tensor(stored.key)


class CheckpointCopy:
    """The output checkpoint: ``folder`` holds a copy of the source's files (config, processor, safetensors shards
    and index; not weights in other formats nor subfolders), and :meth:`write` overwrites one tensor's data where it
    lies in its shard."""

    def __init__(self, checkpoint: Checkpoint, folder: Path):
        self.checkpoint, self.folder = checkpoint, folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file in sorted(checkpoint.folder.iterdir()):
            if file.is_file() and not file.name.endswith(_OTHER_WEIGHTS):
                shutil.copyfile(file, folder / file.name)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        stored = self.checkpoint.tensors[name]
        if stored.dtype not in _DTYPES:
            raise HfpruneError(f"cannot write '{stored.key}' of dtype {stored.dtype} back into its shard")
        data = tensor.detach().to("cpu", _DTYPES[stored.dtype]).contiguous().reshape(-1).view(torch.uint8)
        if data.numel() != stored.end - stored.start:
            raise HfpruneError(f"'{stored.key}' has {data.numel()} bytes, its shard holds {stored.end - stored.start}")
        with open(self.folder / stored.file.name, "r+b") as handle:
            handle.seek(stored.start)
            handle.write(data.numpy())


class DiskResidency(_OneBlockAtATime):
    """Blocks read from ``checkpoint`` one at a time onto ``device``, masked in place, written into ``output``,
    then dropped (back to the meta device); the modules before the blocks read for the capture pass.
    :attr:`counts` and :attr:`nonzero` are what each written target holds."""

    def __init__(self, checkpoint: Checkpoint, output: CheckpointCopy, device: str | torch.device):
        self.checkpoint, self.output, self.device = checkpoint, output, torch.device(device)
        self.counts: Counts = {}
        self.nonzero: dict[str, int] = {}

    def _bring(self, prefix: str, module: nn.Module, recurse: bool) -> None:
        for name, _ in list(named_module_tensors(module, include_buffers=True, recurse=recurse)):
            full = f"{prefix}.{name}" if prefix else name
            value = self.checkpoint[full] if full in self.checkpoint else None  # else a buffer computed at build
            set_module_tensor_to_device(module, name, self.device, value=value, clear_cache=False)

    def _drop(self, prefix: str, module: nn.Module, recurse: bool) -> None:
        for name, tensor in list(named_module_tensors(module, include_buffers=True, recurse=recurse)):
            full = f"{prefix}.{name}" if prefix else name
            if tensor.device.type != "meta":
                set_module_tensor_to_device(module, name, "meta" if full in self.checkpoint else "cpu",
                                            clear_cache=False)

    def capturing(self, model, stack):
        return _before_blocks(model, stack, self._bring, self._drop)

    def load(self, name, block):
        self._bring(name, block, True)

    def masked(self, name, block, masks):
        MaskedParameters(block, masks).apply()  # in place: the block is read for this turn only
        return None

    def release(self, name, block, masks):
        for module in masks:
            weight = block.get_parameter(f"{module[len(name) + 1:]}.weight")
            self.output.write(f"{module}.weight", weight)
            self.nonzero[f"{module}.weight"] = int(torch.count_nonzero(weight))
        self._drop(name, block, True)
        self.counts.update({f"{module}.weight": (int((~mask).sum()), mask.numel()) for module, mask in masks.items()})
        return {module: torch.empty(mask.shape, dtype=torch.bool, device="meta") for module, mask in masks.items()}


# -- the whole run ----------------------------------------------------------------------------------------------------

def _stored_dtype(folder: Path) -> torch.dtype:
    """The dtype of the first floating-point tensor of a safetensors checkpoint folder (float32 if none)."""
    try:
        found = (stored.dtype for stored in _stored(folder).values() if stored.dtype in _FLOATS)
        return _DTYPES[next(found, "F32")]
    except HfpruneError:
        return torch.float32


def empty_model(source: str | Path) -> PreTrainedModel:
    """The model of the checkpoint folder ``source`` without weights, as ``from_pretrained`` would build it:
    parameters on the meta device in the checkpoint's dtype (its config's, else its first floating-point tensor's),
    buffers computed as its class builds them, tied weights tied; the class its transformers Auto class loads."""
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise HfpruneError(f"cannot read the config of '{source}' ({reason(error)}); give a checkpoint folder "
                           "written by save_pretrained") from None
    auto = getattr(transformers, auto_class_name(config))
    with init_empty_weights():
        model = auto.from_config(config, dtype=config.dtype or _stored_dtype(Path(source)))
    model.tie_weights()  # as from_pretrained ties them: a tied LM head is the embeddings, and not in the checkpoint
    return model.eval()


@dataclass
class OffloadedPruning:
    """What :func:`prune_from_disk` did: the method's result (its masks only shapes, on the meta device), the
    pruned and total entries of every target weight, and the parameters of the whole output and how many are
    nonzero."""

    result: UnstructuredResult
    counts: Counts
    parameters: int
    nonzero: int


def _nonzero(parameters: Mapping[str, int], checkpoint: Checkpoint, written: Mapping[str, int]) -> int:
    """Nonzero entries of the output's ``parameters`` (name -> size), reading each tensor not written once."""
    return sum(written[name] if name in written else int(torch.count_nonzero(checkpoint[name])) for name in parameters)


def prune_from_disk(source: str | Path, method: UnstructuredMethod, sparsity: float, out: str | Path, *,
                    calibration: Iterable[Mapping], targets: str | Sequence[str] | None = None,
                    ignore: str | Sequence[str] = (), device: str | torch.device | None = None,
                    model: PreTrainedModel | None = None, progress: bool = False) -> OffloadedPruning:
    """Prune the safetensors checkpoint folder ``source`` with ``method`` one block at a time, each read from
    ``source`` and written back into the checkpoint folder ``out`` (made anew: write into a temporary name and
    rename it where a half-written folder must never be seen). ``calibration``: batches of model inputs;
    ``device``: where each block runs [default: cpu]; ``model``: ``source``'s :func:`empty_model` if already built.
    """
    check_offload(method, "disk", source)
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve() or out.resolve() in source.resolve().parents:
        raise HfpruneError(f"the output folder '{out}' is the source checkpoint or holds it; write elsewhere")
    model = empty_model(source) if model is None else model
    checkpoint = Checkpoint(source, model)
    parameters = {name: parameter.numel() for name, parameter in model.named_parameters()}  # a tied one once
    residency = DiskResidency(checkpoint, CheckpointCopy(checkpoint, out), device or "cpu")
    with blocks_resident(residency):
        result = method.masks(model, sparsity, targets=targets, ignore=ignore, calibration=calibration,
                              progress=progress)
    return OffloadedPruning(result, residency.counts, sum(parameters.values()),
                            _nonzero(parameters, checkpoint, residency.nonzero))


def prune_on_cpu(model: nn.Module, method: UnstructuredMethod, sparsity: float, *,
                 calibration: Iterable[Mapping], device: str | torch.device | None = None,
                 targets: str | Sequence[str] | None = None, ignore: str | Sequence[str] = (),
                 progress: bool = False) -> UnstructuredResult:
    """``method.masks`` of ``model`` (on the CPU, where it stays) with one block at a time on ``device``."""
    check_offload(method, "cpu")
    with blocks_resident(CpuResidency(device or "cpu")):
        return method.masks(model, sparsity, targets=targets, ignore=ignore, calibration=calibration,
                            progress=progress)
