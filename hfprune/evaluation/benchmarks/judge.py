"""An LLM judge for open-ended answers (MM-Vet) through any OpenAI-compatible endpoint.

The judge sees MM-Vet's few-shot grading table (question | ground truth | prediction |
correctness) and fills in the correctness, 0.0-1.0, of the last row; the scoring style reads the
grade from the reply. Every graded answer is appended to a JSONL cache keyed by a hash of
(question, reference, answer, judge model, style), so a rerun asks the judge nothing it has
answered before. The API key is sent in the Authorization header only; it is kept out of reprs,
errors, logs and the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from hfprune.errors import HfpruneError
from hfprune.secrets import redact, register_secret

ENV_BASE_URL = ("HFPRUNE_JUDGE_BASE_URL", "OPENAI_BASE_URL")
ENV_MODEL = ("HFPRUNE_JUDGE_MODEL",)
ENV_API_KEY = ("HFPRUNE_JUDGE_API_KEY", "OPENAI_API_KEY")

GRADING_PROMPT = """\
Grade the prediction of an AI model against the ground truth answer to a question. In the \
ground truth, <AND> means the prediction is completely right only if it contains every one of \
the listed elements, and <OR> means it is completely right if it contains any one of them. The \
correctness is one of 0.0 (completely wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 or \
1.0 (completely right). Fill in only the last cell of the table: the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | The joke is that the names of Iceland and Greenland are misleading: \
Iceland is mostly green and lush, while Greenland is mostly covered in ice and snow, which is why \
the person says the names give them trust issues. | The meme is about Iceland and Greenland and \
says that Iceland is not very icy and Greenland is not very green. | 0.4
Can you explain this meme? | The joke is that the names of Iceland and Greenland are misleading: \
Iceland is mostly green and lush, while Greenland is mostly covered in ice and snow, which is why \
the person says the names give them trust issues. | It jokes that the two names are misleading: \
Iceland has green landscapes and Greenland is mostly ice and snow, and the caption "This is why I \
have trust issues" plays on that contradiction between the names and the places. | 1.0
"""
NUDGE = "\nReply with the correctness score only, a number from 0.0 to 1.0:"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_ERROR_BODY = 64 << 10  # of an error response, read whole (then redacted, then cut) up to this


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge lives. ``api_key`` never shows in ``repr``."""

    base_url: str
    model: str
    api_key: Optional[str] = field(default=None, repr=False)
    timeout: float = 60.0
    attempts: int = 3  # per request, for network errors, 429 and 5xx
    retry_delay: float = 2.0  # seconds before the first retry; doubles after each

    @classmethod
    def resolve(cls, base_url: str | None = None, model: str | None = None, api_key: str | None = None):
        """Flags first, then ``HFPRUNE_JUDGE_*``, then ``OPENAI_BASE_URL``/``OPENAI_API_KEY``; None if incomplete."""

        def first(flag, names):
            return flag or next((os.environ[n] for n in names if os.environ.get(n)), None)

        base_url, model = first(base_url, ENV_BASE_URL), first(model, ENV_MODEL)
        if not base_url or not model:
            return None
        return cls(base_url.rstrip("/"), model, first(api_key, ENV_API_KEY))

    def __post_init__(self):
        register_secret(self.api_key)

    def redact(self, text: str) -> str:
        return redact(text.replace(self.api_key, "***") if self.api_key else text)


NO_JUDGE = (
    "MM-Vet needs an LLM judge: set HFPRUNE_JUDGE_BASE_URL (an OpenAI-compatible endpoint, e.g. "
    "https://api.openai.com/v1), HFPRUNE_JUDGE_MODEL and, if the endpoint needs one, HFPRUNE_JUDGE_API_KEY "
    "(OPENAI_BASE_URL / OPENAI_API_KEY also work), or pass the judge flags"
)


def grading_prompt(question: str, reference: str, answer: str) -> str:
    reference = reference.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    cells = (" ".join(text.split()) for text in (question, reference, answer))
    return GRADING_PROMPT + " | ".join(cells) + " | "


def _post(judge: JudgeConfig, prompt: str, max_tokens: int) -> str:
    """One chat completion's text, retried on network errors, 429 and 5xx."""
    body = json.dumps(
        {"model": judge.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0, "max_tokens": max_tokens}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if judge.api_key:
        headers["Authorization"] = f"Bearer {judge.api_key}"
    url = f"{judge.base_url}/chat/completions"
    for attempt in range(max(1, judge.attempts)):
        if attempt:
            time.sleep(judge.retry_delay * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=judge.timeout) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"] or ""
        except urllib.error.HTTPError as error:
            detail = judge.redact(" ".join(error.read(MAX_ERROR_BODY).decode(errors="replace").split()))
            problem = f"HTTP {error.code} {error.reason}: {detail[:300]}"  # cut after redaction
            if error.code not in _RETRY_STATUS:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            problem = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
        except (ValueError, KeyError, IndexError, TypeError) as error:
            problem = f"not a chat-completions response ({type(error).__name__}: {error})"
    raise HfpruneError(
        judge.redact(f"LLM judge {judge.model} at {url} failed after {attempt + 1} attempt(s): {problem}; "
                     f"check HFPRUNE_JUDGE_BASE_URL, HFPRUNE_JUDGE_MODEL and the API key")
    )


class JudgeCache:
    """Graded answers in a JSONL file, one line per answer, appended as they come."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                self.entries[entry["key"]] = entry

    @staticmethod
    def key(question: str, reference: str, answer: str, model: str, style: str) -> str:
        return hashlib.sha256(json.dumps([question, reference, answer, model, style]).encode()).hexdigest()

    def add(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.entries[entry["key"]] = entry


def grade(judge: JudgeConfig, cache: JudgeCache, question: str, reference: str, answer: str,
          *, read: Callable[[str], Optional[float]], style: str, max_tokens: int = 16, asks: int = 3) -> dict:
    """The cached or fresh grade ``{key, score, reply, unparsed}`` of one answer.

    ``read`` is the style's reading of a reply (None: no usable grade). Such a reply is asked again
    (with a nudge) up to ``asks`` times in all; if none is usable the score is 0.0 and ``unparsed``
    is true.
    """
    key = JudgeCache.key(question, reference, answer, judge.model, style)
    if key in cache.entries:
        return cache.entries[key]
    prompt = grading_prompt(question, reference, answer)
    reply, score = "", None
    for ask in range(asks):
        reply = judge.redact(_post(judge, prompt if ask == 0 else prompt + NUDGE, max_tokens))
        score = read(reply)
        if score is not None:
            break
    entry = {"key": key, "score": score or 0.0, "reply": reply, "unparsed": score is None}
    cache.add(entry)
    return entry
