"""LLaVA-1.5 conversations for any vision-language model: rendered with the model's own processor and chat template,
labels −100 everywhere but the answers.

Rendering. A conversation (:class:`hfprune.data.llava.Conversation`) becomes chat messages — the image part first in
the first question, as LLaVA places it, every content a list of ``{"type": ...}`` parts — and the processor's chat
template renders them. Where the answers are (as character spans of the rendered text):

- a template that marks answers with ``{% generation %}`` says so itself (transformers' assistant masks);
- any other template is rendered prefix by prefix: answer *i* is what the conversation through answer *i* adds to
  the conversation up to question *i* with the generation prompt — the answer and whatever the template closes an
  assistant turn with (``<|im_end|>\\n``, ``<end_of_turn>\\n``, ``<|endoftext|>``). That is exact only if every such
  prefix is the start of the next one (the template is *prefix-stable*); a template that is not is refused with one
  line naming where it differs.

Tokens. A batch goes through the processor once (text and images together, so it expands image placeholders as it
does for generation — e.g. Qwen2-VL's count per image — and returns every tensor the model takes, such as
``image_grid_thw`` or ``pixel_attention_mask``), right-padded. Each row's expanded text is rebuilt from the
processor's replacement offsets and tokenised with offsets; its ids must equal the processor's (else the processor
changes the text in another way, and the sample is refused). A token is supervised when it overlaps an answer span
(transformers' rule for assistant masks); image tokens, prompts and padding are −100. Sequences are cut at
``max_length`` from the end; a sample whose image tokens would be cut is refused.

:func:`load_conversations` picks TinyLLaVA's Phi path (:mod:`hfprune.data.llava`, unchanged tokens) for a processor
with the Phi chat template, this rendering for every other processor.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from hfprune.data.llava import (
    IGNORE_INDEX,
    Conversation,
    LlavaInstructionDataset,
    check_images,
    load_image,
    read_llava_json,
    subsample,
)
from hfprune.errors import HfpruneError
from hfprune.models.llava.chat import PHI_CHAT_TEMPLATE

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


def chat_messages(conversation: Conversation) -> list[dict]:
    """The conversation as chat messages: every content a list of parts, the image part first in the first
    question."""
    messages = []
    for turn, (question, answer) in enumerate(conversation.turns):
        content = [{"type": "text", "text": question}]
        if turn == 0 and conversation.image is not None:
            content.insert(0, {"type": "image"})
        messages += [{"role": "user", "content": content},
                     {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return messages


def chat_template(processor) -> str:
    """The processor's chat template (its ``default`` one where it has several); an HfpruneError when it has none."""
    template = getattr(processor, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template:
        raise HfpruneError("the model's processor has no chat template, and conversations are rendered with the "
                           "model's own template (PaliGemma checkpoints ship none); give the processor a "
                           "chat_template, or prune with a method that needs no data (ump, gmp, onp, pnp)")
    return template


@dataclass(frozen=True)
class Rendered:
    """A conversation as the chat template renders it, with the character spans of its answers."""

    text: str
    answers: tuple[tuple[int, int], ...]


def _render(processor, messages: list[dict], generation_prompt: bool) -> str:
    try:
        return processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
    except Exception as error:  # noqa: BLE001 - a template's own raise_exception, Jinja errors
        raise HfpruneError(f"the model's chat template cannot render a conversation ({type(error).__name__}: "
                           f"{error})") from None


def _difference(shorter: str, longer: str) -> str:
    """Where ``longer`` stops starting with ``shorter``: a few characters of each from there, for a message."""
    at = next((i for i, (a, b) in enumerate(zip(shorter, longer)) if a != b), min(len(shorter), len(longer)))
    start = max(0, at - 20)
    return f"{shorter[start:at + 12]!r} vs {longer[start:at + 12]!r}"


def render_conversation(processor, conversation: Conversation) -> Rendered:
    """The conversation rendered by the processor's chat template, with its answers' spans (module docstring)."""
    template = chat_template(processor)
    messages = chat_messages(conversation)
    if _GENERATION.search(template):
        return _marked(processor, template, messages)
    text = _render(processor, messages, False)
    answers = []
    for turn in range(len(conversation.turns)):
        asked = _render(processor, messages[:2 * turn + 1], True)
        answered = _render(processor, messages[:2 * turn + 2], False)
        for shorter, longer in ((asked, answered), (answered, text)):
            if not longer.startswith(shorter):
                raise HfpruneError(
                    f"the model's chat template is not prefix-stable: the conversation up to answer {turn + 1} "
                    f"does not begin the longer one ({_difference(shorter, longer)}), so answers cannot be told "
                    "apart from prompts exactly; give the processor a template whose generation prompt begins every "
                    "assistant turn, or one that marks answers with {% generation %}")
        answers.append((len(asked), len(answered)))
    return Rendered(text, tuple(answers))


def _marked(processor, template: str, messages: list[dict]) -> Rendered:
    """Answer spans from the template's ``{% generation %}`` blocks (transformers' assistant masks)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        prompts, spans = render_jinja_template(conversations=[messages], chat_template=template,
                                               return_assistant_tokens_mask=True,
                                               **processor.tokenizer.special_tokens_map)
    except Exception as error:  # noqa: BLE001 - a template's own raise_exception, Jinja errors
        raise HfpruneError(f"the model's chat template cannot render a conversation ({type(error).__name__}: "
                           f"{error})") from None
    return Rendered(prompts[0], tuple(tuple(span) for span in spans[0]))


# ---------------------------------------------------------------------------------------------------------------
# Tokens


def image_token_ids(processor) -> set[int]:
    """The ids the processor expands images into (e.g. ``<image>``, Gemma 3's ``<image_soft_token>``)."""
    ids = set(getattr(processor, "image_token_ids", None) or [])
    ids.add(getattr(processor, "image_token_id", None))
    return {token for token in ids if isinstance(token, int)}


@contextlib.contextmanager
def padded(tokenizer) -> Iterator[None]:
    """A pad token while batching (the end-of-sequence token where the tokenizer has none, as for Llama)."""
    if tokenizer.pad_token is not None:
        yield
        return
    tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.pad_token = None


def _expanded(text: str, replacements: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The text with the processor's placeholder expansions applied, and (end of placeholder, characters gained)."""
    pieces, shifts, last, gained = [], [], 0, 0
    for replacement in replacements:
        start, end = replacement["span"]
        if text[start:end] != replacement["text"]:
            raise HfpruneError("the model's processor reports image placeholders where the rendered text has none; "
                               "its answers cannot be located")
        pieces += [text[last:start], replacement["replacement"]]
        gained += len(replacement["replacement"]) - (end - start)
        shifts.append((end, gained))
        last = end
    pieces.append(text[last:])
    return "".join(pieces), shifts


def _shifted(position: int, shifts: list[tuple[int, int]]) -> int:
    gained = 0
    for end, total in shifts:
        if end <= position:
            gained = total
    return position + gained


def answer_labels(tokenizer, rendered: Rendered, replacements: list[dict], input_ids: list[int],
                  add_special_tokens: bool) -> list[int]:
    """Labels of one row: its ids where a token overlaps an answer span, −100 elsewhere."""
    text, shifts = _expanded(rendered.text, replacements)
    try:
        encoded = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    except NotImplementedError:
        raise HfpruneError("locating answers needs the character offsets of a fast tokenizer (tokenizer.json); the "
                           "model's tokenizer has none") from None
    if encoded["input_ids"] != list(input_ids):
        raise HfpruneError("the model's processor changes the rendered conversation beyond expanding image "
                           "placeholders (its tokens differ from the text's), so its answers cannot be located "
                           "exactly")
    spans = [(_shifted(start, shifts), _shifted(end, shifts)) for start, end in rendered.answers]
    return [token if any(begin < end and finish > start for start, end in spans) else IGNORE_INDEX
            for token, (begin, finish) in zip(input_ids, encoded["offset_mapping"])]


def processed(processor, **inputs) -> tuple[dict, list[list[dict]]]:
    """The processor's batch of ``inputs`` as tensors, and where it expanded placeholders in each row's text
    (``text_replacement_offsets``; none for rows without images)."""
    from transformers import BatchFeature

    try:
        batch = processor(**inputs, return_tensors="pt", return_text_replacement_offsets=True)
    except ValueError as error:  # a processor that tries to make a tensor of the offsets too (Idefics3's)
        if "tensor" not in str(error):
            raise
        batch = processor(**inputs, return_tensors=None, return_text_replacement_offsets=True)
        offsets = batch.pop("text_replacement_offsets", None)
        batch = BatchFeature(dict(batch), tensor_type="pt")
        batch["text_replacement_offsets"] = offsets
    offsets = batch.pop("text_replacement_offsets", None)
    return batch, offsets or [[] for _ in inputs["text"]]


class ChatInstructionDataset(torch.utils.data.Dataset):
    """LLaVA-1.5 conversations rendered for any vision-language processor (module docstring).

    ``dataset.rendered(i)`` is one conversation as the template renders it; ``dataset[i]`` a batch of that one
    sample; ``dataset.__getitems__(indices)`` a right-padded batch with ``labels`` and every tensor the processor
    makes.
    """

    def __init__(self, records: Sequence[Conversation], image_root: str | Path, processor, max_length: int = 2048):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.image_ids = image_token_ids(processor)
        if self.records:
            self.rendered(0)  # a template that cannot say where answers are fails before any work

    def __len__(self) -> int:
        return len(self.records)

    def rendered(self, index: int) -> Rendered:
        return render_conversation(self.processor, self.records[index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        records = [self.records[index] for index in indices]
        rendered = [self.rendered(index) for index in indices]
        texts = [sample.text for sample in rendered]
        images = [[load_image(record, self.image_root)] if record.image is not None else [] for record in records]
        bos = self.tokenizer.bos_token
        add_special = not (bos is not None and texts[0].startswith(bos))
        with padded(self.tokenizer):
            try:
                batch, offsets = processed(self.processor, text=texts, images=images if any(images) else None,
                                           padding=True, padding_side="right", add_special_tokens=add_special)
            except (ValueError, TypeError, IndexError) as error:
                ids = ", ".join(record.id for record in records)
                raise HfpruneError(f"the model's processor cannot process conversations {ids} ({error})") from None
        batch.pop("labels", None)  # a processor's own labels (PaliGemma's suffix) are not the answers'
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, (sample, replacements) in enumerate(zip(rendered, offsets)):
            length = int(attention[row].sum())
            labels[row, :length] = torch.tensor(answer_labels(self.tokenizer, sample, replacements,
                                                              input_ids[row, :length].tolist(), add_special))
        batch["labels"] = labels
        return self._cut(dict(batch), records)

    def _cut(self, batch: dict, records: list[Conversation]) -> dict:
        """Every sequence-shaped tensor cut at ``max_length``; a sample losing image tokens is refused."""
        input_ids = batch["input_ids"]
        if input_ids.shape[1] <= self.max_length:
            return batch
        beyond = input_ids[:, self.max_length:]
        for row, record in enumerate(records):
            if any(int(token) in self.image_ids for token in beyond[row]):
                raise HfpruneError(f"conversation {record.id!r}: max_length={self.max_length} cuts its image tokens; "
                                   "raise max_length")
        shape = tuple(input_ids.shape)
        return {key: value[:, :self.max_length] if isinstance(value, torch.Tensor) and value.dim() >= 2
                and tuple(value.shape[:2]) == shape else value for key, value in batch.items()}


def uses_phi_template(processor) -> bool:
    """Whether ``processor`` is TinyLLaVA's (the Phi chat template), which :mod:`hfprune.data.llava` renders."""
    return getattr(processor, "chat_template", None) == PHI_CHAT_TEMPLATE


def load_conversations(json_path: str | Path, image_root: str | Path, processor, *, limit: int | None = None,
                       seed: int = 0, max_length: int = 2048, image_seq_length: int | None = None,
                       verify_images: bool = True):
    """A LLaVA-1.5 instruction file as a dataset for ``processor``'s model: TinyLLaVA's Phi path
    (:func:`hfprune.data.llava.load_llava_instructions`) for its processor, :class:`ChatInstructionDataset` for any
    other; ``limit`` keeps a deterministic subset (:func:`~hfprune.data.llava.subsample`)."""
    if uses_phi_template(processor):
        return LlavaInstructionDataset(_kept(json_path, image_root, limit, seed, verify_images), image_root,
                                       processor, image_seq_length, max_length)
    return ChatInstructionDataset(_kept(json_path, image_root, limit, seed, verify_images), image_root, processor,
                                  max_length)


def _kept(json_path, image_root, limit, seed, verify_images) -> list[Conversation]:
    conversations = read_llava_json(json_path)
    kept = [conversations[index] for index in subsample(len(conversations), limit, seed)]
    if verify_images:
        check_images(kept, image_root)
    return kept
