"""Tiny CIFAR-10/100 copies in the exact Hub schema, written into temporary directories.

``uoft-cs/cifar10`` (config ``plain_text``): ``img`` (Image, 32×32 RGB PNG) and ``label`` (ClassLabel, 10 names);
``uoft-cs/cifar100`` (config ``cifar100``): ``img``, ``fine_label`` (ClassLabel, 100) and ``coarse_label``
(ClassLabel, 20). A repository download keeps ``{config}/{split}-00000-of-00001.parquet`` with a dataset card
that declares the config. Each image's red channel encodes its label, so a test can check the pairing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def red_of(label: int) -> int:
    return 20 + 2 * int(label)


def make_cifar_like(kind: str = "cifar10", n_train: int = 40, n_test: int = 20, seed: int = 0):
    """A ``DatasetDict`` (train/test) in the Hub schema of ``kind`` ('cifar10' or 'cifar100'); returns
    (dict, {split: raw uint8 images [N, 32, 32, 3]}, {split: labels})."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = 10 if kind == "cifar10" else 100
    label_column = "label" if kind == "cifar10" else "fine_label"
    names = CIFAR10_NAMES if kind == "cifar10" else [f"class_{i}" for i in range(100)]
    features = {"img": datasets.Image(), label_column: datasets.ClassLabel(names=names)}
    if kind == "cifar100":
        features["coarse_label"] = datasets.ClassLabel(names=[f"super_{i}" for i in range(20)])
    splits, raws, labels = {}, {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.permutation(np.resize(np.arange(min(classes, n)), n))
        raw = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        raw[..., 0] = np.array([red_of(label) for label in y], dtype=np.uint8)[:, None, None]
        columns = {"img": [Image.fromarray(image, mode="RGB") for image in raw], label_column: y.tolist()}
        if kind == "cifar100":
            columns["coarse_label"] = (y % 20).tolist()
        splits[split] = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        raws[split], labels[split] = raw, y
    return datasets.DatasetDict(splits), raws, labels


_CARD = """---
dataset_info:
  config_name: {config}
configs:
- config_name: {config}
  data_files:
  - split: train
    path: {config}/train-*
  - split: test
    path: {config}/test-*
  default: true
---
# {config} (test fixture)
"""


def write_cifar_hub_layout(root: Path, dataset_dict, config: str) -> Path:
    """The layout of ``hf download uoft-cs/<name> --repo-type dataset``: ``{config}/{split}-...parquet``."""
    target = Path(root) / f"hub_{config}"
    (target / config).mkdir(parents=True)
    for split, ds in dataset_dict.items():
        ds.to_parquet(str(target / config / f"{split}-00000-of-00001.parquet"))
    (target / "README.md").write_text(_CARD.format(config=config), encoding="utf-8")
    return target


def cifar10_copy(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """A CIFAR-10 download (Hub layout) for recipe tests."""
    return write_cifar_hub_layout(root, make_cifar_like("cifar10", n_train, n_test)[0], "plain_text")


def cifar100_copy(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """A CIFAR-100 copy (``save_to_disk``) for recipe tests."""
    target = Path(root) / "cifar100_saved"
    make_cifar_like("cifar100", n_train, n_test)[0].save_to_disk(str(target))
    return target
