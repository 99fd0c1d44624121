"""Secrets never printed: every token and key the process knows is redacted from every message.

Known secrets are the Hugging Face token (``HF_TOKEN`` and its older names, or the one ``hf auth login``
saved), the judge's key (``HFPRUNE_JUDGE_API_KEY`` / ``OPENAI_API_KEY``) and any value given to
:func:`register_secret`. On top, anything shaped like a token (``hf_...``, ``sk-...``, the value of a
``Bearer`` or ``Authorization`` header) is masked, for tokens the process never saw but a server echoes.
Redaction runs on whole texts, before any truncation, so a cut can never leave half a secret behind.
"""

from __future__ import annotations

import functools
import io
import os
import re
import sys

SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HFPRUNE_JUDGE_API_KEY",
                    "OPENAI_API_KEY")
MASK = "***"
MIN_LENGTH = 6  # shorter values (a test's "x") would mask ordinary words
_SHAPES = re.compile(
    r"(?i)(?P<head>\bbearer\s+|\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)[^\s\"',;}]+"
    r"|\bhf_[A-Za-z0-9]{8,}|\bsk-[A-Za-z0-9_-]{8,}"
)
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact ``value`` from every message from now on (a key the process got other than from the environment)."""
    if value and len(value) >= MIN_LENGTH:
        _registered.add(value)


@functools.lru_cache(maxsize=1)
def _saved_hub_token() -> str | None:
    """The token ``hf auth login`` saved (read once per process)."""
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - redaction must never fail
        return None


def known_secrets() -> list[str]:
    """Every secret value this process knows, longest first (so a secret inside another goes with it)."""
    values = {os.environ.get(name) for name in SECRET_VARIABLES} | {_saved_hub_token()} | _registered
    return sorted((value for value in values if value and len(value) >= MIN_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every known secret, and everything shaped like a token, replaced by ``***``."""
    for secret in known_secrets():
        text = text.replace(secret, MASK)
    return _SHAPES.sub(lambda match: (match.group("head") or "") + MASK, text)


class RedactingStream(io.TextIOBase):
    """A text stream (stdout, stderr) that redacts every write before passing it on; the rest is the stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text) if text else text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def isatty(self) -> bool:
        return self._stream.isatty()

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()


def redact_standard_streams() -> None:
    """Route stdout and stderr through :class:`RedactingStream` (once; whatever prints, libraries included)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
