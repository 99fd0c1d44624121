"""Watching a study from its driver: one bar over trials on a terminal, else one log line per finished trial.

Both show the running best by the task's selection metric, in the direction its record declares, and an
estimate of the time left from the pace of the last trials finished in this run (whatever their order or
concurrency; recent ones only, so the estimate follows a machine whose load changes). A resumed study says so.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from datetime import timedelta
from typing import Callable, TextIO

from tqdm.auto import tqdm

from hfprune.records.record import TrialRecord


RECENT = 10  # trials whose pace the time left is estimated from


class TrialProgress:
    """``mode``: ``"bar"`` (tqdm), ``"lines"`` (one line per trial on ``stream``) or None (silent)."""

    def __init__(self, total: int, recorded: list[dict], selection_metric: Callable[[TrialRecord], str],
                 mode: str | None, stream: TextIO | None = None, shown: str = "pruned_train_loss"):
        self.total, self.done, self.mode, self.shown = total, len(recorded), mode, shown
        self.selection_metric, self.stream = selection_metric, stream or sys.stderr
        self.best: TrialRecord | None = None
        for record in recorded:
            self._consider(TrialRecord.from_json(record))
        self.started, self.finished_here = time.monotonic(), 0
        self.recent: deque[float] = deque([self.started], maxlen=RECENT + 1)  # when the last trials finished
        if mode is not None and self.done:
            print(f"resuming: {self.done} of {total} trials already recorded; running the other {total - self.done}",
                  file=self.stream, flush=True)
        self.bar = tqdm(total=total, initial=self.done, desc="trials", file=self.stream) if mode == "bar" else None
        if self.bar is not None and self.best is not None:
            self.bar.set_postfix_str(self._best_text())

    def _consider(self, record: TrialRecord) -> None:
        metric = self.selection_metric(record)
        value = record.metrics.get(metric)
        if value is None:
            return
        best = self.best
        if best is None or self.selection_metric(best) != metric or record.is_better_than(metric, best.metrics[metric]):
            self.best = record

    def _best_text(self) -> str:
        if self.best is None:
            return "no best yet"
        metric = self.selection_metric(self.best)
        return f"best {metric} {self.best.metrics[metric]:.4f} ({self.best.trial_id})"

    def eta(self) -> timedelta | None:
        """Time left at the pace of this run's last :data:`RECENT` trials (None before its first trial)."""
        if not self.finished_here:
            return None
        pace = (self.recent[-1] - self.recent[0]) / (len(self.recent) - 1)
        return timedelta(seconds=round(pace * (self.total - self.done)))

    def finished(self, record: TrialRecord) -> None:
        """Count one finished trial and show it."""
        self.done += 1
        self.finished_here += 1
        self.recent.append(time.monotonic())
        self._consider(record)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self._best_text())
        elif self.mode == "lines":
            metric = self.selection_metric(record)
            seconds = sum(record.timings.values())
            print(f"trial {self.done}/{self.total} {record.trial_id}: {self.shown} "
                  f"{_number(record.metrics.get(self.shown))}, {metric} {_number(record.metrics.get(metric))} "
                  f"in {seconds:.1f} s; {self._best_text()}; ETA {self.eta()}", file=self.stream, flush=True)

    def replan(self, total: int) -> None:
        """The study now has ``total`` trials (a stage planned from earlier results)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _number(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "n/a" if value is None else f"{value:.4f}"
