"""Benchmark specs: one validated YAML document per benchmark in ``eval/``.

A spec names the dataset (Hub id, config, split, and optionally a second config of the same
repository joined row by row, e.g. GQA's images joined to its questions by ``imageId``), the
loader that turns rows into prompt fields, the prompt template, the generation settings, the
scorer and the scoring style (``official``: the scripts behind the published numbers, or
``lmms_eval``). A new benchmark is a new YAML file, plus a loader or scorer registered under a new name
when the existing ones do not fit.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from hfprune.errors import HfpruneError
from hfprune.config.schema import Section, one_of, read_yaml, validate_document

from hfprune.resources import BENCHMARK_SPECS, shipped_benchmark_specs, shipped_dir

EVAL_DIR = shipped_dir(BENCHMARK_SPECS)  # the shipped specs: eval/ in a checkout, package data when installed


class JoinSpec(Section):
    """A second config of the same repository whose columns are added to each row."""

    config: str = Field(description="config of the same Hub repository, e.g. testdev_balanced_images")
    split: str
    left_on: str = Field(description="column of the main rows holding the key, e.g. imageId")
    right_on: str = Field(description="column of the joined rows holding the key, e.g. id")


class DatasetSpec(Section):
    hub_id: str = Field(description="Hub dataset id, e.g. lmms-lab/GQA")
    config: Optional[str] = Field(None, description="Hub config (subset) name")
    split: str
    join: Optional[JoinSpec] = None


class GenerationSpec(Section):
    max_new_tokens: int = Field(gt=0)
    greedy: bool = True


class ScorerSpec(Section):
    name: str
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the scorer")

    @field_validator("name")
    @classmethod
    def _known_scorer(cls, name: str) -> str:
        from hfprune.evaluation.benchmarks.scorers import SCORERS

        return one_of(name, SCORERS, "scorer")

    @model_validator(mode="after")
    def _options_fit(self) -> "ScorerSpec":
        from hfprune.evaluation.benchmarks.scorers import SCORERS

        allowed = SCORERS[self.name].option_names
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(
                f"scorer '{self.name}' has no option {', '.join(unknown)}; "
                f"its options: {', '.join(allowed) or 'none'}"
            )
        return self


class ScoringSpec(Section):
    style: str = Field("official", description="how answers are read: official (LLaVA's scripts) or lmms_eval")

    @field_validator("style")
    @classmethod
    def _known_style(cls, style: str) -> str:
        from hfprune.evaluation.benchmarks.styles import STYLES

        return one_of(style, STYLES, "scoring style")


class BenchmarkSpec(Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = ""
    dataset: DatasetSpec
    loader: str = Field(description="registered loader that reads the dataset's rows")
    prompt: str = Field(description="str.format template over the loader's fields, e.g. {question}")
    generation: GenerationSpec
    scorer: ScorerSpec
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)

    @field_validator("loader")
    @classmethod
    def _known_loader(cls, loader: str) -> str:
        from hfprune.evaluation.benchmarks.loaders import LOADERS

        return one_of(loader, LOADERS, "loader")

    @model_validator(mode="after")
    def _prompt_fields(self) -> "BenchmarkSpec":
        from hfprune.evaluation.benchmarks.loaders import LOADERS

        fields = LOADERS[self.loader].fields
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(self.prompt) if name is not None}
        except ValueError as error:
            raise ValueError(f"prompt is not a valid template ({error}); write literal braces as {{{{ and }}}}")
        unknown = sorted(used - set(fields))
        if unknown:
            raise ValueError(
                f"prompt uses {', '.join('{' + name + '}' for name in unknown)}, which loader "
                f"'{self.loader}' does not provide; its fields: {', '.join(fields)}"
            )
        return self


def parse_spec(data: Any, source: str = "spec") -> BenchmarkSpec:
    """Validate a spec given as a dict; raises HfpruneError with one line naming every problem."""
    return validate_document(BenchmarkSpec, data, "benchmark spec", source)


def _read(path: Path) -> BenchmarkSpec:
    return parse_spec(read_yaml(path, "benchmark spec"), source=str(path))


def spec_names() -> list[str]:
    """Names of the shipped specs (``eval/*.yaml``)."""
    return list(shipped_benchmark_specs())


def load_spec(name_or_path: str | Path) -> BenchmarkSpec:
    """A shipped spec by name (``gqa`` → ``eval/gqa.yaml``) or any spec file by path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise HfpruneError(f"benchmark spec file '{path}' not found")
        return _read(path)
    shipped = shipped_benchmark_specs().get(text)
    if shipped is None:
        raise HfpruneError(
            f"unknown benchmark '{text}'; choose one of: {', '.join(spec_names()) or '(none found)'} "
            f"or give the path of a spec YAML file"
        )
    return _read(shipped)


def list_specs() -> list[BenchmarkSpec]:
    """Every shipped spec, sorted by name."""
    return [load_spec(name) for name in spec_names()]
