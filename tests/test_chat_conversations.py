"""LLaVA-1.5 conversations rendered for any VLM with its own processor and chat template (hfprune.data.chat).

What counts as an answer comes from each public template as written (tests/tiny_processors.py): Qwen2-VL closes an
assistant turn with ``<|im_end|>\\n``, SmolVLM with ``<end_of_utterance>\\n`` after ``Assistant:`` + a space, Gemma 3
with ``<end_of_turn>\\n`` after the trimmed answer; llava-hf's Llava and LLaVA-OneVision templates mark their answers
with ``{% generation %}`` (the answer + a space; a newline + the answer)."""

import pytest
import torch

from llava_fixtures import write_llava_fixture
from tiny_models import ARCHITECTURES
from tiny_processors import LLAVA_ONEVISION_TEMPLATE, tiny_processor
from hfprune.data.chat import (
    ChatInstructionDataset,
    chat_messages,
    image_token_ids,
    load_conversations,
    render_conversation,
)
from hfprune.data.llava import IGNORE_INDEX, LlavaInstructionDataset, read_llava_json
from hfprune.errors import HfpruneError
from hfprune.models.llava.tiny import tiny_llava

ANSWERS = {  # what the supervised tokens of one answer read, by the template's own text
    "llava": lambda answer: f"{answer} ",
    "llava_onevision": lambda answer: f"\n{answer}",
    "qwen2_vl": lambda answer: f"{answer}<|im_end|>\n",
    "qwen2_5_vl": lambda answer: f"{answer}<|im_end|>\n",
    "idefics3": lambda answer: f" {answer}<end_of_utterance>\n",
    "gemma3": lambda answer: f"{answer.strip()}<end_of_turn>\n",
}


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return write_llava_fixture(tmp_path_factory.mktemp("llava"), n=7)


@pytest.fixture(scope="module")
def tiny():
    return {name: (ARCHITECTURES[name].build(), None) for name in [*ANSWERS, "paligemma"]}


def processor_of(tiny, name):
    return tiny_processor(name, tiny[name][0].config)


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of every run of True in a 1-D boolean tensor."""
    edges = torch.diff(torch.cat([torch.tensor([0]), mask.int(), torch.tensor([0])]))
    return list(zip(edges.eq(1).nonzero().flatten().tolist(), edges.eq(-1).nonzero().flatten().tolist()))


@pytest.mark.parametrize("name", list(ANSWERS))
def test_only_the_answers_are_supervised_as_each_template_closes_them(tiny, fixture_files, name):
    processor = processor_of(tiny, name)
    data = load_conversations(*fixture_files, processor)
    assert isinstance(data, ChatInstructionDataset)
    batch = data.__getitems__(list(range(len(data))))
    tokenizer = processor.tokenizer
    for row, record in enumerate(data.records):
        assert data.rendered(row).text == processor.apply_chat_template(chat_messages(record))
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        supervised = labels != IGNORE_INDEX
        assert torch.equal(labels[supervised], ids[supervised])
        expected = [tokenizer(ANSWERS[name](answer), add_special_tokens=False)["input_ids"]
                    for _, answer in record.turns]
        assert [ids[start:end].tolist() for start, end in runs(supervised)] == expected, record.id
        image = torch.isin(ids, torch.tensor(sorted(image_token_ids(processor))))
        assert bool(image.any()) == (record.image is not None) and not supervised[image].any()
        assert not supervised[batch["attention_mask"][row] == 0].any()


def test_tinyllava_rendered_by_its_template_gets_the_phi_paths_tokens(fixture_files):
    """The generic rendering, run on TinyLLaVA's processor, gives exactly the tokens and labels of the Phi path."""
    _, processor = tiny_llava()
    records = read_llava_json(fixture_files[0])
    phi = LlavaInstructionDataset(records, fixture_files[1], processor)
    chat = ChatInstructionDataset(records, fixture_files[1], processor)
    assert isinstance(load_conversations(*fixture_files, processor), LlavaInstructionDataset)
    for index in range(len(records)):
        expected, got = phi[index], chat[index]
        length = len(expected["input_ids"])
        assert got["input_ids"].shape[1] == length
        assert torch.equal(got["input_ids"][0], expected["input_ids"])
        assert torch.equal(got["labels"][0], expected["labels"])
        if expected["pixel_values"] is not None:
            torch.testing.assert_close(got["pixel_values"][0], expected["pixel_values"])


def test_a_template_that_is_not_prefix_stable_is_refused(tiny, fixture_files):
    """LLaVA-OneVision's template without its {% generation %} marks: an assistant turn opens with
    '<|im_start|>assistant ' but the generation prompt is '<|im_start|>assistant\\n'."""
    processor = processor_of(tiny, "llava_onevision")
    processor.chat_template = LLAVA_ONEVISION_TEMPLATE.replace("{% generation %}", "").replace(
        "{% endgeneration %}", "")
    with pytest.raises(HfpruneError) as caught:
        load_conversations(*fixture_files, processor)
    message = str(caught.value)
    assert "not prefix-stable" in message and "assistant\\n" in message and "\n" not in message


def test_a_processor_without_a_chat_template_is_refused(tiny, fixture_files):
    with pytest.raises(HfpruneError, match="no chat template"):
        load_conversations(*fixture_files, processor_of(tiny, "paligemma"))


def test_max_length_cuts_text_but_never_image_tokens(tiny, fixture_files):
    processor = processor_of(tiny, "qwen2_vl")
    full = load_conversations(*fixture_files, processor)
    first = full[0]
    image_end = int(torch.isin(first["input_ids"][0], torch.tensor(sorted(image_token_ids(processor))))
                    .nonzero().max()) + 1
    cut = load_conversations(*fixture_files, processor, max_length=image_end + 3)[0]
    assert cut["input_ids"].shape[1] == image_end + 3
    for key in ("input_ids", "labels", "attention_mask", "mm_token_type_ids"):
        assert torch.equal(cut[key][0], first[key][0, :image_end + 3]), key
    with pytest.raises(HfpruneError, match="max_length=.* cuts its image tokens"):
        load_conversations(*fixture_files, processor, max_length=image_end - 1)[0]


@pytest.mark.parametrize("name", ["qwen2_vl", "idefics3", "gemma3"])
def test_a_mixed_batch_gives_each_row_what_it_gives_alone(tiny, fixture_files, name):
    """Text-only and image rows together, right-padded: each row's tokens, labels and logits as on its own."""
    model, processor = tiny[name][0], processor_of(tiny, name)
    data = load_conversations(*fixture_files, processor)
    indices = [2, 0, 1, 5, 3]  # a text-only conversation first
    batch = data.__getitems__(indices)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for row, index in enumerate(indices):
            alone = data[index]
            length = alone["input_ids"].shape[1]
            assert torch.equal(batch["input_ids"][row, :length], alone["input_ids"][0])
            assert torch.equal(batch["labels"][row, :length], alone["labels"][0])
            assert batch["attention_mask"][row, length:].eq(0).all()
            single = model(**{k: v for k, v in alone.items() if k != "labels"}).logits[0]
            torch.testing.assert_close(logits[row, :length], single, atol=1e-4, rtol=1e-4)


def test_the_rendered_answers_are_the_template_prefix_differences(tiny, fixture_files):
    """Without {% generation %} marks, answer i spans what the conversation through answer i adds to the
    conversation up to question i with the generation prompt."""
    processor = processor_of(tiny, "qwen2_vl")
    record = read_llava_json(fixture_files[0])[0]
    rendered = render_conversation(processor, record)
    messages = chat_messages(record)
    for turn, (start, end) in enumerate(rendered.answers):
        asked = processor.apply_chat_template(messages[:2 * turn + 1], add_generation_prompt=True)
        answered = processor.apply_chat_template(messages[:2 * turn + 2])
        assert (start, end) == (len(asked), len(answered))
        assert rendered.text[start:end] == f"{record.turns[turn][1]}<|im_end|>\n"
