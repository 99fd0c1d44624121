"""The README's any-model section as a user reads it: its table of architectures is the one the tests generate, and
its ``hfprune prune`` example on a Qwen2.5-VL runs as written — here on a tiny random Qwen2.5-VL saved with its
processor, and LLaVA-1.5 conversations with their images in the layout the example names."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from architecture_table import README, architecture_table, readme_table
from llava_fixtures import write_llava_fixture
from tiny_processors import save_checkpoint

MARKER = "<!-- vlm-prune-command -->"


def example(marker: str) -> str:
    """The bash block that follows ``marker`` in the README."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index(marker):].split("```bash\n", 1)[1]
    return block.split("```", 1)[0]


def test_the_readme_lists_exactly_the_architectures_the_tests_prune():
    assert readme_table(README.read_text(encoding="utf-8")) == architecture_table(), \
        "regenerate it: python tests/architecture_table.py --write"


def test_the_vlm_prune_example_runs_as_written(tmp_path):
    save_checkpoint("qwen2_5_vl", tmp_path / "qwen2.5-vl")
    json_path, images = write_llava_fixture(tmp_path / "fixture", n=6)
    data = tmp_path / "data" / "llava"
    shutil.copytree(images, data)  # the example's layout: the JSON beside coco/, gqa/, ... under data/llava
    shutil.copy(json_path, data / "llava_v1_5_mix665k.json")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = example(MARKER)
    assert "--method wanda --sparsity 0.5" in script and "--image-root data/llava" in script
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model.language_model.layers.0.self_attn.q_proj" in result.stdout
    assert "wanda: sparsity 0.5000" in result.stdout and "Traceback" not in result.stderr
    out = tmp_path / "qwen2.5-vl-wanda"
    assert (out / "processor_config.json").is_file() and (out / "chat_template.jinja").is_file()
    assert "AutoModelForImageTextToText" in (out / "README.md").read_text()
