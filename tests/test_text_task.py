"""The causal-LM study task and its text data: the token loss is transformers' own shifted causal-LM loss, the
train/test splits are deterministic and disjoint, the standard-library corpus is a fixed sorted list, the text
sources read as documented, and the tokenizers built offline round-trip any text."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from transformers import AutoTokenizer

from hfprune.data.offline_tokenizer import build_tokenizer
from hfprune.data.stdlib_corpus import LEFT_OUT, read_stdlib, stdlib_files
from hfprune.data.text import read_text_splits, read_texts, token_stream, windows
from hfprune.data.text_corpus import TextSection, TokenBlocks, split_documents
from hfprune.errors import HfpruneError
from hfprune.study.registry import parse_recipe
from hfprune.study.tasks.causal_lm import token_metrics

TEXT = "def f(x):\n\treturn x ** 2  # √ déjà vu — 日本語\r\n\n\n   trailing  spaces   \n"


def _tiny_llama(vocab: int = 40) -> tf.LlamaForCausalLM:
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return tf.LlamaForCausalLM(config).eval()


# -- the loss -------------------------------------------------------------------------------------------------------
def test_token_loss_is_transformers_shifted_loss_weighted_by_tokens():
    model = _tiny_llama()
    generator = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 40, (5, 9), generator=generator)
    data = TokenBlocks(blocks)
    measured = token_metrics(model, data, batch_size=2)  # batches of 2, 2 and 1 blocks
    with torch.no_grad():
        # transformers' loss of one block: mean over its 8 shifted targets; every block has as many
        losses = [model(input_ids=block[None], labels=block[None]).loss.item() for block in blocks]
        logits = model(input_ids=blocks).logits
    assert measured["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert measured["perplexity"] == pytest.approx(torch.tensor(measured["loss"]).exp().item(), rel=1e-6)
    assert measured["tokens"] == 5 * 8
    correct = (logits[:, :-1].argmax(-1) == blocks[:, 1:]).sum().item()
    assert measured["acc"] == pytest.approx(correct / 40)


def test_ignored_labels_count_for_nothing_as_in_transformers():
    model = _tiny_llama()
    ids = torch.tensor([[3, 5, 7, 9, 11, 13], [2, 4, 6, 8, 10, 12]])
    labels = ids.clone()
    labels[0, :3] = -100  # hand-made: the first row's first targets unsupervised
    labels[1, 5] = -100

    class Batch(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return {"input_ids": ids[index], "labels": labels[index]}

    measured = token_metrics(model, Batch(), batch_size=2)
    with torch.no_grad():
        reference = model(input_ids=ids, labels=labels).loss.item()  # mean over all supervised shifted tokens
    assert measured["tokens"] == (labels[:, 1:] != -100).sum().item() == 7
    assert measured["loss"] == pytest.approx(reference, rel=1e-5)


def test_blocks_supervise_every_token_and_fetch_whole_batches():
    blocks = TokenBlocks(torch.arange(12).reshape(3, 4))
    batch = blocks.__getitems__([2, 0])
    assert torch.equal(batch["input_ids"], torch.tensor([[8, 9, 10, 11], [0, 1, 2, 3]]))
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert len(blocks.subset(2, seed=0)) == 2 and torch.equal(blocks.subset(None, 0).blocks, blocks.blocks)


# -- splits -----------------------------------------------------------------------------------------------------------
def test_document_splits_are_deterministic_disjoint_and_cover_the_documents():
    documents = [f"document {i}" for i in range(50)]
    section = TextSection(test_fraction=0.2)
    train, test = split_documents({"all": documents}, section, seed=3)
    assert (train, test) == split_documents({"all": documents}, section, seed=3)
    assert len(test) == 10 and not set(train) & set(test) and set(train) | set(test) == set(documents)
    assert train == [d for d in documents if d in set(train)], "the source's order is kept"
    other_train, other_test = split_documents({"all": documents}, section, seed=4)
    assert other_test != test
    few_train, few_test = split_documents({"all": documents}, TextSection(test_fraction=0.2, documents=20), seed=3)
    assert len(few_train) + len(few_test) == 20 and len(few_test) == 4 and set(few_test) <= set(documents)
    own = split_documents({"train": ["a", "b"], "test": ["c"]}, section, seed=0)
    assert own == (["a", "b"], ["c"]), "a source's own splits are kept"
    with pytest.raises(HfpruneError, match="at least two"):
        split_documents({"all": ["only one"]}, section, seed=0)


# -- the standard-library corpus --------------------------------------------------------------------------------------
def test_the_stdlib_corpus_is_a_sorted_stable_list_without_test_suites():
    files = stdlib_files()
    assert list(files) == sorted(files) and len(set(files)) == len(files)
    assert {"os.py", "json/__init__.py", "collections/__init__.py"} <= set(files)
    assert not any(LEFT_OUT.intersection(name.split("/")[:-1]) for name in files)
    stdlib_files.cache_clear()
    assert stdlib_files() == files, "the same list on a second reading"


def test_the_stdlib_list_depends_only_on_the_files(tmp_path):
    for name in ("b.py", "a/z.py", "a/b.py", "test/t.py", "a/tests/x.py", "site-packages/p/q.py", "c.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    assert stdlib_files(str(tmp_path)) == ("a/b.py", "a/z.py", "b.py")


# -- text sources -----------------------------------------------------------------------------------------------------
def test_text_sources_read_as_documented(tmp_path):
    (tmp_path / "corpus.txt").write_text("first doc\nline two\n\n\nsecond doc\n  \n\nthird\n")
    assert read_texts(tmp_path / "corpus.txt") == ["first doc\nline two", "second doc", "third"]
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n\n{"text": "b", "other": 1}\n')
    assert read_texts(tmp_path / "c.jsonl") == ["a", "b"]
    (tmp_path / "c.json").write_text(json.dumps([{"body": "x"}, {"body": "y"}]))
    assert read_texts(tmp_path / "c.json", field="body") == ["x", "y"]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "2.txt").write_text("two")
    (folder / "1.txt").write_text("one\n\nstill one")
    assert read_texts(folder) == ["one\n\nstill one", "two"]
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["t1", "", "t2"]}),
                          "test": datasets.Dataset.from_dict({"text": ["e1"]})}).save_to_disk(str(tmp_path / "saved"))
    assert read_text_splits(tmp_path / "saved") == {"train": ["t1", "t2"], "test": ["e1"]}
    assert read_texts(tmp_path / "saved", split="test") == ["e1"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(HfpruneError, match="line 2.*'text' field"):
        read_texts(tmp_path / "bad.jsonl")
    with pytest.raises(HfpruneError, match="not found"):
        read_texts(tmp_path / "missing.txt")


def test_study_blocks_are_seeded_windows_of_the_token_stream():
    tokenizer = build_tokenizer("byte")
    texts = ["abcdefgh", "ijklmnop"]
    stream = token_stream(tokenizer, texts)
    assert stream.tolist() == [*b"abcdefgh", 256, *b"ijklmnop", 256], "documents end with <|endoftext|>"
    blocks = windows(stream, samples=6, seqlen=5, seed=0)
    assert blocks.shape == (6, 5) and torch.equal(blocks, windows(stream, 6, 5, seed=0))
    every = {tuple(stream[i:i + 5].tolist()) for i in range(len(stream) - 4)}
    assert all(tuple(row.tolist()) in every for row in blocks)
    assert not torch.equal(blocks, windows(stream, 6, 5, seed=1)), "the seed chooses the windows"
    with pytest.raises(HfpruneError, match="fewer than one sample"):
        windows(stream, 1, 100, 0)


# -- tokenizers built offline -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_offline_tokenizers_round_trip_and_reload(kind, tmp_path):
    corpus = read_stdlib(stdlib_files()[:8])
    tokenizer = build_tokenizer(kind, corpus, vocab_size=300)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == len(tokenizer) - 1
    if kind == "byte":
        assert ids == list(TEXT.encode("utf-8")) and len(tokenizer) == 257
    else:
        assert len(tokenizer) == 300 and len(ids) < len(TEXT.encode("utf-8"))
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(TEXT, add_special_tokens=False)["input_ids"] == ids and reloaded.decode(ids) == TEXT


def test_bpe_training_is_deterministic():
    corpus = read_stdlib(stdlib_files()[:8])
    first, second = build_tokenizer("bpe", corpus, 320), build_tokenizer("bpe", corpus, 320)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


# -- recipes ----------------------------------------------------------------------------------------------------------
def _recipe(**data) -> dict:
    return {"name": "t", "model": {"family": "causal_lm", "config": {"model_type": "llama", "vocab_size": 257,
                                                                    "hidden_size": 16, "intermediate_size": 24,
                                                                    "num_hidden_layers": 1, "num_attention_heads": 2}},
            "data": {"dataset": "python_stdlib", "max_length": 32, **data},
            "pretrain": {"epochs": 0, "batch_size": 4, "optimizer": {"name": "adamw", "lr": 1e-3}},
            "pruning": {"methods": ["ump"], "sparsity": 0.5},
            "retrain": {"epochs": 1, "batch_size": 4, "optimizer": {"name": "adamw", "lr": 1e-3}}}


def test_text_options_are_checked_before_any_work():
    with pytest.raises(HfpruneError, match="data.text applies to text corpora"):
        parse_recipe({**_recipe(), "model": {"family": "lenet5_mini"}, "data": {"dataset": "mnist_sample",
                                                                               "text": {"tokenizer": "byte"}}})
    with pytest.raises(HfpruneError, match="model.family 'causal_lm' trains on a text corpus"):
        parse_recipe({**_recipe(), "data": {"dataset": "mnist_sample"}})
    with pytest.raises(HfpruneError, match="vocab_size"):
        parse_recipe(_recipe(text={"tokenizer": "bpe", "vocab_size": 100}))


def test_the_task_refuses_a_model_that_cannot_hold_the_tokenizer():
    from hfprune.study.tasks import build_task

    recipe = parse_recipe(_recipe(text={"tokenizer": "bpe", "vocab_size": 300, "documents": 6}))
    with pytest.raises(HfpruneError, match="vocab_size: the bpe tokenizer has 300 tokens; set vocab_size: 300"):
        build_task(recipe, progress=False)
    task = build_task(parse_recipe(_recipe(text={"tokenizer": "byte", "documents": 6}, train_limit=10)),
                      progress=False)
    assert len(task.train_set) == 10 and task.train_set.blocks.shape[1] == 32 and len(task.test_set) >= 1
    assert task.direction("loss") is False and task.direction("perplexity") is False and task.direction("acc")
    calibration = next(iter(task.calibration_batches()))
    assert calibration["input_ids"].shape[1] == 32 and torch.equal(calibration["labels"], calibration["input_ids"])


def test_lm_eval_tasks_become_final_test_scores(monkeypatch):
    from hfprune.evaluation import lm_eval_bridge
    from hfprune.study.tasks import build_task
    from hfprune.study.tasks.causal_lm import CausalLMTask, headline

    monkeypatch.setattr(CausalLMTask, "_require_lm_eval", staticmethod(lambda: None))
    recipe = _recipe(text={"tokenizer": "byte", "documents": 6}, train_limit=4, test_limit=2)
    recipe["evaluation"] = {"batch_size": 2, "benchmarks": ["arc_easy", "boolq"], "benchmark_limit": 5}
    task = build_task(parse_recipe(recipe), progress=False)
    asked = {}

    def fake_lm_eval(model, tokenizer, tasks, out_dir, limit, batch_size, include_path):
        asked.update(tasks=tasks, limit=limit, tokenizer=len(tokenizer))
        return {"arc_easy": {"acc,none": 0.4, "acc_norm,none": 0.5, "acc_stderr,none": 0.01},
                "boolq": {"alias": "boolq", "acc,none": 0.7}}

    monkeypatch.setattr(lm_eval_bridge, "run_lm_eval", fake_lm_eval)
    metrics = task.evaluate(_tiny_llama(vocab=257), "test")
    assert asked == {"tasks": ["arc_easy", "boolq"], "limit": 5, "tokenizer": 257}
    assert metrics["arc_easy_score"] == 0.5 and metrics["boolq_score"] == 0.7  # acc_norm first, else acc
    assert metrics["mean_score"] == pytest.approx(0.6) and "loss" in metrics and task.direction("mean_score")
    assert "arc_easy_score" not in task.evaluate(_tiny_llama(vocab=257), "train"), "benchmarks on the test split only"
    assert headline({"exact_match,strict-match": 0.25, "alias": "gsm8k"}) == 0.25
    with pytest.raises(HfpruneError, match="no score"):
        headline({"alias": "x"})
