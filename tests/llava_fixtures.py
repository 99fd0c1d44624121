"""A small copy of ``llava_v1_5_mix665k.json`` in its real schema, with its images, written into a directory.

``write_llava_fixture(root)`` writes ``root/llava_v1_5_mix665k.json`` and small random RGB JPEGs under
``root/images/{coco/train2017, gqa/images, ocr_vqa/images, textvqa/train_images, vg/VG_100K}``, and returns
``(json_path, image_root)``. Samples cycle through the sources of the real mix: multi-turn COCO conversations,
GQA/OCR-VQA/TextVQA/VG short answers, and text-only ShareGPT conversations (no ``image``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SHORT = "Answer the question using a single word or phrase."


def _coco(number: int, rng: random.Random) -> dict:
    image_id = f"{number:012d}"
    return {"id": image_id, "image": f"coco/train2017/{image_id}.jpg", "conversations": [
        _human(f"<image>\nWhat is the {rng.choice(['cat', 'dog', 'man'])} doing?"),
        _gpt("The cat is sitting on a blue mat, looking at the camera."),
        _human("What colour is the mat?"), _gpt("The mat is blue."),
        _human("Is it indoors?"), _gpt("Yes, it appears to be inside a house."),
    ]}


def _gqa(number: int, rng: random.Random) -> dict:
    image_id = str(2354786 + number)
    return {"id": image_id, "image": f"gqa/images/{image_id}.jpg", "conversations": [
        _human(f"<image>\nWhich side is the {rng.choice(['car', 'tree'])} on?\n{SHORT}"), _gpt("Left"),
        _human(f"Is the sky blue?\n{SHORT}"), _gpt("Yes"),
    ]}


def _ocr_vqa(number: int, rng: random.Random) -> dict:
    image_id = str(140031996 + number)
    return {"id": image_id, "image": f"ocr_vqa/images/{image_id}.jpg", "conversations": [
        _human("Who wrote this book?\n<image>"), _gpt(rng.choice(["Jane Austen", "Émile Zola"])),
        _human("Is this a cookbook?"), _gpt("No"),
    ]}


def _textvqa(number: int, rng: random.Random) -> dict:
    image_id = f"0a0bc91825468{number:03x}"
    return {"id": image_id, "image": f"textvqa/train_images/{image_id}.jpg", "conversations": [
        _human(f"<image>\nwhat number is on the jersey?\nReference OCR token: 23, TEAM\n{SHORT}"),
        _gpt(str(rng.randint(0, 99))),
    ]}


def _vg(number: int, rng: random.Random) -> dict:
    image_id = str(2338 + number)
    return {"id": image_id, "image": f"vg/VG_100K/{image_id}.jpg", "conversations": [
        _human("<image>\nPlease provide a short description for this region: [0.12, 0.3, 0.5, 0.77]."),
        _gpt(rng.choice(["A red car.", "Two people walking."])),
    ]}


def _sharegpt(number: int, rng: random.Random) -> dict:
    return {"id": f"i6IyJda_{number}", "conversations": [
        _human("Write a haiku about autumn leaves."),
        _gpt("Crimson leaves drift down,\nwhispering to the cold ground —\nthe year lets go slow."),
        _human(rng.choice(["Now one about snow.", "Explain it."])),
        _gpt("Silent flakes settle,\ncovering the sleeping field\nin a soft white breath."),
    ]}


SOURCES = (_coco, _gqa, _sharegpt, _ocr_vqa, _textvqa, _sharegpt, _vg)


def _human(value: str) -> dict:
    return {"from": "human", "value": value}


def _gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def _write_image(path: Path, rng: random.Random) -> None:
    from PIL import Image

    width, height = rng.randint(12, 40), rng.randint(12, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", (width, height), rng.randbytes(3 * width * height)).save(path, format="JPEG")


def write_llava_fixture(root: str | Path, n: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """Write ``n`` samples (two or more text-only ones when n >= 6) and their images; return (json, image root)."""
    root, rng = Path(root), random.Random(seed)
    image_root = root / "images"
    samples = [SOURCES[index % len(SOURCES)](index, rng) for index in range(n)]
    for sample in samples:
        if "image" in sample:
            _write_image(image_root / sample["image"], rng)
    json_path = root / "llava_v1_5_mix665k.json"
    json_path.write_text(json.dumps(samples, indent=1, ensure_ascii=False), encoding="utf-8")
    return json_path, image_root
