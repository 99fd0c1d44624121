"""LLaVA-1.5 instruction data (``llava_v1_5_mix665k.json``) in TinyLLaVA's Phi template, with label masks.

A conversation is rendered as ``"{system} USER: <image>\\n{q} ASSISTANT: {a}<|endoftext|>USER: {q} ASSISTANT: ..."``
(docs/studies.md §4; the same text as the processor's chat template). Labels are −100 on the system prompt, on every
``USER: … ASSISTANT:`` prefix, on the image tokens and on padding; answers and their ``<|endoftext|>`` are
supervised.

Tokenisation. The text is cut into pieces — an unsupervised prefix ``[system ]USER: [<image>\\n]{q} ASSISTANT:``
and a supervised answer ``" {a}<|endoftext|>"`` per turn — and each piece is tokenised on its own, so the label
boundaries are exact. Every cut sits where a GPT-2-style byte-level pre-tokeniser (Phi's) cuts anyway (after
``ASSISTANT:`` before a space-led word, and after the special ``<|endoftext|>``), and BPE never merges across
pre-tokens: the pieces give the same ids as tokenising the whole text, which the tests check against the
processor. The space after ``ASSISTANT:`` therefore belongs to the answer's first token (``" A"``), exactly as in
TinyLLaVA Factory, whose mask stops one token before the tokenised ``"ASSISTANT: "``. The ``<image>`` token is
expanded to ``image_seq_length`` image tokens, as the processor does.

Truncation. Sequences are cut at ``max_length`` from the end: only text after the image can be lost (the image
sits in the first user turn, right after the system prompt). A ``max_length`` too short to hold the image
tokens is refused when the dataset is built. A sample whose answers are all cut off has no supervised token;
the token-weighted losses of :mod:`hfprune.evaluation.lm_loss` simply count nothing for it.

Like LLaVA and TinyLLaVA Factory, a conversation that starts with a ``gpt`` turn has that turn dropped, and the
``<image>`` placeholder is moved to the front of the first question (``"<image>\\n" + question.strip()``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from hfprune.errors import HfpruneError
from hfprune.models.llava.chat import PHI_SYSTEM

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
END_OF_TURN = "<|endoftext|>"
HUMAN, GPT = "human", "gpt"


@dataclass(frozen=True)
class Conversation:
    """One validated sample: ``turns`` are (question, answer) pairs, the first question without ``<image>``."""

    id: str
    image: str | None
    turns: tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------------------------------------------
# Reading and validating the JSON file


def read_llava_json(json_path: str | Path) -> list[Conversation]:
    """All samples of a LLaVA instruction file, validated; a bad file raises a one-line HfpruneError."""
    json_path = Path(json_path)
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HfpruneError(f"LLaVA instruction file '{json_path}' not found (e.g. llava_v1_5_mix665k.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HfpruneError(f"'{json_path}' is not valid JSON: {error}") from None
    return parse_conversations(raw, source=str(json_path))


def parse_conversations(raw, source: str) -> list[Conversation]:
    """Validate the parsed JSON (a list of samples); ``source`` names the file in error messages."""
    if not isinstance(raw, list):
        raise HfpruneError(f"'{source}' must hold a JSON list of samples, found a {type(raw).__name__}")
    return [parse_conversation(record, index, source) for index, record in enumerate(raw)]


def parse_conversation(record, index: int, source: str) -> Conversation:
    """One sample ``{"id", "image"?, "conversations": [{"from", "value"}, ...]}`` as a :class:`Conversation`."""
    sample_id = str(record.get("id", index)) if isinstance(record, dict) else str(index)

    def fail(problem: str) -> HfpruneError:
        return HfpruneError(f"'{source}', sample {index} (id {sample_id!r}): {problem}")

    if not isinstance(record, dict):
        raise fail(f"expected an object with 'conversations', found a {type(record).__name__}")
    messages = record.get("conversations")
    if not isinstance(messages, list) or not messages:
        raise fail("missing or empty 'conversations' list")
    image = record.get("image")
    if image is not None and not (isinstance(image, str) and image):
        raise fail(f"'image' must be a relative path string, found {image!r}")
    turns = _turns(messages, fail)
    return Conversation(sample_id, image, _place_image(turns, image is not None, fail))


def _turns(messages: list, fail) -> tuple[tuple[str, str], ...]:
    for position, message in enumerate(messages):
        if not (isinstance(message, dict) and message.get("from") in (HUMAN, GPT)
                and isinstance(message.get("value"), str)):
            raise fail(f"conversations[{position}] must be {{'from': 'human' | 'gpt', 'value': str}}, "
                       f"found {str(message)[:80]!r}")
    skipped = 1 if messages[0]["from"] == GPT else 0
    for position in range(skipped, len(messages)):
        expected = HUMAN if (position - skipped) % 2 == 0 else GPT
        if messages[position]["from"] != expected:
            raise fail(f"conversations[{position}] is from '{messages[position]['from']}', expected '{expected}' "
                       "(turns must alternate human, gpt)")
    if (len(messages) - skipped) % 2 or len(messages) == skipped:
        raise fail("the conversation must end with a 'gpt' answer to every 'human' turn")
    values = [message["value"] for message in messages[skipped:]]
    return tuple(zip(values[::2], values[1::2]))


def _place_image(turns: tuple[tuple[str, str], ...], has_image: bool, fail) -> tuple[tuple[str, str], ...]:
    placeholders = [sum(text.count(IMAGE_PLACEHOLDER) for text in turn) for turn in turns]
    if not has_image:
        if any(placeholders):
            raise fail(f"'{IMAGE_PLACEHOLDER}' in a sample without 'image'")
        return turns
    if placeholders[0] != 1 or turns[0][0].count(IMAGE_PLACEHOLDER) != 1 or any(placeholders[1:]):
        raise fail(f"a sample with an image needs exactly one '{IMAGE_PLACEHOLDER}', in its first question")
    first_question, first_answer = turns[0]
    return ((first_question.replace(IMAGE_PLACEHOLDER, "").strip(), first_answer),) + turns[1:]


# ---------------------------------------------------------------------------------------------------------------
# Images


def missing_images(conversations: Sequence[Conversation], image_root: str | Path) -> list[str]:
    """The image paths (relative) of ``conversations`` that are not files under ``image_root``."""
    root = Path(image_root)
    return [c.image for c in conversations if c.image is not None and not (root / c.image).is_file()]


def check_images(conversations: Sequence[Conversation], image_root: str | Path, first: int = 5) -> None:
    """Raise an HfpruneError naming the first ``first`` missing image files, if any."""
    missing = missing_images(conversations, image_root)
    if missing:
        raise HfpruneError(f"{len(missing)} image(s) missing under image root '{image_root}', e.g. "
                           f"{', '.join(missing[:first])}; put the LLaVA-1.5 images (coco, gqa, ocr_vqa, textvqa, "
                           "vg) there or give the right image root")


def load_image(conversation: Conversation, image_root: Path):
    """The sample's image as an RGB PIL image; a missing or unreadable file raises an HfpruneError."""
    from PIL import Image

    path = image_root / conversation.image
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise HfpruneError(f"image '{conversation.image}' of sample {conversation.id!r} not found under image root "
                           f"'{image_root}' (looked for '{path}')") from None
    except OSError as error:
        raise HfpruneError(f"cannot read image '{path}' of sample {conversation.id!r}: {error}") from None


# ---------------------------------------------------------------------------------------------------------------
# Template and tokenisation


def template_pieces(conversation: Conversation, system: str = PHI_SYSTEM) -> list[tuple[str, bool]]:
    """The Phi-template text as ``(text, supervised)`` pieces: a prefix and an answer per turn."""
    pieces = []
    for turn, (question, answer) in enumerate(conversation.turns):
        start = f"{system} USER: " if turn == 0 else "USER: "
        image = f"{IMAGE_PLACEHOLDER}\n" if turn == 0 and conversation.image is not None else ""
        pieces += [(f"{start}{image}{question} ASSISTANT:", False), (f" {answer}{END_OF_TURN}", True)]
    return pieces


def tokenize_conversation(conversation: Conversation, tokenizer, image_token_id: int, image_seq_length: int,
                          max_length: int | None, system: str = PHI_SYSTEM) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one conversation, image token expanded, cut to ``max_length`` tokens."""
    input_ids = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) else []
    labels = [IGNORE_INDEX] * len(input_ids)
    for text, supervised in template_pieces(conversation, system):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        if supervised:
            labels += piece
        else:
            piece = _expand(piece, image_token_id, image_seq_length)
            labels += [IGNORE_INDEX] * len(piece)
        input_ids += piece
    return input_ids[:max_length], labels[:max_length]


def _expand(ids: list[int], image_token_id: int, image_seq_length: int) -> list[int]:
    expanded = []
    for token in ids:
        expanded += [token] * image_seq_length if token == image_token_id else [token]
    return expanded


def image_seq_length_of(processor) -> int:
    """Image tokens per image that a LLaVA processor inserts (``config.image_seq_length``; 729 for TinyLLaVA-3.1B)."""
    size = getattr(processor.image_processor, "size", None) or {}
    patch_size = getattr(processor, "patch_size", None)
    if not (patch_size and "height" in size and "width" in size):
        raise HfpruneError("cannot tell the number of image tokens from the processor; pass image_seq_length "
                           "(the model's config.image_seq_length)")
    count = (size["height"] // patch_size) * (size["width"] // patch_size)
    count += getattr(processor, "num_additional_image_tokens", 0) or 0
    return count - (getattr(processor, "vision_feature_select_strategy", None) == "default")


# ---------------------------------------------------------------------------------------------------------------
# Dataset


def collate(samples: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of samples; ``pixel_values`` stacks the images of the samples that have one, in order."""
    length = max(len(sample["input_ids"]) for sample in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
    for row, sample in enumerate(samples):
        size = len(sample["input_ids"])
        input_ids[row, :size] = sample["input_ids"]
        labels[row, :size] = sample["labels"]
        attention_mask[row, :size] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    images = [sample["pixel_values"] for sample in samples if sample["pixel_values"] is not None]
    if images:
        batch["pixel_values"] = torch.stack(images)
    return batch


class LlavaInstructionDataset(torch.utils.data.Dataset):
    """Tokenised, label-masked LLaVA conversations; images are read when a sample is loaded.

    ``dataset[i]`` is one sample (``input_ids``, ``labels``, ``pixel_values`` or None);
    ``dataset.__getitems__(indices)`` is a collated, right-padded batch (see :func:`collate`).
    """

    def __init__(self, records: Sequence[Conversation], image_root: str | Path, processor,
                 image_seq_length: int | None = None, max_length: int = 2048):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_seq_length = image_seq_length or image_seq_length_of(processor)
        self.max_length = max_length
        self.image_token_id = self._image_token_id()
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = self.tokenizer.eos_token_id if pad is None else pad
        if any(record.image is not None for record in self.records):
            self._check_image_fits()

    def _image_token_id(self) -> int:
        image_token = getattr(self.processor, "image_token", IMAGE_PLACEHOLDER)
        ids = self.tokenizer(IMAGE_PLACEHOLDER, add_special_tokens=False)["input_ids"]
        if ids != [self.tokenizer.convert_tokens_to_ids(image_token)]:
            raise HfpruneError(f"the processor's tokenizer does not read '{IMAGE_PLACEHOLDER}' as its image token "
                               f"'{image_token}'; use the processor saved with the LLaVA model")
        return ids[0]

    def _check_image_fits(self) -> None:
        probe = Conversation("probe", "probe.jpg", (("", ""),))
        input_ids, _ = self._tokenize(probe, max_length=None)
        image_end = len(input_ids) - input_ids[::-1].index(self.image_token_id)
        if self.max_length < image_end:
            raise HfpruneError(f"max_length={self.max_length} cannot hold the {self.image_seq_length} image tokens "
                               f"(they end at token {image_end}); raise max_length")

    def _tokenize(self, conversation: Conversation, max_length: int | None) -> tuple[list[int], list[int]]:
        return tokenize_conversation(conversation, self.tokenizer, self.image_token_id, self.image_seq_length,
                                     max_length)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        conversation = self.records[index]
        input_ids, labels = self._tokenize(conversation, self.max_length)
        pixel_values = None
        if conversation.image is not None:
            image = load_image(conversation, self.image_root)
            pixel_values = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels), "pixel_values": pixel_values}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return collate([self[index] for index in indices], self.pad_token_id)


# ---------------------------------------------------------------------------------------------------------------
# Loading and sub-sampling


def subsample(n_total: int, n: int | None, seed: int) -> list[int]:
    """``n`` of ``range(n_total)``, sorted; the same on every machine and version, nested in ``n`` for one seed.

    Indices are ranked by a keyed hash of ``(seed, index)``; the subset is the ``n`` lowest ranks, so a larger
    ``n`` extends a smaller one. ``n=None`` or ``n >= n_total`` takes everything.
    """
    if n is None or n >= n_total:
        return list(range(n_total))
    if n < 0:
        raise HfpruneError(f"cannot take {n} samples; the number of samples must be >= 0")
    return sorted(heapq.nsmallest(n, range(n_total), key=lambda index: _rank(seed, index)))


def _rank(seed: int, index: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()


def load_llava_instructions(json_path: str | Path, image_root: str | Path, processor, *, limit: int | None = None,
                            seed: int = 0, max_length: int = 2048, image_seq_length: int | None = None,
                            verify_images: bool = True) -> LlavaInstructionDataset:
    """A LLaVA instruction file as a dataset; ``limit`` keeps a deterministic subset (:func:`subsample`).

    With ``verify_images`` the kept samples' image files are checked up front (first few missing ones named).
    """
    conversations = read_llava_json(json_path)
    kept = [conversations[index] for index in subsample(len(conversations), limit, seed)]
    if verify_images:
        check_images(kept, image_root)
    return LlavaInstructionDataset(kept, image_root, processor, image_seq_length, max_length)
