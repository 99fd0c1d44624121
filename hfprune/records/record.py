"""Typed trial records: what one trial pruned and measured, each metric with its direction.

A :class:`TrialRecord` is one line of a study's ``trials.jsonl``. Its metrics are flat names —
``<stage>_<split>_<metric>`` such as ``pruned_train_loss``, ``short_test_acc``, ``final_test_gqa_score``, and
criteria such as ``pruned_l1`` — and each declares whether higher is better (``higher_is_better`` in the
JSON); counts (``*_tokens``) declare no direction and are never ranked. The reporter, the best-model export and
the model cards read the directions from the record, never from words in the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

DIRECTIONS = "higher_is_better"  # the JSON key holding {metric: bool}
IDENTITY = ("trial_id", "setting", "mask_id", "repeat", "seed")


@dataclass
class TrialRecord:
    """One finished (or, while it runs, partial) trial."""

    trial_id: str
    setting: str
    mask_id: str
    repeat: int
    seed: int
    candidate: dict[str, Any] = field(default_factory=dict)  # what was pruned: the mask, or the method and sparsity
    metrics: dict[str, Any] = field(default_factory=dict)  # flat metric name -> value (None when not finite)
    directions: dict[str, bool] = field(default_factory=dict)  # metric -> higher is better (absent: a count)
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # everything else: retrain steps, mask violations, ...

    def add(self, name: str, value: Any, higher_is_better: bool | None) -> None:
        """Record metric ``name``; ``higher_is_better`` None marks a count (never ranked)."""
        self.metrics[name] = value
        if higher_is_better is not None:
            self.directions[name] = higher_is_better

    def add_all(self, prefix: str, values: Mapping[str, Any], direction_of) -> None:
        """Record ``{prefix}_{key}`` for every value, each with ``direction_of(key)``."""
        for key, value in values.items():
            self.add(f"{prefix}_{key}", value, direction_of(key))

    def higher_is_better(self, metric: str) -> bool:
        if metric not in self.directions:
            raise KeyError(f"trial {self.trial_id} records no direction for '{metric}'")
        return self.directions[metric]

    def is_better_than(self, metric: str, value: float) -> bool:
        """Whether this record's ``metric`` is strictly better than ``value``."""
        mine = self.metrics[metric]
        return mine > value if self.higher_is_better(metric) else mine < value

    def to_json(self) -> dict[str, Any]:
        """The flat JSON line of ``trials.jsonl`` (identity, candidate facts, metrics, directions, timings, facts)."""
        return {"trial_id": self.trial_id, "setting": self.setting, "mask_id": self.mask_id, "repeat": self.repeat,
                "seed": self.seed, **self.candidate, **self.metrics, **self.facts, "timings": dict(self.timings),
                DIRECTIONS: dict(self.directions)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], candidate_keys: tuple[str, ...] = ()) -> "TrialRecord":
        """A record read back from its JSON line; keys with a direction are metrics, ``candidate_keys`` the
        candidate's facts, the rest facts."""
        directions = dict(data.get(DIRECTIONS) or {})
        record = cls(**{key: data[key] for key in IDENTITY}, directions=directions,
                     timings=dict(data.get("timings") or {}))
        for key, value in data.items():
            if key in IDENTITY or key in ("timings", DIRECTIONS):
                continue
            target = record.metrics if key in directions else record.candidate if key in candidate_keys \
                else record.facts
            target[key] = value
        return record


def add_connectivity(record: TrialRecord, connectivity) -> None:
    """Record a trained model's nonzero weights, those on an input→output path (``effective_nonzeros``) and the
    rest (``disconnected_weights``), from a :class:`~hfprune.pruning.connectivity.Connectivity`."""
    record.add("nonzeros", connectivity.nonzeros, higher_is_better=None)
    record.add("effective_nonzeros", connectivity.effective_nonzeros, higher_is_better=None)
    record.add("disconnected_weights", connectivity.nonzeros - connectivity.effective_nonzeros, higher_is_better=None)
