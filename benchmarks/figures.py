"""``--json PATH`` for the benchmark scripts: the figures a script prints, also written as one JSON object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def save_figures(args: argparse.Namespace, figures: dict) -> None:
    """Write ``figures`` to ``args.json`` when it was given (benchmarks/gpu_suite.py reads them from there)."""
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1, default=str), encoding="utf-8")
