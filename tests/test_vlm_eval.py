"""``hfprune eval`` with any vision-language model: tiny random Llava, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL,
Idefics3 (SmolVLM), Gemma 3 and PaliGemma saved with processors built offline, answering the benchmark fixtures in
their Hub schemas; prompts in each model's own chat template (PaliGemma: plain, as it ships none), batches that
answer as one sample at a time does, generation that stops where the template ends an assistant turn."""

import json

import pytest
import torch
from typer.testing import CliRunner

from benchmark_fixtures import write_fixture
from tiny_models import ARCHITECTURES
from tiny_processors import save_checkpoint
from hfprune.evaluation.benchmark_suite import evaluate_model
from hfprune.evaluation.benchmarks.base import BenchmarkSample
from hfprune.evaluation.generation import load_model, render_prompt, stop_ids

VLMS = [name for name, arch in ARCHITECTURES.items() if arch.kind == "vision_language"]
TASKS = ["gqa", "sqa_img", "pope"]
SAMPLES = {"gqa": 5, "sqa_img": 3, "pope": 6}
# how each public template asks for an answer, and the token it closes an assistant turn with
GENERATION_PROMPTS = {"llava": ("ASSISTANT:", None), "llava_onevision": ("<|im_start|>assistant\n", "<|im_end|>"),
                      "qwen2_vl": ("<|im_start|>assistant\n", "<|im_end|>"),
                      "qwen2_5_vl": ("<|im_start|>assistant\n", "<|im_end|>"),
                      "idefics3": ("Assistant:", "<end_of_utterance>"),
                      "gemma3": ("<start_of_turn>model\n", "<end_of_turn>"), "paligemma": (None, None)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_eval")
    data = root / "data"
    data.mkdir()
    for name in TASKS:
        write_fixture(name, root).rename(data / name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root, data
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", VLMS)
def test_prompts_are_the_models_own_and_generation_stops_at_its_end_of_turn(setup, name):
    from PIL import Image

    root, _ = setup
    model, processor = load_model(save_checkpoint(name, root / f"{name}-prompt"), device="cpu")
    sample = BenchmarkSample("s", "What colour is the car?", Image.new("RGB", (20, 20)), ["red"], {})
    prompt = render_prompt(processor, sample)
    generation_prompt, end_of_turn = GENERATION_PROMPTS[name]
    if generation_prompt is None:
        assert prompt == sample.prompt  # no chat template: the processor places the image tokens itself
    else:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.prompt}]}]
        assert prompt == processor.apply_chat_template(messages, add_generation_prompt=True)
        assert prompt.endswith(generation_prompt)
    stops = stop_ids(model, processor)
    assert processor.tokenizer.eos_token_id in stops
    if end_of_turn is not None:
        assert processor.tokenizer.convert_tokens_to_ids(end_of_turn) in stops


@pytest.mark.parametrize("name", VLMS)
def test_every_vlm_answers_the_benchmarks_batched_as_one_by_one(setup, name):
    root, data = setup
    checkpoint = save_checkpoint(name, root / name)
    answers = {}
    for batch_size in (3, 1):
        out = root / f"{name}-out-{batch_size}"
        summary = evaluate_model(str(checkpoint), TASKS, out, data_dir=data, batch_size=batch_size,
                                 max_new_tokens=4, progress=False)
        assert set(summary["scores"]) == set(TASKS) and all(0 <= score <= 100 for score in summary["scores"].values())
        answers[batch_size] = {}
        for task in TASKS:
            lines = (out / task / "predictions.jsonl").read_text().splitlines()
            assert len(lines) == SAMPLES[task], task
            answers[batch_size].update({(task, row["sample_id"]): row["output"] for row in map(json.loads, lines)})
    assert answers[3] == answers[1]


def test_hfprune_eval_runs_a_qwen2_5_vl(setup):
    from hfprune.cli import app

    root, data = setup
    checkpoint = save_checkpoint("qwen2_5_vl", root / "qwen-cli")
    out = root / "qwen-cli-out"
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--tasks", "gqa,pope", "--out", str(out),
                                      "--data-dir", str(data), "--batch-size", "4", "--max-new-tokens", "3",
                                      "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["scores"]) == ["gqa", "pope"] and summary["styles"] == {"gqa": "official", "pope": "official"}
