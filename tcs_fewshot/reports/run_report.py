"""What ``tcs-fewshot report`` and ``compare`` show: the tables of runs, with their warnings and notes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.reports.compare import compare_loaded, load_runs
from tcs_fewshot.reports.leakage import distinct_warnings


@dataclass
class RunReport:
    """The tables of one or more runs.

    Attributes:
        summary: One row per (setting, method): accuracy ± CI, n, time and memory per task.
        paired: Paired differences of methods evaluated on the same tasks.
        warnings: One line each: pretraining overlap with the benchmark's classes (leakage).
        notes: One line each: pairs not made (different tasks) and a run's recorded fallbacks.
    """

    summary: pd.DataFrame
    paired: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_report(run_dirs: Sequence[str | os.PathLike], reference: str | None = None, ci: str = "normal") -> RunReport:
    """The tables of ``run_dirs`` (run or sweep directories), paired against ``reference`` (default:
    every pair on the same tasks), with ``ci`` intervals (``normal`` or ``t``)."""
    runs = load_runs(run_dirs)
    summary, paired = compare_loaded(runs, reference, ci)
    warnings = [text + (f" (runs: {', '.join(labels)})" if len(runs) > 1 else "")
                for text, labels in distinct_warnings((run.label, run.manifest) for run in runs)]
    notes = list(paired.attrs.get("unpaired", []))
    notes += [f"fallback{f' ({run.label})' if len(runs) > 1 else ''}: {text}"
              for run in runs for text in run.manifest.get("config", {}).get("fallbacks", [])]
    return RunReport(summary, paired, warnings, notes)


def write_html(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
               reference: str | None = None, ci: str = "normal") -> Path:
    """One self-contained HTML report of ``run_dirs`` at ``out`` (default ``RUN_DIR/report.html`` for one run)."""
    from tcs_fewshot.reports.html import write_html_report

    if out is None and len(run_dirs) > 1:
        raise TcsFewshotError("--format html over several run directories needs --out FILE.html")
    return write_html_report(run_dirs, out or Path(run_dirs[0]) / "report.html", reference=reference, ci=ci)
