"""No message of any command contains a known secret, even when a server echoes the request's headers.

Local servers echo the Authorization header back (in the body and a header) with an error status; the
commands' whole output is searched for the token and for every 12-character piece of it.
"""

import json
import os
import subprocess
import sys

import pytest

from echo_server import EchoServer
from hfprune.errors import reason
from hfprune.secrets import redact, register_secret
from judge_server import JudgeServer
from waiting import patience

HF_TOKEN = "hf_" + "Zq8" * 12  # 39 characters, shaped like a real one
JUDGE_KEY = "sk-" + "k3y" * 120  # a key so long that a 300-character cut would land inside it


def _pieces(secret: str, size: int = 12) -> list[str]:
    return [secret[i:i + size] for i in range(0, len(secret) - size + 1, 3)]


def _assert_clean(text: str, secret: str) -> None:
    leaked = [piece for piece in _pieces(secret) if piece in text]
    assert not leaked, f"secret pieces printed: {leaked[:3]} in {text[-600:]!r}"


def _hfprune(*args, env_extra: dict, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", **env_extra}
    return subprocess.run([sys.executable, "-m", "hfprune", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=patience(240))


def test_reason_redacts_before_it_cuts(monkeypatch):
    monkeypatch.setenv("HFPRUNE_JUDGE_API_KEY", JUDGE_KEY)
    text = reason(RuntimeError("x" * 250 + " Bearer " + JUDGE_KEY))
    assert len(text) <= 300 and "k3yk3y" not in text and "***" in text


def test_token_shapes_are_masked_even_when_unknown():
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer ***"
    assert "hf_" + "a" * 30 not in redact("token hf_" + "a" * 30)
    assert redact("a token limit of 2048, basic setup") == "a token limit of 2048, basic setup"
    register_secret("per-process-key-123")
    assert redact("got per-process-key-123!") == "got ***!"


@pytest.mark.parametrize("status", [401, 500])
def test_push_never_prints_the_hub_token(tmp_path, status):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "lenet5_mini"}))
    with EchoServer(status) as server:
        result = _hfprune("push", folder, "someone/pruned", env_extra={"HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": server.url})
    assert server.requests > 0, result.stderr
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    _assert_clean(result.stdout + result.stderr, HF_TOKEN)


def test_the_judge_key_never_prints_when_its_echo_is_cut(tmp_path):
    rows = [{"prediction": "a giraffe", "answer": "giraffe", "question": "what animal?", "capability": "rec"}]
    path = tmp_path / "mmvet.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with JudgeServer(api_key="the-right-key") as server:  # answers 401 and echoes the wrong key it received
        result = _hfprune("score", "mmvet", path, "--judge-base-url", server.base_url, "--judge-model", "judge",
                          env_extra={"HFPRUNE_JUDGE_API_KEY": JUDGE_KEY})
    assert server.requests, result.stderr
    assert result.returncode == 2 and "401" in result.stderr, result.stderr
    _assert_clean(result.stdout + result.stderr, JUDGE_KEY)


def test_a_study_that_pushes_its_best_model_never_prints_the_token(tmp_path):
    from test_study_state import _recipe

    recipe = _recipe(export={"checkpoints": "best", "push_to_hub": "someone/best"}, report={"plots": False})
    recipe["pretrain"]["epochs"] = 0
    recipe["pruning"]["settings"][0]["candidates"]["num"] = 1
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    with EchoServer(403) as server:
        result = _hfprune("run", path, "--out", tmp_path / "out", "--no-progress",
                          env_extra={"HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert server.requests > 0 and result.returncode == 2, result.stderr
    assert "403" in result.stderr and "Traceback" not in result.stderr
    _assert_clean(result.stdout + result.stderr, HF_TOKEN)
