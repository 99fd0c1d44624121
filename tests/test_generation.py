"""Generation on a tiny random TinyLLaVA: chat template, left-padded batches, resumable JSONL, rescoring."""

import json
import sys

import pytest
import torch
from PIL import Image

from hfprune.errors import HfpruneError
from hfprune.evaluation import generation
from hfprune.evaluation.benchmarks.base import BenchmarkSample
from hfprune.evaluation.generation import (generate_batch, generate_predictions, load_model, read_predictions,
                                           render_prompt)
from hfprune.evaluation.lm_eval_bridge import causal_lm_of, run_lm_eval
from hfprune.evaluation.benchmark_suite import evaluate_model
from hfprune.models.llava.tiny import build_tiny_llava

PHI_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
              "detailed, and polite answers to the user's questions. USER: <image>\n{q} ASSISTANT:")
QUESTIONS = [
    "What is in the image?",
    "Is there a dog in the image?\nAnswer the question using a single word or phrase.",
    "Context: a red cat on a blue mat.\nWhat colour is the mat?\nA. red\nB. blue\n"
    "Answer with the option's letter from the given choices directly.",
    "Describe.",
    "How many?",
    "Where is the fox? The quick brown fox jumps over the lazy dog.",
    "two three",
    "Read the text.",
]


def make_samples(n=8):
    """Images of different sizes and colours, two text-only samples, prompts of different lengths."""
    def image(i):
        return None if i % 4 == 3 else Image.new("RGB", (20 + 7 * i, 30 + 5 * i), (30 * i, 200 - 20 * i, 90))

    return [BenchmarkSample(f"s{i}", QUESTIONS[i % len(QUESTIONS)], image(i), [f"ref{i}"], {"index": i})
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model, run on one thread (spinning threads crawl on a busy machine), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(build_tiny_llava(tmp_path_factory.mktemp("tiny_llava")), device="cpu")
    torch.set_num_threads(threads)


def test_chat_template_renders_the_phi_prompt(tiny):
    _, processor = tiny
    image_sample, text_sample = make_samples(4)[0], make_samples(4)[3]
    assert render_prompt(processor, image_sample) == PHI_PROMPT.format(q=image_sample.prompt)
    assert render_prompt(processor, text_sample) == PHI_PROMPT.format(q=text_sample.prompt).replace("<image>\n", "")


def test_image_expands_to_one_token_per_vision_patch(tiny):
    model, processor = tiny
    inputs = processor(text=[render_prompt(processor, make_samples(1)[0])], images=[make_samples(1)[0].image],
                       return_tensors="pt")
    vision = model.config.vision_config
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == (vision.image_size // vision.patch_size) ** 2
    assert model.config.vision_feature_select_strategy == "full" and model.config.vision_feature_layer == -2
    assert model.config.text_config.model_type == "phi" and vision.model_type == "siglip_vision_model"


def test_batch_of_eight_answers_like_one_at_a_time(tiny):
    model, processor = tiny
    samples = make_samples(8)
    batched = generate_batch(model, processor, samples, max_new_tokens=10)
    single = [generate_batch(model, processor, [sample], max_new_tokens=10)[0] for sample in samples]
    assert batched == single
    assert all(batched) and len(set(batched)) > 2, "answers depend on the input"


def test_interrupted_generation_resumes_with_only_the_missing_samples(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    samples, path = make_samples(8), tmp_path / "predictions.jsonl"
    real_generate_batch, generated, interrupt_after = generation.generate_batch, [], [4]

    def counting(model, processor, batch, max_new_tokens):
        generated.extend(sample.sample_id for sample in batch)
        if len(generated) > interrupt_after[0]:
            raise KeyboardInterrupt  # killed during the second batch
        return real_generate_batch(model, processor, batch, max_new_tokens)

    monkeypatch.setattr(generation, "generate_batch", counting)
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(model, processor, samples, path, max_new_tokens=4, batch_size=3, progress=False)
    assert [p.sample_id for p in read_predictions(path)] == ["s0", "s1", "s2"]
    with path.open("a") as handle:  # a record torn by the kill
        handle.write('{"sample_id": "s3", "outp')

    generated.clear()
    interrupt_after[0] = len(samples)
    predictions = generate_predictions(model, processor, samples, path, max_new_tokens=4, batch_size=3, progress=False)
    assert generated == ["s3", "s4", "s5", "s6", "s7"]
    assert [p.sample_id for p in predictions] == [s.sample_id for s in samples]
    assert [json.loads(line)["sample_id"] for line in path.read_text().splitlines()] == [f"s{i}" for i in range(8)]
    assert predictions[5].references == ["ref5"] and predictions[5].meta == {"index": 5}

    generated.clear()
    again = generate_predictions(model, processor, samples, path, max_new_tokens=4, batch_size=3, progress=False)
    assert generated == [] and again == predictions


def test_corrupt_record_in_the_middle_is_a_clear_error(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"sample_id": "a", "output": "x", "references": [], "meta": {}}\nnot json\n'
                    '{"sample_id": "b", "output": "y", "references": [], "meta": {}}\n')
    with pytest.raises(HfpruneError, match="line 2"):
        read_predictions(path)


def test_unloadable_model_is_a_clear_error(tmp_path):
    with pytest.raises(HfpruneError, match="cannot load model"):
        load_model(tmp_path / "no-such-model")


def test_language_model_for_lm_eval_shares_the_llava_weights(tiny):
    model, processor = tiny
    causal_lm = causal_lm_of(model)
    ids = processor.tokenizer(["The quick brown fox"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(causal_lm(input_ids=ids).logits, model(input_ids=ids).logits)
    assert causal_lm.lm_head.weight is model.lm_head.weight


def test_lm_eval_missing_says_how_to_install(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(HfpruneError, match=r"pip install 'hfprune\[lmeval\]'"):
        run_lm_eval(tiny[0], tiny[1].tokenizer, ["hellaswag"], tmp_path)


def test_lm_eval_on_the_language_model_with_a_local_task(tiny, tmp_path):
    pytest.importorskip("lm_eval")
    rows = [{"question": f"Question {i}: is the sky blue?", "choices": ["yes", "no"], "label": i % 2} for i in range(4)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_choice.yaml").write_text(
        f"task: tiny_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'rows.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n")
    summary = evaluate_model(tiny, [], tmp_path / "out", batch_size=2, lm_eval_tasks=["tiny_choice"],
                             lm_eval_include=tmp_path / "tasks", progress=False)
    accuracy = summary["lm_eval"]["tiny_choice"]["acc,none"]
    assert 0 <= accuracy <= 1 and summary["lm_eval"]["tiny_choice"]["sample_len"] == 4
    written = json.loads((tmp_path / "out" / "lm_eval.json").read_text())
    assert written["results"]["tiny_choice"]["acc,none"] == accuracy
    assert "lm-eval tiny_choice" in (tmp_path / "out" / "summary.md").read_text()


def test_processes_answer_disjoint_shares_that_merge_into_one_prediction_file(tiny, tmp_path):
    from benchmark_fixtures import write_fixture
    from hfprune.evaluation.benchmark_suite import answer_share, merge_shares

    data = tmp_path / "data"
    data.mkdir()
    write_fixture("pope", tmp_path).rename(data / "pope")
    out = tmp_path / "eval"
    for rank in (0, 1):  # as two processes would, one after the other
        answer_share(tiny, ["pope"], out, rank, 2, data_dir=data, max_new_tokens=2, progress=False)
    shares = [{p.sample_id for p in read_predictions(out / "pope" / f"predictions.rank{rank}.jsonl")} for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 3 and not shares[0] & shares[1]

    merge_shares(["pope"], out)
    assert not list((out / "pope").glob("predictions.rank*.jsonl"))
    assert {p.sample_id for p in read_predictions(out / "pope" / "predictions.jsonl")} == shares[0] | shares[1]
    summary = evaluate_model(str(tmp_path / "no-model-needed"), ["pope"], out, data_dir=data, max_new_tokens=2,
                             progress=False)  # every answer is there: scoring never loads the model
    assert 0 <= summary["scores"]["pope"] <= 100
