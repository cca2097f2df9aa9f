"""What a run writes beside its records: ``summary.md``, ``summary.csv`` and ``paired.md``.

The readable forms of :func:`tcs_fewshot.stats.accuracy.summary` and ``paired`` tables
(``accuracy ± ci95`` as text, costs rounded) and their md/csv/LaTeX writers; the reports over
several runs (:mod:`tcs_fewshot.reports.tables`) format with the same functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.stats.class_ci import HEADER as CLASS_CI_HEADER

FORMATS = ("md", "csv", "latex")
DEPLOYED_COLUMNS = ("network", "flops_per_image", "parameters")
CLASS_CI_COLUMNS = ("class_ci95", "class_ci_df")


def _class_ci_cells(table: pd.DataFrame) -> list[str] | None:
    """``± h`` per row of the CI over classes (blank where undefined); ``None`` when no row has one."""
    if "class_ci95" not in table or not table["class_ci95"].notna().any():
        return None
    return ["" if pd.isna(half) else f"± {half:.2f}" for half in table["class_ci95"]]


def readable_summary(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`summary` table with ``accuracy ± ci95`` as text and rounded costs."""
    settings = [c for c in table.columns if c not in {
        "method", "n", "failures", "accuracy", "ci95", "std", "fit_seconds", "predict_seconds", "peak_memory_mb",
        *DEPLOYED_COLUMNS, *CLASS_CI_COLUMNS, "teacher_forward_passes"}]
    readable = table[settings + ["method"]].copy()
    readable["accuracy (%)"] = [f"{a:.2f} ± {c:.2f}" for a, c in zip(table["accuracy"], table["ci95"])]
    if (cells := _class_ci_cells(table)) is not None:
        readable[CLASS_CI_HEADER] = cells
    readable["n"] = table["n"]
    readable["failures"] = table["failures"]
    readable["fit (ms)"] = (table["fit_seconds"] * 1000).round(2)
    readable["predict (ms)"] = (table["predict_seconds"] * 1000).round(2)
    readable["peak memory (MB)"] = table["peak_memory_mb"].round(2)
    if "teacher_forward_passes" in table and table["teacher_forward_passes"].notna().any():
        readable["teacher passes"] = table["teacher_forward_passes"].round(1)
    # from stats.with_deployed: the deployed model's inference cost (absent when nothing was measured)
    if "network" in table and pd.to_numeric(table["flops_per_image"]).notna().any():
        readable["network"] = table["network"]
        readable["MFLOPs"] = (pd.to_numeric(table["flops_per_image"]) / 1e6).round(1)
        readable["params (M)"] = (pd.to_numeric(table["parameters"]) / 1e6).round(3)
    readable.attrs = dict(table.attrs)
    return readable


def readable_paired(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`paired` table with ``difference ± ci95`` as text."""
    settings = [c for c in table.columns if c not in {
        "method", "reference", "n_pairs", "difference", "ci95", "ci_low", "ci_high", "wins", "losses",
        *CLASS_CI_COLUMNS}]
    readable = table[settings + ["method", "reference"]].copy()
    readable["difference (points)"] = [f"{d:+.2f} ± {c:.2f}" for d, c in zip(table["difference"], table["ci95"])]
    if (cells := _class_ci_cells(table)) is not None:
        readable[CLASS_CI_HEADER] = cells
    readable["n pairs"] = table["n_pairs"]
    readable["wins/losses"] = [f"{w}/{l}" for w, l in zip(table["wins"], table["losses"])]
    readable.attrs = dict(table.attrs)
    return readable


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table; footnote from ``table.attrs['ci']`` when present."""
    text = table.to_markdown(index=False)
    if footnote := ci_footnote(table):
        text += f"\n\n{footnote}"
    return text + "\n"


def ci_footnote(table: pd.DataFrame) -> str:
    """How the table's CIs were made: ``attrs['ci']`` (over tasks) and, when shown, ``attrs['class_ci']``."""
    parts = [table.attrs["ci"] + (" (over tasks)" if CLASS_CI_HEADER in table else "")] if table.attrs.get("ci") else []
    if CLASS_CI_HEADER in table and table.attrs.get("class_ci"):
        parts.append(table.attrs["class_ci"])
    return "".join(f"{part}. " for part in parts).strip()


def to_latex(table: pd.DataFrame) -> str:
    return table.to_latex(index=False, escape=True).replace("±", r"$\pm$")


def write_table(table: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``table`` as md, csv or latex (from ``fmt`` or the file suffix)."""
    path = Path(path)
    fmt = fmt or {".md": "md", ".csv": "csv", ".tex": "latex"}.get(path.suffix)
    if fmt not in FORMATS:
        raise TcsFewshotError(f"unknown report format '{fmt}'; use one of: {', '.join(FORMATS)}")
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        path.write_text(to_markdown(table) if fmt == "md" else to_latex(table), encoding="utf-8")
    return path



def write_run_tables(result: Any) -> list[Path]:
    """Write ``summary.md``, ``summary.csv`` and ``paired.md`` into the result's run directory."""
    summary = write_table(readable_summary(result.summary), result.run_dir / "summary.md")
    if result.gap_lines:
        with summary.open("a") as handle:
            handle.write("\n" + "\n".join(f"- {line}" for line in result.gap_lines) + "\n")
    return [
        summary,
        write_table(result.summary, result.run_dir / "summary.csv"),
        write_table(readable_paired(result.paired), result.run_dir / "paired.md"),
    ]
