"""A rich progress bar that shows the live mean accuracy and 95% CI of every method."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tcs_fewshot.stats.accuracy import ci_half_width


class RunningMean:
    """Count, mean and 95% normal CI (as in :mod:`stats`) of a stream of accuracies in [0, 1]."""

    def __init__(self) -> None:
        self.count, self.total, self.total_squares, self.failures = 0, 0.0, 0.0, 0

    def add(self, accuracy: float | None) -> None:
        if accuracy is None or (isinstance(accuracy, float) and math.isnan(accuracy)):
            self.failures += 1
            return
        self.count += 1
        self.total += accuracy
        self.total_squares += accuracy * accuracy

    def text(self) -> str:
        if self.count == 0:
            return "-"
        mean = self.total / self.count
        if self.count < 2:
            return f"{100 * mean:.1f}"
        variance = max(self.total_squares - self.count * mean * mean, 0.0) / (self.count - 1)
        half = float(ci_half_width(math.sqrt(variance), self.count))
        failed = f" ({self.failures} failed)" if self.failures else ""
        return f"{100 * mean:.1f}±{100 * half:.1f}{failed}"


class RunProgress:
    """Context manager; ``advance(rows)`` after each task. Silent when ``enabled`` is False."""

    def __init__(self, methods: Sequence[str], total: int | None, enabled: bool,
                 console: Console | None = None) -> None:
        self.enabled = enabled
        self.means = {name: RunningMean() for name in methods}
        self.total = total
        self.progress: Progress | None = None
        self.console = console or Console()
        self.done = 0

    def __enter__(self) -> RunProgress:
        # Without a terminal (CI, ``> log``) a live bar is cut to the width and prints
        # "600/… 0:00…"; one plain line at the end says the same.
        if self.enabled and self.console.is_terminal:
            self.progress = Progress(
                TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.description}"), transient=False,
                console=self.console,
            )
            self.progress.start()
            self.bar = self.progress.add_task(self._description(), total=self.total)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.progress is not None:
            self.progress.stop()
        elif self.enabled:
            total = "?" if self.total is None else self.total
            self.console.print(f"tasks {self.done}/{total}  {self._description()}", soft_wrap=True,
                               markup=False, highlight=False)

    def _description(self) -> str:
        return "  ".join(f"{name} {mean.text()}" for name, mean in self.means.items())

    def _observe(self, rows: Iterable[Mapping]) -> None:
        for row in rows:
            if row["method"] in self.means:
                self.means[row["method"]].add(None if row.get("failure") else row["accuracy"])

    def add(self, stored: pd.DataFrame) -> None:
        """Count rows stored by an earlier session (a resume) without advancing the bar."""
        if self.enabled:
            self._observe(stored.to_dict("records"))

    def advance(self, rows: list[Mapping]) -> None:
        if not self.enabled:
            return
        self._observe(rows)
        self.done += 1
        if self.progress is not None:
            self.progress.update(self.bar, advance=1, description=self._description())
