"""Text for causal LMs (hfprune.data.text): local sources read, token blocks drawn exactly as the Wanda and SparseGPT
reference code draws its C4 and WikiText-2 calibration segments (their loops transcribed below)."""

import gzip
import json
import random

import pytest
import torch

from tiny_processors import tokenizer as word_tokenizer
from hfprune.data.text import TokenBlocks, read_texts, token_blocks
from hfprune.errors import HfpruneError

SENTENCE = "The dog is sitting on a blue mat and the cat is looking at the camera ."


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer({})


def documents(count: int = 12, seed: int = 0) -> list[str]:
    """Texts of very different lengths, as C4's are."""
    rng = random.Random(seed)
    return [" ".join([SENTENCE] * rng.randint(1, 6)) + f" {index}" for index in range(count)]


def reference_c4(texts, tokenizer, nsamples, seed, seqlen):
    """Wanda's / SparseGPT's get_c4 training loop, with ``texts`` as traindata[i]['text']."""
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(texts) - 1)
            trainenc = tokenizer(texts[i], return_tensors="pt")
            if trainenc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        j = i + seqlen
        trainloader.append(trainenc.input_ids[:, i:j])
    return torch.cat(trainloader)


def reference_wikitext2(texts, tokenizer, nsamples, seed, seqlen):
    """Wanda's / SparseGPT's get_wikitext2 training loop, with ``texts`` as traindata['text']."""
    trainenc = tokenizer(" ".join(texts), return_tensors="pt")
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        j = i + seqlen
        trainloader.append(trainenc.input_ids[:, i:j])
    return torch.cat(trainloader)


@pytest.mark.parametrize("seed", [0, 3])
def test_blocks_of_many_texts_are_drawn_as_the_reference_draws_c4(tokenizer, seed):
    texts = documents()
    blocks = token_blocks(tokenizer, texts, 6, 40, seed)
    assert blocks.dtype == torch.long and blocks.shape == (6, 40)
    assert torch.equal(blocks, reference_c4(texts, tokenizer, 6, seed, 40))


def test_one_text_and_short_texts_are_drawn_as_the_reference_draws_wikitext2(tokenizer):
    one = [" ".join([SENTENCE] * 20)]
    assert torch.equal(token_blocks(tokenizer, one, 5, 30, 1), reference_wikitext2(one, tokenizer, 5, 1, 30))
    lines = [SENTENCE, "", SENTENCE + " 1", " = Heading = "] * 10  # WikiText's lines: none holds a block
    assert torch.equal(token_blocks(tokenizer, lines, 5, 30, 1), reference_wikitext2(lines, tokenizer, 5, 1, 30))


def test_too_little_text_for_one_block_is_one_line(tokenizer):
    with pytest.raises(HfpruneError, match="too few for blocks of 500"):
        token_blocks(tokenizer, [SENTENCE, SENTENCE], 2, 500, 0)


def test_blocks_as_model_inputs_supervise_every_position():
    blocks = torch.arange(12).reshape(3, 4)
    batch = TokenBlocks(blocks).__getitems__([2, 0])
    assert torch.equal(batch["input_ids"], blocks[[2, 0]]) and torch.equal(batch["labels"], blocks[[2, 0]])
    assert batch["attention_mask"].eq(1).all()


def test_every_local_source_reads_its_texts(tmp_path):
    import datasets

    texts = documents(4)
    (tmp_path / "a.txt").write_text("\n\n".join(texts))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": text, "url": "x"}) + "\n" for text in texts))
    (tmp_path / "c.json").write_text(json.dumps([{"text": text} for text in texts]))
    (tmp_path / "c4-train.00000-of-01024.json.gz").write_bytes(
        gzip.compress("".join(json.dumps({"text": text, "timestamp": "2019"}) + "\n" for text in texts).encode()))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts}),
                          "test": datasets.Dataset.from_dict({"text": ["other"]})}).save_to_disk(tmp_path / "wiki")
    for name in ("a.txt", "b.jsonl", "c.json", "c4-train.00000-of-01024.json.gz", "wiki"):
        assert read_texts(tmp_path / name) == texts, name


@pytest.mark.parametrize("name, content, problem", [
    ("missing.txt", None, "not found"),
    ("data.csv", "text\nhello", "neither .txt, .jsonl nor .json"),
    ("bad.jsonl", '{"text": "a"}\n{"content": "b"}\n', "record 1: expected an object with a string 'text' field"),
    ("broken.json", "[{", "neither a JSON list nor JSON lines"),
    ("empty.txt", "  \n", "holds no text"),
])
def test_bad_sources_are_one_line_errors_naming_the_source(tmp_path, name, content, problem):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(HfpruneError) as caught:
        read_texts(tmp_path / name)
    assert problem in str(caught.value) and name in str(caught.value) and "\n" not in str(caught.value)


def test_a_saved_dataset_without_text_is_refused(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"sentence": ["a"]}).save_to_disk(tmp_path / "ptb")
    with pytest.raises(HfpruneError, match="no 'text' column"):
        read_texts(tmp_path / "ptb")
