"""How report values are written: table cells (tau, p, ratios, '—' when unknown) and strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from hfprune.io import jsonable


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (no NaN) of ``value``."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def fmt(value: Any, kind: str = "num") -> str:
    """A table cell: tau to 3 places, p in 2 significant digits, ratios as percentages, '—' when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return {"num": "{:.3f}", "p": "{:.2g}", "ratio": "{:.1%}"}[kind].format(value)


def fmt_ci(interval: list[float] | None, kind: str = "num") -> str:
    """A confidence interval as ``[low, high]`` in ``fmt``'s style; '—' when there is none."""
    return "—" if interval is None else f"[{fmt(interval[0], kind)}, {fmt(interval[1], kind)}]"
