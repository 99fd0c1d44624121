"""Small copies of the five benchmarks in their Hub schemas, written into temporary directories.

``write_fixture(name, root, layout)`` writes the copy of benchmark ``name`` (``gqa``, ``sqa_img``,
``textvqa`` and ``textvqa_ocr``, ``pope``, ``mmvet``) under ``root`` and returns the directory to give as data path:

- ``layout="hub"``: parquet files where a download of the Hub repository has them
  (``testdev_balanced_instructions/testdev-00000-of-00001.parquet``, ``data/test-0000i-of-00003.parquet``, ...);
- ``layout="save_to_disk"``: ``DatasetDict.save_to_disk`` directories (one per config for GQA).

Images are 8×8 squares of one colour, :func:`colour` of a number the rows record, so a test can
check that every sample got its own image (GQA: the image's ``id``; elsewhere the row index).
"""

from __future__ import annotations

from pathlib import Path

CATEGORIES = ("adversarial", "popular", "random")


def colour(number: int) -> tuple[int, int, int]:
    return (number * 40 % 256, 255 - number * 40 % 256, 100)


def image(number: int):
    from PIL import Image

    return Image.new("RGB", (8, 8), colour(number))


def _dataset(columns: dict, features: dict):
    import datasets

    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def gqa() -> dict:
    """Configs testdev_balanced_instructions and testdev_balanced_images, split testdev."""
    from datasets import Image, Value

    image_ids = ["n100", "n200", "n300"]
    questions = [  # (image index, question, answer); images referenced out of order
        (2, "What color is the car?", "red"),
        (0, "Is the sky blue?", "yes"),
        (1, "Which animal is it?", "dog"),
        (0, "What is on the table?", "cup"),
        (2, "Is it raining?", "no"),
    ]
    instructions = _dataset(
        {
            "id": [f"20{i:05d}" for i in range(len(questions))],
            "imageId": [image_ids[k] for k, _, _ in questions],
            "question": [q for _, q, _ in questions],
            "answer": [a for _, _, a in questions],
            "fullAnswer": [f"The answer is {a}." for _, _, a in questions],
            "isBalanced": [True] * len(questions),
            "types": [{"structural": "query", "semantic": "attr", "detailed": "color"}] * len(questions),
        },
        {
            "id": Value("string"), "imageId": Value("string"), "question": Value("string"),
            "answer": Value("string"), "fullAnswer": Value("string"), "isBalanced": Value("bool"),
            "types": {"structural": Value("string"), "semantic": Value("string"), "detailed": Value("string")},
        },
    )
    images = _dataset(
        {"id": image_ids, "image": [image(i) for i in range(len(image_ids))]},
        {"id": Value("string"), "image": Image()},
    )
    return {"testdev_balanced_instructions": instructions, "testdev_balanced_images": images}


def sqa_img() -> dict:
    """Config ScienceQA-IMG, split test; row 2 has no image (so it is not an image question)."""
    from datasets import Image, Sequence, Value

    rows = [
        ("Which animal can fly?", ["cat", "bird", "fish"], 1, "Look at the picture."),
        ("What is the capital of France?", ["Paris", "Rome"], 0, ""),
        ("Which is a liquid?", ["ice", "water"], 1, ""),
        ("Which object is magnetic?", ["nail", "cork", "glass", "paper"], 0, "A magnet attracts iron."),
    ]
    n = len(rows)
    strings = ["task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"]
    columns = {
        "image": [None if i == 2 else image(i) for i in range(n)],
        "question": [r[0] for r in rows],
        "choices": [r[1] for r in rows],
        "answer": [r[2] for r in rows],
        "hint": [r[3] for r in rows],
        **{name: [f"{name} {i}" for i in range(n)] for name in strings},
    }
    features = {
        "image": Image(), "question": Value("string"), "choices": Sequence(Value("string")),
        "answer": Value("int8"), "hint": Value("string"), **{name: Value("string") for name in strings},
    }
    return {"ScienceQA-IMG": _dataset(columns, features)}


def textvqa() -> dict:
    """Default config, split validation, ten human answers per question."""
    from datasets import Image, Sequence, Value

    answers = [
        ["coca cola"] * 3 + ["coke"] * 7,
        ["two"] * 4 + ["2"] * 6,
        ["stop"] * 10,
    ]
    n = len(answers)
    columns = {
        "image_id": [f"img{i}" for i in range(n)],
        "question_id": [34602 + i for i in range(n)],
        "question": ["what brand is this?", "how many cups are there?", "what does the sign say?"],
        "question_tokens": [["what", "brand"], ["how", "many"], ["what", "sign"]],
        "image": [image(i) for i in range(n)],
        "image_width": [8] * n,
        "image_height": [8] * n,
        "flickr_original_url": [f"https://example.invalid/{i}.jpg" for i in range(n)],
        "flickr_300k_url": [f"https://example.invalid/300k/{i}.jpg" for i in range(n)],
        "answers": answers,
        "image_classes": [["Bottle"], ["Cup"], ["Sign"]],
        "set_name": ["val"] * n,
        "ocr_tokens": [["coca", "cola"], ["2"], ["STOP"]],
    }
    features = {
        "image_id": Value("string"), "question_id": Value("int32"), "question": Value("string"),
        "question_tokens": Sequence(Value("string")), "image": Image(), "image_width": Value("int32"),
        "image_height": Value("int32"), "flickr_original_url": Value("string"),
        "flickr_300k_url": Value("string"), "answers": Sequence(Value("string")),
        "image_classes": Sequence(Value("string")), "set_name": Value("string"),
        "ocr_tokens": Sequence(Value("string")),
    }
    return {None: _dataset(columns, features)}


def pope() -> dict:
    """Default config, split test: the three categories one after another, two questions each.

    As in POPE's source files, question ids restart in every category.
    """
    from datasets import Image, Value

    rows = [(c, q, a) for c in CATEGORIES for q, a in ((1, "yes"), (2, "no"))]
    objects = ["dog", "cat"]
    columns = {
        "id": [str(i) for i in range(len(rows))],
        "question_id": [str(q) for _, q, _ in rows],
        "question": [f"Is there a {objects[q - 1]} in the image?" for _, q, _ in rows],
        "answer": [a for _, _, a in rows],
        "image_source": [f"COCO_val2014_{i:012d}" for i in range(len(rows))],
        "image": [image(i) for i in range(len(rows))],
        "category": [c for c, _, _ in rows],
    }
    features = {
        "id": Value("string"), "question_id": Value("string"), "question": Value("string"),
        "answer": Value("string"), "image_source": Value("string"), "image": Image(), "category": Value("string"),
    }
    return {None: _dataset(columns, features)}


def mmvet() -> dict:
    """Default config, split test; ``capability`` is comma-separated."""
    from datasets import Image, Value

    rows = [
        ("v1_0", "What is x in the equation?", "-1<AND>-5", "ocr,math"),
        ("v1_1", "What is d in the last equation?", "1.25<OR>5/4", "ocr,math"),
        ("v1_2", "What is the animal?", "giraffe", "rec"),
    ]
    columns = {
        "question_id": [r[0] for r in rows],
        "image": [image(i) for i in range(len(rows))],
        "question": [r[1] for r in rows],
        "answer": [r[2] for r in rows],
        "image_source": [f"source_{i}" for i in range(len(rows))],
        "capability": [r[3] for r in rows],
    }
    features = {
        "question_id": Value("string"), "image": Image(), "question": Value("string"),
        "answer": Value("string"), "image_source": Value("string"), "capability": Value("string"),
    }
    return {None: _dataset(columns, features)}


BUILDERS = {"gqa": gqa, "sqa_img": sqa_img, "textvqa": textvqa, "textvqa_ocr": textvqa, "pope": pope, "mmvet": mmvet}
SPLITS = {"gqa": "testdev", "sqa_img": "test", "textvqa": "validation", "textvqa_ocr": "validation", "pope": "test",
          "mmvet": "test"}
SHARDS = {"pope": 3}  # the Hub copy of POPE's test split is three parquet files


def write_fixture(name: str, root: Path, layout: str = "hub", configs: dict | None = None) -> Path:
    """Write benchmark ``name``'s fixture (or the given ``{config: Dataset}``) under ``root``."""
    import datasets

    root = Path(root) / f"{name}-{layout}"
    split = SPLITS[name]
    for config, ds in (configs or BUILDERS[name]()).items():
        if layout == "save_to_disk":
            datasets.DatasetDict({split: ds}).save_to_disk(str(root / config if config else root))
            continue
        shards = SHARDS.get(name, 1)
        for i in range(shards):
            path = root / (config or "data") / f"{split}-{i:05d}-of-{shards:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.shard(shards, i, contiguous=True).to_parquet(str(path))
    return root


def write_all(root: Path, layout: str = "hub") -> dict[str, Path]:
    """Every benchmark's fixture under ``root``: ``{benchmark name: data path}``."""
    return {name: write_fixture(name, root, layout) for name in BUILDERS}
