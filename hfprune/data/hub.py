"""Image-classification datasets from the Hugging Face Hub (or a local copy) via ``datasets``.

A local copy (``data.path``) is either a directory written by ``DatasetDict.save_to_disk``
or a download of the Hub repository (parquet files, e.g. ``mnist/train-00000-of-00001.parquet``
or ``data/train-*.parquet``). Both need the splits ``train`` and ``test``, an ``Image``
column and an integer (ideally ``ClassLabel``) label column.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hfprune.data.base import ImageClassificationData, TensorImageSet
from hfprune.data.transforms import stratified_subset, to_normalised_tensor
from hfprune.errors import HfpruneError, reason

SPLITS = ("train", "test")
_BATCH = 10_000



def _load_dataset_dict(name: str, hub_id: str, path: str | None, hub_config: str | None):
    """The ``DatasetDict`` of a Hub id or a local copy; loading failures become HfpruneError."""
    import datasets
    from datasets.exceptions import DatasetsError

    load_errors = (OSError, ValueError, DatasetsError)
    if path is None:
        try:
            return datasets.load_dataset(hub_id, hub_config)
        except load_errors as e:
            raise HfpruneError(
                f"dataset '{name}': cannot load '{hub_id}' from the Hugging Face Hub ({reason(e, kind=True)}); "
                f"run once with network access (later runs may set HF_HUB_OFFLINE=1), or where there is "
                f"network save a copy with `datasets.load_dataset('{hub_id}').save_to_disk(DIR)` "
                f"and set data.path: DIR"
            ) from e
    local = Path(path).expanduser()
    how_to = (
        f"point data.path at a directory written by `datasets.load_dataset('{hub_id}').save_to_disk(DIR)` "
        f"or downloaded with `hf download {hub_id} --repo-type dataset --local-dir DIR`"
    )
    if not local.is_dir():
        raise HfpruneError(f"dataset '{name}': data.path '{path}' is not an existing directory; {how_to}")
    saved = (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
    try:
        loaded = datasets.load_from_disk(str(local)) if saved else datasets.load_dataset(str(local), hub_config)
    except load_errors as e:
        raise HfpruneError(
            f"dataset '{name}': cannot load the local copy at data.path '{path}' ({reason(e, kind=True)}); {how_to}"
        ) from e
    if not isinstance(loaded, datasets.DatasetDict):
        raise HfpruneError(
            f"dataset '{name}': data.path '{path}' holds a single split, not splits {'/'.join(SPLITS)}; "
            f"save the whole DatasetDict (e.g. `datasets.load_dataset('{hub_id}').save_to_disk(DIR)`)"
        )
    return loaded


def _check_schema(name: str, source: str, split: str, ds, image_column: str, label_column: str) -> None:
    from datasets import ClassLabel, Image, Value

    for column in (image_column, label_column):
        if column not in ds.column_names:
            raise HfpruneError(
                f"dataset '{name}' ({source}): split '{split}' has no column '{column}' "
                f"(columns: {', '.join(ds.column_names)}); "
                f"use a copy in the Hub schema ({image_column}, {label_column})"
            )
    if not isinstance(ds.features[image_column], Image):
        raise HfpruneError(
            f"dataset '{name}' ({source}): column '{image_column}' of split '{split}' is "
            f"{type(ds.features[image_column]).__name__}, expected an Image feature"
        )
    label = ds.features[label_column]
    if not (isinstance(label, ClassLabel) or (isinstance(label, Value) and "int" in label.dtype)):
        raise HfpruneError(
            f"dataset '{name}' ({source}): column '{label_column}' of split '{split}' is {label}, "
            f"expected a ClassLabel or integer feature"
        )


def _num_labels(feature, labels: list[np.ndarray], fallback: int | None) -> int:
    from datasets import ClassLabel

    if isinstance(feature, ClassLabel):
        return feature.num_classes
    if fallback is not None:
        return fallback
    return int(max((int(x.max()) for x in labels if len(x)), default=-1)) + 1


def _decode_images(name: str, source: str, ds, image_column: str, mode: str) -> np.ndarray:
    """All images of ``ds`` as one uint8 array ``[N, H, W]`` (mode L) or ``[N, H, W, C]``."""
    from datasets import Image as ImageFeature
    from PIL import Image

    raw = ds.select_columns([image_column]).cast_column(image_column, ImageFeature(decode=False))
    out: np.ndarray | None = None
    i = 0
    for batch in raw.with_format("arrow").iter(batch_size=_BATCH):
        column = batch.column(image_column).combine_chunks()
        for data, file in zip(column.field("bytes").to_pylist(), column.field("path").to_pylist()):
            image = Image.open(io.BytesIO(data) if data is not None else file)
            if image.mode != mode:
                image = image.convert(mode)
            array = np.asarray(image)
            if out is None:
                out = np.empty((len(ds), *array.shape), dtype=np.uint8)
            if array.shape != out.shape[1:]:
                raise HfpruneError(
                    f"dataset '{name}' ({source}): image {i} has shape {array.shape}, the first had "
                    f"{out.shape[1:]}; all images of a dataset must have the same size"
                )
            out[i] = array
            i += 1
    if out is None:  # an empty split
        return np.empty((0, 1, 1) if mode == "L" else (0, 1, 1, 3), dtype=np.uint8)
    return out


def load_hub_image_classification(
    name: str,
    hub_id: str,
    path: str | None,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    image_column: str = "image",
    label_column: str = "label",
    *,
    hub_config: str | None = None,
    num_labels: int | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    limit_seed: int = 0,
) -> ImageClassificationData:
    """Load splits ``train``/``test`` of ``hub_id`` (or the local copy at ``path``) into memory.

    Images are converted to grayscale (one entry in ``mean``) or RGB (three), resized to
    ``image_size`` (bilinear) and normalised. The label count comes from the ``ClassLabel``
    feature, else ``num_labels``, else the largest label + 1. Limits keep a stratified
    subset (seeded by ``limit_seed``), chosen before any image is decoded.
    """
    if len(mean) not in (1, 3):
        raise ValueError(f"mean/std must have 1 (grayscale) or 3 (RGB) entries, got {len(mean)}")
    mode = "L" if len(mean) == 1 else "RGB"
    source = f"data.path '{path}'" if path is not None else f"'{hub_id}'"
    dataset_dict = _load_dataset_dict(name, hub_id, path, hub_config)
    missing = [s for s in SPLITS if s not in dataset_dict]
    if missing:
        raise HfpruneError(
            f"dataset '{name}' ({source}): no split {', '.join(repr(s) for s in missing)} "
            f"(splits: {', '.join(dataset_dict)}); a copy needs the splits {' and '.join(SPLITS)}"
        )
    splits, all_labels = {}, []
    for split, limit in zip(SPLITS, (train_limit, test_limit)):
        ds = dataset_dict[split]
        _check_schema(name, source, split, ds, image_column, label_column)
        labels = ds.with_format("arrow", columns=[label_column])[:][label_column].to_numpy().astype(np.int64)
        keep = stratified_subset(labels, limit, limit_seed)
        if len(keep) < len(labels):
            ds, labels = ds.select(keep), labels[keep]
        splits[split] = (ds, labels)
        all_labels.append(labels)
    count = _num_labels(dataset_dict["train"].features[label_column], all_labels, num_labels)
    sets = {}
    for split, (ds, labels) in splits.items():
        if len(labels) and (labels.min() < 0 or labels.max() >= count):
            raise HfpruneError(
                f"dataset '{name}' ({source}): split '{split}' has labels outside 0..{count - 1} "
                f"in column '{label_column}'"
            )
        images = _decode_images(name, source, ds, image_column, mode)
        if images.ndim == 4:  # [N, H, W, C] → [N, C, H, W]
            images = images.transpose(0, 3, 1, 2)
        sets[split] = TensorImageSet(
            to_normalised_tensor(images, image_size, mean, std), torch.from_numpy(labels)
        )
    return ImageClassificationData(name=name, train=sets["train"], test=sets["test"], num_labels=count)
