"""Load a saved checkpoint with plain transformers in a Python process that never imported hfprune."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch


def assert_loads_in_fresh_process(checkpoint: Path, inputs: torch.Tensor, logits: torch.Tensor,
                                  checks: str = "") -> None:
    """``AutoModelForImageClassification.from_pretrained(checkpoint, trust_remote_code=True)`` in a
    subprocess gives ``logits`` for ``inputs`` (atol 1e-5); ``checks`` are extra assertions on ``model``."""
    work = Path(checkpoint).parent
    torch.save(inputs, work / "inputs.pt")
    torch.save(logits.detach(), work / "logits.pt")
    script = "\n".join([
        "import sys, torch",
        "from transformers import AutoModelForImageClassification",
        f"model = AutoModelForImageClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)",
        "assert 'hfprune' not in sys.modules, 'loading must not need hfprune'",
        textwrap.dedent(checks).strip(),
        f"logits = model(torch.load({str(work / 'inputs.pt')!r})).logits",
        f"torch.testing.assert_close(logits, torch.load({str(work / 'logits.pt')!r}), atol=1e-5, rtol=0)",
        "print('OK')",
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def assert_reload_in_fresh_process(work: Path, checkpoints: list[dict]) -> None:
    """Each checkpoint loads with plain transformers in one Python process that never imports hfprune: with
    ``auto_class`` (e.g. ``AutoModelForCausalLM``) as ``model_class``, with ``zeros`` (parameter name → count)
    exactly, and giving ``outputs`` (logits, else the last hidden state) for ``inputs`` (atol 1e-5).

    A checkpoint is ``{"path", "auto_class", "model_class", "zeros", "inputs": dict of tensors, "outputs"}``, and
    optionally ``"generate": n``: greedy generation from the inputs then makes exactly n new tokens."""
    specs = []
    for index, checkpoint in enumerate(checkpoints):
        tensors = work / f"io_{index}.pt"
        torch.save({"inputs": checkpoint["inputs"], "outputs": checkpoint["outputs"].detach()}, tensors)
        specs.append({key: str(value) if isinstance(value, Path) else value for key, value in checkpoint.items()
                      if key not in ("inputs", "outputs")} | {"tensors": str(tensors)})
    (work / "checkpoints.json").write_text(json.dumps(specs))
    script = textwrap.dedent(f"""
        import json, sys, torch, transformers
        for spec in json.load(open({str(work / 'checkpoints.json')!r})):
            model = getattr(transformers, spec["auto_class"]).from_pretrained(spec["path"]).eval()
            assert type(model).__name__ == spec["model_class"], (spec["path"], type(model).__name__)
            parameters = dict(model.named_parameters())
            for name, zeros in spec["zeros"].items():
                assert int((parameters[name] == 0).sum()) == zeros, (spec["path"], name)
            io = torch.load(spec["tensors"])
            with torch.no_grad():
                out = model(**io["inputs"])
            first = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
            torch.testing.assert_close(first, io["outputs"], atol=1e-5, rtol=0, msg=spec["path"])
            if spec.get("generate"):
                new = spec["generate"]
                ids = model.generate(**io["inputs"], max_new_tokens=new, min_new_tokens=new, do_sample=False)
                assert ids.shape[1] == io["inputs"]["input_ids"].shape[1] + new, (spec["path"], ids.shape)
        assert 'hfprune' not in sys.modules, 'loading must not need hfprune'
        print('OK')
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


def assert_structured_reload(work: Path, checkpoints: list[dict]) -> None:
    """Each structurally pruned checkpoint loads in one Python process that never imports hfprune: a native one with
    plain ``from_pretrained`` (and it holds no model code: no ``.py`` file, no ``auto_map``), an own-code one with
    ``trust_remote_code=True``; as ``model_class``, with ``config`` (key -> value, of the config or of its
    ``text_config`` with ``text.`` keys), giving ``outputs`` (logits, else the last hidden state) for ``inputs``.

    A checkpoint is ``{"path", "auto_class", "model_class", "own_code", "config", "inputs", "outputs"}``."""
    specs = []
    for index, checkpoint in enumerate(checkpoints):
        tensors = work / f"structured_io_{index}.pt"
        torch.save({"inputs": checkpoint["inputs"], "outputs": checkpoint["outputs"].detach()}, tensors)
        specs.append({key: str(value) if isinstance(value, Path) else value for key, value in checkpoint.items()
                      if key not in ("inputs", "outputs")} | {"tensors": str(tensors)})
    (work / "structured.json").write_text(json.dumps(specs))
    script = textwrap.dedent(f"""
        import json, pathlib, sys, torch, transformers
        for spec in json.load(open({str(work / 'structured.json')!r})):
            folder = pathlib.Path(spec["path"])
            saved = json.loads((folder / "config.json").read_text())
            code = sorted(path.name for path in folder.glob("*.py"))
            if spec["own_code"]:
                assert code == ["modeling_per_layer.py"] and "auto_map" in saved, (folder, code)
            else:
                assert code == [] and "auto_map" not in saved, (folder, code)
            model = getattr(transformers, spec["auto_class"]).from_pretrained(
                folder, trust_remote_code=spec["own_code"]).eval()
            assert type(model).__name__ == spec["model_class"], (folder, type(model).__name__)
            for key, value in spec["config"].items():
                config = model.config.text_config if key.startswith("text.") else model.config
                assert getattr(config, key.removeprefix("text.")) == value, (folder, key, getattr(config, key))
            io = torch.load(spec["tensors"])
            with torch.no_grad():
                out = model(**io["inputs"])
            first = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
            torch.testing.assert_close(first, io["outputs"], atol=1e-5, rtol=0, msg=str(folder))
        assert 'hfprune' not in sys.modules, 'loading must not need hfprune'
        print('OK')
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
