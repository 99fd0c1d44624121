"""LLaVA-1.5 instruction data: Phi template, label masks, batches, sub-sampling, errors, and the pruned train loss."""

from types import SimpleNamespace

import pytest
import torch

from hfprune.data.llava import (
    END_OF_TURN,
    IGNORE_INDEX,
    Conversation,
    LlavaInstructionDataset,
    check_images,
    image_seq_length_of,
    load_image,
    load_llava_instructions,
    parse_conversations,
    read_llava_json,
    subsample,
    template_pieces,
)
from hfprune.errors import HfpruneError
from hfprune.evaluation.lm_loss import causal_lm_loss, pruned_train_loss, supervised_token_loss
from hfprune.models.llava.chat import PHI_SYSTEM
from hfprune.models.llava.tiny import tiny_llava
from llava_fixtures import write_llava_fixture


def chat_messages(conversation: Conversation) -> list[dict]:
    """The conversation as chat messages for ``processor.apply_chat_template`` (the image part first)."""
    messages = []
    for turn, (question, answer) in enumerate(conversation.turns):
        content = [{"type": "text", "text": question}]
        if turn == 0 and conversation.image is not None:
            content.insert(0, {"type": "image"})
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return messages


@pytest.fixture(scope="module")
def tiny():
    return tiny_llava()


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return write_llava_fixture(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def dataset(tiny, fixture_files):
    return load_llava_instructions(*fixture_files, tiny[1])


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of every run of True in a 1-D boolean tensor."""
    edges = torch.diff(torch.cat([torch.tensor([0]), mask.int(), torch.tensor([0])]))
    return list(zip(edges.eq(1).nonzero().flatten().tolist(), edges.eq(-1).nonzero().flatten().tolist()))


def test_fixture_has_the_real_mix(dataset):
    images = [record.image for record in dataset.records]
    assert sum(image is None for image in images) >= 2
    assert {image.split("/")[0] for image in images if image} == {"coco", "gqa", "ocr_vqa", "textvqa", "vg"}
    assert any(len(record.turns) > 1 for record in dataset.records)


def test_text_is_the_processors_chat_template(dataset, tiny):
    for record in dataset.records:
        text = "".join(piece for piece, _ in template_pieces(record))
        assert text == tiny[1].apply_chat_template(chat_messages(record))
        assert text.startswith(PHI_SYSTEM + " USER: " + ("<image>\n" if record.image else ""))


def test_pieces_tokenise_like_the_processor_on_the_whole_text(dataset, tiny, fixture_files):
    processor = tiny[1]
    for index, record in enumerate(dataset.records):
        text = "".join(piece for piece, _ in template_pieces(record))
        images = [load_image(record, fixture_files[1])] if record.image else None
        expected = processor(text=[text], images=images, return_tensors="pt")
        sample = dataset[index]
        assert sample["input_ids"].tolist() == expected["input_ids"][0].tolist()
        if record.image:
            torch.testing.assert_close(sample["pixel_values"], expected["pixel_values"][0])
        else:
            assert sample["pixel_values"] is None


def test_labels_supervise_answers_and_end_of_turn_only(dataset, tiny):
    tokenizer, image_token_id = tiny[1].tokenizer, tiny[0].config.image_token_index
    for index, record in enumerate(dataset.records):
        sample = dataset[index]
        supervised = sample["labels"] != IGNORE_INDEX
        assert torch.equal(sample["labels"][supervised], sample["input_ids"][supervised])
        answers = [tokenizer.decode(sample["input_ids"][start:end]) for start, end in _runs(supervised)]
        assert answers == [f" {answer}{END_OF_TURN}" for _, answer in record.turns]
        prefixes = "".join(piece for piece, is_answer in template_pieces(record) if not is_answer)
        image_tokens = "<image>" * dataset.image_seq_length
        assert tokenizer.decode(sample["input_ids"][~supervised]) == prefixes.replace("<image>", image_tokens)
        assert not supervised[sample["input_ids"] == image_token_id].any()


def test_image_tokens_are_one_block_of_image_seq_length(dataset, tiny):
    model = tiny[0]
    assert dataset.image_seq_length == model.config.image_seq_length == image_seq_length_of(tiny[1])
    for index, record in enumerate(dataset.records):
        is_image = dataset[index]["input_ids"] == model.config.image_token_index
        assert [end - start for start, end in _runs(is_image)] == ([model.config.image_seq_length] if record.image
                                                                   else [])


def test_batch_is_right_padded_and_keeps_images_in_order(dataset):
    indices = [2, 0, 3, 5, 1]  # text-only, image, image, text-only, image
    batch = dataset.__getitems__(indices)
    samples = [dataset[index] for index in indices]
    lengths = [len(sample["input_ids"]) for sample in samples]
    assert batch["input_ids"].shape == (5, max(lengths))
    for row, (sample, length) in enumerate(zip(samples, lengths)):
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert torch.equal(batch["input_ids"][row, :length], sample["input_ids"])
        assert batch["input_ids"][row, length:].eq(dataset.pad_token_id).all()
        assert torch.equal(batch["labels"][row, :length], sample["labels"])
        assert batch["labels"][row, length:].eq(IGNORE_INDEX).all()
    images = [sample["pixel_values"] for sample in samples if sample["pixel_values"] is not None]
    assert torch.equal(batch["pixel_values"], torch.stack(images))
    assert "pixel_values" not in dataset.__getitems__([2, 5])


@torch.no_grad()
def test_mixed_batch_forward_matches_samples_one_by_one(dataset, tiny):
    model = tiny[0]
    indices = [2, 0, 3, 1]  # text-only first, then three images
    batch = dataset.__getitems__(indices)
    batch_logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    for row, index in enumerate(indices):
        single = dataset.__getitems__([index])
        logits = model(**{k: v for k, v in single.items() if k != "labels"}).logits[0]
        torch.testing.assert_close(batch_logits[row, :len(logits)], logits, atol=1e-4, rtol=1e-4)


def test_truncation_keeps_the_image_and_cuts_text(dataset, tiny):
    short = LlavaInstructionDataset(dataset.records, dataset.image_root, tiny[1], max_length=100)
    full, cut = dataset[0], short[0]
    assert len(full["input_ids"]) > 100 and len(cut["input_ids"]) == 100
    assert torch.equal(cut["input_ids"], full["input_ids"][:100])
    assert torch.equal(cut["labels"], full["labels"][:100])
    assert (cut["input_ids"] == tiny[0].config.image_token_index).sum() == dataset.image_seq_length


def test_max_length_too_short_for_the_image_is_refused(dataset, tiny):
    with pytest.raises(HfpruneError, match="max_length=40 cannot hold the 16 image tokens"):
        LlavaInstructionDataset(dataset.records, dataset.image_root, tiny[1], max_length=40)
    text_only = [record for record in dataset.records if record.image is None]
    assert len(LlavaInstructionDataset(text_only, dataset.image_root, tiny[1], max_length=40)[0]["input_ids"]) == 40


def test_a_leading_gpt_turn_is_dropped_and_the_image_moved_first():
    raw = [{"id": "a", "image": "x.jpg", "conversations": [
        {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "What is it?\n<image>"},
        {"from": "gpt", "value": "A cat."}]}]
    assert parse_conversations(raw, "f.json") == [Conversation("a", "x.jpg", (("What is it?", "A cat."),))]


def test_subsample_is_deterministic_nested_and_fixed():
    assert subsample(100, 5, 0) == [3, 37, 52, 62, 74]  # the same on every machine and version
    small, large = subsample(1000, 20, 7), subsample(1000, 50, 7)
    assert small == sorted(set(small)) and len(small) == 20
    assert set(small) <= set(large)
    assert subsample(1000, 20, 8) != small
    assert subsample(10, None, 0) == subsample(10, 99, 0) == list(range(10))


def test_limit_loads_the_same_subset(tiny, fixture_files):
    first = load_llava_instructions(*fixture_files, tiny[1], limit=5, seed=3)
    again = load_llava_instructions(*fixture_files, tiny[1], limit=5, seed=3)
    everything = read_llava_json(fixture_files[0])
    assert len(first) == 5 and first.records == again.records
    assert first.records == [everything[index] for index in subsample(len(everything), 5, 3)]


@pytest.mark.parametrize("content, problem", [
    ("[{", "not valid JSON"),
    ('{"id": 1}', "must hold a JSON list"),
    ('[{"id": "q1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},'
     ' {"id": "q2"}]', "sample 1 (id 'q2'): missing or empty 'conversations'"),
    ('[{"id": "q3", "conversations": [{"from": "human", "value": "hi"}, {"from": "human", "value": "yo"}]}]',
     "sample 0 (id 'q3'): conversations[1] is from 'human', expected 'gpt'"),
    ('[{"id": "q4", "conversations": [{"from": "user", "value": "hi"}]}]', "sample 0 (id 'q4'): conversations[0]"),
    ('[{"id": "q5", "conversations": [{"from": "human", "value": "hi"}]}]', "sample 0 (id 'q5'): the conversation"),
    ('[{"id": "q6", "image": "a.jpg", "conversations": [{"from": "human", "value": "hi"},'
     ' {"from": "gpt", "value": "yo"}]}]', "sample 0 (id 'q6'): a sample with an image needs exactly one"),
    ('[{"id": "q7", "conversations": [{"from": "human", "value": "<image>\\nhi"}, {"from": "gpt", "value": "yo"}]}]',
     "sample 0 (id 'q7'): '<image>' in a sample without 'image'"),
    ('[7]', "sample 0 (id '0'): expected an object"),
])
def test_schema_errors_name_the_file_and_the_sample(tmp_path, content, problem):
    path = tmp_path / "mix.json"
    path.write_text(content)
    with pytest.raises(HfpruneError) as caught:
        read_llava_json(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(HfpruneError, match="not found"):
        read_llava_json(tmp_path / "nope.json")


def test_missing_images_are_found_up_front_and_when_loaded(tiny, fixture_files, tmp_path):
    json_path, image_root = fixture_files
    records = read_llava_json(json_path)
    with pytest.raises(HfpruneError) as caught:
        check_images(records, tmp_path, first=2)
    message = str(caught.value)
    assert str(tmp_path) in message and records[0].image in message and records[1].image in message
    assert message.startswith(f"{sum(r.image is not None for r in records)} image(s) missing")
    with pytest.raises(HfpruneError, match="image root"):
        load_llava_instructions(json_path, tmp_path, tiny[1])
    lazy = load_llava_instructions(json_path, tmp_path, tiny[1], verify_images=False)
    with pytest.raises(HfpruneError, match=f"image '{records[0].image}' of sample .* not found under image root"):
        lazy[0]


def test_pruned_train_loss_is_token_weighted_and_batch_size_free(dataset, tiny):
    model = tiny[0]
    direct_sum, direct_tokens = 0.0, 0
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset.__getitems__([index])
            logits = model(**{k: v for k, v in sample.items() if k != "labels"}).logits[0, :-1]
            targets = sample["labels"][0, 1:]
            keep = targets != IGNORE_INDEX
            direct_sum -= logits[keep].log_softmax(-1).gather(1, targets[keep, None]).sum().item()
            direct_tokens += int(keep.sum())
    results = [pruned_train_loss(model, dataset, batch_size=size, progress=False) for size in (1, 2, 5)]
    for result in results:
        assert result["tokens"] == direct_tokens and result["samples"] == len(dataset)
        assert result["loss"] == pytest.approx(direct_sum / direct_tokens, abs=1e-5)
    assert not model.training


def test_training_loss_is_hfs_mean_over_supervised_tokens(dataset, tiny):
    batch = dataset.__getitems__([0, 2, 4])
    loss_sum, tokens = supervised_token_loss(tiny[0], batch)
    torch.testing.assert_close(causal_lm_loss(tiny[0], batch), loss_sum / tokens)


def test_processor_whose_tokenizer_lacks_the_image_token_is_refused(dataset, tiny):
    processor = tiny[1]
    other = SimpleNamespace(tokenizer=processor.tokenizer, image_processor=processor.image_processor,
                            patch_size=processor.patch_size, image_token="<pad>")
    with pytest.raises(HfpruneError, match="does not read '<image>' as its image token '<pad>'"):
        LlavaInstructionDataset(dataset.records, dataset.image_root, other)
