"""Validated YAML documents (recipes, benchmark specs): safe loading and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hfprune.errors import HfpruneError

Document = TypeVar("Document", bound=BaseModel)


class Section(BaseModel):
    """A strict part of a document: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def one_of(value: str, known, what: str) -> str:
    """``value`` if it is a registered name, else an error listing the registered ones."""
    if value not in known:
        raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(known)}")
    return value


def _model_at(root: type[BaseModel], location: tuple) -> type[BaseModel] | None:
    """The schema class that a validation error's location points into."""
    model: type[BaseModel] | None = root
    for key in location:
        if isinstance(key, int) or model is None:
            continue
        field = model.model_fields.get(key)
        annotation = field.annotation if field else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        candidates += [inner for candidate in candidates for inner in getattr(candidate, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _describe(root: type[BaseModel], error: dict) -> str:
    location = tuple(error["loc"])
    where = ".".join(str(part) for part in location) or "document"
    if error["type"] == "extra_forbidden":
        model = _model_at(root, location[:-1])
        allowed = ", ".join(model.model_fields) if model else "see the documentation"
        parent = ".".join(str(part) for part in location[:-1]) or "the top level"
        return f"unknown key '{location[-1]}' in {parent}; allowed keys: {allowed}"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if not location:  # a check of the whole document says itself which fields it is about
        return message
    if error["type"] in {"literal_error", "value_error", "assertion_error"}:
        return f"{where}: {message}"
    return f"{where}: {message} (got {error.get('input')!r})"


def validate_document(model: type[Document], data: Any, what: str, source: str) -> Document:
    """``model`` validated from ``data``; every problem named on one line of an HfpruneError."""
    if not isinstance(data, dict):
        raise HfpruneError(f"{source}: a {what} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(_describe(model, item) for item in error.errors())
        raise HfpruneError(f"invalid {what} {source}: {problems}") from None


def read_yaml(path: Path, what: str) -> Any:
    """``yaml.safe_load`` of a file (nothing in it is executed), syntax errors with line and column."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise HfpruneError(f"{what} {path} is not valid YAML{where}: {problem}") from None
