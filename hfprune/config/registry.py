"""What the registries of methods share (unstructured methods, sparse-training methods): a recipe entry that names
a method alone or with its options, and building a method from a name and options, validated by its class."""

from __future__ import annotations

from typing import Annotated, Any, Mapping, Union

from pydantic import BeforeValidator, Field

from hfprune.config.schema import Section, validate_document
from hfprune.errors import HfpruneError


def _entry(value: Any, retired: Mapping[str, str]) -> Any:
    """A method given by name alone (``ump``) is the method with its default options; a retired name is refused
    with what it is called now."""
    entry = {"name": value} if isinstance(value, str) else value
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name in retired:
        raise ValueError(f"'{name}' {retired[name]}")
    return entry


def entry_type(registry: dict[str, type[Section]], retired: Mapping[str, str] | None = None):
    """The recipe type of one method of ``registry``: a name, or a mapping of the name and its options.
    ``retired`` maps names that once meant a method of this registry to what to say instead (one name means one
    thing across hfprune: an old name is refused, never reinterpreted)."""
    retired = dict(retired or {})
    return Annotated[Union[tuple(registry.values())], Field(discriminator="name"),
                     BeforeValidator(lambda value: _entry(value, retired))]


def option_names(method: type[Section]) -> list[str]:
    return [name for name in method.model_fields if name != "name"]


def method_from_registry(registry: dict[str, type[Section]], what: str, name: str, options: dict[str, Any],
                         retired: Mapping[str, str] | None = None):
    """The ``what`` (e.g. "unstructured method") ``name`` of ``registry`` with ``options``, validated by its class;
    an unknown or retired name, an unknown option, or a bad value, is one HfpruneError line."""
    if retired and name in retired:
        raise HfpruneError(f"{what} '{name}' {retired[name]}")
    if name not in registry:
        raise HfpruneError(f"unknown {what} '{name}'; choose one of: {', '.join(registry)}")
    accepted = option_names(registry[name])
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        others = [other for other, method in registry.items() if unknown[0] in option_names(method)]
        hint = f"; '{unknown[0]}' applies to {', '.join(others)} only" if others else ""
        raise HfpruneError(f"{what} '{name}' has no option '{unknown[0]}' (its options: {', '.join(accepted) or 'none'})"
                           f"{hint}")
    return validate_document(registry[name], {"name": name, **options}, f"options of {what}", f"'{name}'")
