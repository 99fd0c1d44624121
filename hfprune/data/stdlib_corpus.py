"""A text corpus on every machine: the Python standard library's own source files.

The list is fixed and sorted: every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, by its path relative
to that folder (POSIX separators), leaving out what distributions ship apart or not at all — the test suites
(``test``, ``tests``, ``idle_test`` folders), installed packages (``site-packages``, ``dist-packages``) and byte
caches. The same Python version gives the same files, in the same order, on every machine;
:func:`corpus_digest` names the exact contents (recorded with a study, to compare machines).
"""

from __future__ import annotations

import functools
import hashlib
import sysconfig
from pathlib import Path

NAME = "python_stdlib"
LEFT_OUT = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=4)
def stdlib_files(root: str | None = None) -> tuple[str, ...]:
    """The corpus' files, relative to ``root`` (default: this Python's standard library), sorted."""
    base = Path(root) if root is not None else stdlib_root()
    found = []
    for path in base.rglob("*.py"):
        relative = path.relative_to(base)
        if not LEFT_OUT.intersection(relative.parts[:-1]) and path.is_file():
            found.append(relative.as_posix())
    return tuple(sorted(found))


def read_stdlib(files: tuple[str, ...] | None = None, root: str | None = None) -> list[str]:
    """The text of each of ``files`` (default: all of :func:`stdlib_files`), decoded as UTF-8 (undecodable
    bytes replaced), in order."""
    base = Path(root) if root is not None else stdlib_root()
    names = stdlib_files(root) if files is None else files
    return [(base / name).read_bytes().decode("utf-8", errors="replace") for name in names]


def corpus_digest(files: tuple[str, ...], texts: list[str]) -> str:
    """A short hash of the files' names and contents: equal on two machines iff the corpus is the same."""
    digest = hashlib.sha256()
    for name, text in zip(files, texts):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]
