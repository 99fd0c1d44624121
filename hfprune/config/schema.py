"""Validated YAML documents (recipes, benchmark specs): safe loading and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hfprune.errors import HfpruneError

Document = TypeVar("Document", bound=BaseModel)


class Section(BaseModel):
    """A strict part of a document: unknown keys are errors, values are frozen, numbers finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
        model = _model_at(root, location[:-1])
        field = model.model_fields.get(str(location[-1])) if model is not None and location else None
        about = f" ({field.description})" if field is not None and field.description else ""
        return f"{where}: required field is missing{about}"
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


# Limits of a YAML document: far above any recipe or spec, far below what hangs or exhausts the machine.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # values after expanding every alias (a "billion laughs" document expands to 10^9)


def _check_yaml_shape(text: str) -> None:
    """Refuse a document nested deeper than :data:`MAX_YAML_DEPTH`, with an alias to a node that contains it
    (recursive), or whose aliases expand to more than :data:`MAX_YAML_NODES` values; counted over the parser's
    events, in linear time and without recursion."""
    sizes: dict[str, int] = {}  # anchor -> values in its node, aliases expanded
    stack: list[list] = []  # open collections: [values so far, itself included; anchor]
    total = 0

    def count(values: int, into_parent: bool = True) -> None:
        nonlocal total
        total += values
        if total > MAX_YAML_NODES:
            raise ValueError(f"aliases expand it to more than {MAX_YAML_NODES:,} values")
        if stack and into_parent:
            stack[-1][0] += values

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise ValueError(f"alias *{event.anchor} refers to a node that contains it (a recursive document)")
            count(sizes[event.anchor])
        elif isinstance(event, yaml.ScalarEvent):
            count(1)
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) >= MAX_YAML_DEPTH:
                raise ValueError(f"it nests deeper than {MAX_YAML_DEPTH} levels")
            count(1, into_parent=False)
            stack.append([1, event.anchor])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            values, anchor = stack.pop()
            if anchor is not None:
                sizes[anchor] = values
            if stack:
                stack[-1][0] += values


def _yaml_error(error: yaml.YAMLError, path: Path, what: str) -> HfpruneError:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return HfpruneError(f"{what} {path} is not valid YAML{where}: {problem}")


def read_yaml(path: Path, what: str) -> Any:
    """``yaml.safe_load`` of a file (nothing in it is executed) within size, depth and alias-expansion limits;
    every problem (not a file, not UTF-8, bad syntax, a limit) one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise HfpruneError(f"{what} {path} is not a regular file")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise HfpruneError(f"{what} {path} is {path.stat().st_size:,} bytes; a {what} has at most "
                           f"{MAX_YAML_BYTES:,}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HfpruneError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as "
                           "UTF-8") from None
    except OSError as error:
        raise HfpruneError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        _check_yaml_shape(text)
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _yaml_error(error, path, what) from None
    except ValueError as error:
        raise HfpruneError(f"{what} {path} is refused: {error}") from None
