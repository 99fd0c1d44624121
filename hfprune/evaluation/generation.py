"""Greedy, batched answers of a vision-language model to benchmark samples, written to JSONL as they come.

Any vision-language model transformers loads (TinyLLaVA, Llava, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL,
Idefics3/SmolVLM, Gemma 3, PaliGemma, ...). Each sample is rendered with the model's own chat template (the Phi
template for TinyLLaVA) as one user turn with the generation prompt; a processor without a chat template
(PaliGemma's) gets the prompt as plain text and places the image tokens itself. The processor prepares a whole
batch — images given per sample, so it expands each one's image tokens and returns every tensor the model takes
(``image_grid_thw``, ``pixel_attention_mask``, ``token_type_ids``, ...) — left-padded, so that a batch gives the
same answers as one sample at a time. Generation stops at the model's end-of-sequence tokens and at the token the
chat template closes an assistant turn with (``<|im_end|>``, ``<end_of_turn>``, ``<end_of_utterance>``); the
answer is the new tokens, decoded without special tokens and stripped. Every finished batch is appended to
``predictions.jsonl`` and fsync-ed: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import torch
from tqdm.auto import tqdm

from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks.base import BenchmarkSample, Prediction


def load_model(name_or_path: str | Path, device: str | None = None, dtype: str = "auto"):
    """``(model, processor)`` of a vision-language checkpoint (local directory or Hub id; any model
    ``AutoModelForImageTextToText`` loads, e.g. TinyLLaVA converted to Llava); the model in eval mode."""
    from hfprune.models import adapter_for_checkpoint
    from hfprune.models.generic.vision_language import VisionLanguageAdapter

    source = str(name_or_path)
    adapter = adapter_for_checkpoint(source, dtype)
    if not isinstance(adapter, VisionLanguageAdapter):
        raise HfpruneError(f"'{source}' is a {adapter.name} model; benchmark evaluation needs a vision-language "
                           "checkpoint (one AutoModelForImageTextToText loads, e.g. TinyLLaVA converted to Llava)")
    processor = adapter.load_processor(source)
    model = adapter.load_pretrained(source)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor


def has_chat_template(processor) -> bool:
    return bool(getattr(processor, "chat_template", None))


def render_prompt(processor, sample: BenchmarkSample) -> str:
    """The sample as one user turn in the model's chat template, followed by the generation prompt; the plain
    prompt for a processor without a chat template (PaliGemma's places the image tokens itself)."""
    if not has_chat_template(processor):
        return sample.prompt
    content = ([{"type": "image"}] if sample.image is not None else []) + [{"type": "text", "text": sample.prompt}]
    try:
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    except ValueError as error:
        raise HfpruneError(f"the model's processor has no usable chat template: {error}") from None


def end_of_turn_ids(processor) -> list[int]:
    """The token the chat template closes an assistant turn with, when it is a special token (``<|im_end|>``,
    ``<end_of_turn>``, ``<end_of_utterance>``, TinyLLaVA's ``<|endoftext|>``); none without a chat template."""
    if not has_chat_template(processor):
        return []
    answer = "hfprune-answer"
    messages = [{"role": "user", "content": [{"type": "text", "text": "question"}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    try:
        text = processor.apply_chat_template(messages)
    except Exception:  # noqa: BLE001 - a template that renders no assistant turn stops at end-of-sequence only
        return []
    tail = text[text.index(answer) + len(answer):] if answer in text else ""
    tokenizer = processor.tokenizer
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
    return ids[:1] if ids and ids[0] in tokenizer.all_special_ids else []


def stop_ids(model, processor) -> list[int]:
    """What generation stops at: the model's end-of-sequence tokens (its generation config's, else the
    tokenizer's) and the chat template's end of turn."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = processor.tokenizer.eos_token_id
    eos = [configured] if isinstance(configured, int) else list(configured or [])
    return sorted({*eos, *end_of_turn_ids(processor)})


@torch.no_grad()
def generate_batch(model, processor, samples: list[BenchmarkSample], max_new_tokens: int) -> list[str]:
    """Greedy answers to ``samples`` (one left-padded batch), new tokens only, stripped."""
    from hfprune.data.chat import padded

    tokenizer = processor.tokenizer
    texts = [render_prompt(processor, sample) for sample in samples]
    images = [[sample.image.convert("RGB")] if sample.image is not None else [] for sample in samples]
    starts_with_bos = tokenizer.bos_token is not None and texts[0].startswith(tokenizer.bos_token)
    with padded(tokenizer):
        try:
            inputs = processor(text=texts, images=images if any(images) else None, padding=True,
                               padding_side="left", add_special_tokens=not starts_with_bos, return_tensors="pt")
        except (ValueError, TypeError, IndexError) as error:
            ids = ", ".join(sample.sample_id for sample in samples)
            raise HfpruneError(f"the model's processor cannot prepare samples {ids} ({error})") from None
        pad_id = tokenizer.pad_token_id
    inputs = inputs.to(model.device)
    inputs.pop("labels", None)  # a processor's training labels (PaliGemma) are no generation input
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    output = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                            pad_token_id=pad_id, eos_token_id=stop_ids(model, processor))
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def read_predictions(path: str | Path) -> list[Prediction]:
    """The predictions in a JSONL file; a torn last line (a run killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    predictions = []
    for number, line in enumerate(text[:text.rfind("\n") + 1].split("\n"), 1):
        if not line.strip():
            continue
        try:
            predictions.append(Prediction(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise HfpruneError(f"{path}, line {number}: not a prediction record ({error}); "
                               "delete the file to generate this task again") from None
    return predictions


def drop_torn_tail(path: Path) -> None:
    """Cut a partial last line so that appended records start on a fresh line."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)


def generate_predictions(model, processor, samples: list[BenchmarkSample], path: str | Path,
                         max_new_tokens: int, batch_size: int = 8, desc: str | None = None,
                         progress: bool = True) -> list[Prediction]:
    """Answer every sample not yet in ``path``, appending each batch; all predictions, in sample order."""
    path = Path(path)
    if len({sample.sample_id for sample in samples}) != len(samples):
        raise HfpruneError(f"duplicate sample ids in the samples for {path}; each sample needs its own id")
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {prediction.sample_id: prediction for prediction in read_predictions(path)}
    todo = [sample for sample in samples if sample.sample_id not in done]
    drop_torn_tail(path)
    with tqdm(total=len(samples), initial=len(samples) - len(todo), desc=desc, disable=not progress,
              unit="sample") as bar, path.open("a", encoding="utf-8") as handle:
        for batch in _batches(todo, batch_size):
            outputs = generate_batch(model, processor, batch, max_new_tokens)
            new = [Prediction(s.sample_id, out, list(s.references), dict(s.meta)) for s, out in zip(batch, outputs)]
            handle.write("".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in new))
            handle.flush()
            os.fsync(handle.fileno())
            done.update((p.sample_id, p) for p in new)
            bar.update(len(batch))
    return [done[sample.sample_id] for sample in samples]


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
