"""A benchmark's samples: its spec's rows (from the Hub or a local copy, joined where the spec says so), read by
the spec's loader and put into its prompt template."""

from __future__ import annotations

from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks.base import BenchmarkSample
from hfprune.evaluation.benchmarks.data import check_columns, joined_rows, open_split
from hfprune.evaluation.benchmarks.loaders import LOADERS, Loader
from hfprune.evaluation.benchmarks.spec import BenchmarkSpec


def _rows(spec: BenchmarkSpec, loader: Loader, data_path: str | None):
    """The spec's rows (joined when the spec says so) with only the columns the loader reads."""
    dataset = spec.dataset
    source = f"data path '{data_path}'" if data_path else dataset.hub_id
    main = open_split(spec.name, dataset.hub_id, dataset.config, dataset.split, data_path)
    if dataset.join is None:
        check_columns(spec.name, source, main, loader.columns)
        return main.select_columns([c for c in main.column_names if c in loader.columns + loader.optional])
    join = dataset.join
    joined = open_split(spec.name, dataset.hub_id, join.config, join.split, data_path)
    check_columns(spec.name, f"{source}, {join.config}", joined, (join.right_on,))
    check_columns(spec.name, source, main, (join.left_on,))
    have = set(main.column_names) | set(joined.column_names)
    missing = [c for c in loader.columns if c not in have]
    if missing:
        raise HfpruneError(
            f"benchmark '{spec.name}' ({source}): neither {dataset.config} nor {join.config} has column "
            f"{', '.join(repr(c) for c in missing)}; use a copy in the Hub schema"
        )
    wanted = set(loader.columns + loader.optional)
    main = main.select_columns([c for c in main.column_names if c in wanted or c == join.left_on])
    joined = joined.select_columns([c for c in joined.column_names if c in wanted or c == join.right_on])
    return joined_rows(spec.name, main, joined, join.left_on, join.right_on)


def load_samples(spec: BenchmarkSpec, data_path: str | None = None, limit: int | None = None) -> list[BenchmarkSample]:
    """The benchmark's samples in dataset order; ``limit`` keeps the first ``limit`` of them.

    ``data_path`` is a local copy (see :mod:`hfprune.evaluation.benchmarks.data`); without it the
    dataset comes from the Hub through ``datasets.load_dataset``.
    """
    if limit is not None and limit < 1:
        raise HfpruneError(f"benchmark '{spec.name}': limit must be a positive number of samples, got {limit}")
    loader = LOADERS[spec.loader]
    samples: list[BenchmarkSample] = []
    seen: set[str] = set()
    for index, row in enumerate(_rows(spec, loader, data_path)):
        if limit is not None and len(samples) >= limit:
            break
        loaded = loader.read(index, row)
        if loaded is None:
            continue
        if loaded.sample_id in seen:
            raise HfpruneError(
                f"benchmark '{spec.name}': sample id '{loaded.sample_id}' occurs twice; "
                f"loader '{spec.loader}' needs unique ids (is the data path a copy in the Hub schema?)"
            )
        seen.add(loaded.sample_id)
        prompt = spec.prompt.format_map(loaded.fields)
        samples.append(BenchmarkSample(loaded.sample_id, prompt, loaded.image, loaded.references, loaded.meta))
    return samples
