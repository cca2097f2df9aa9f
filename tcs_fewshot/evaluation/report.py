"""Tables from records: formatted for reading (terminal, markdown, LaTeX) or raw (CSV)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from rich.table import Table

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.evaluation.class_ci import HEADER as CLASS_CI_HEADER

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


def without_constant_settings(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Drop setting columns that hold one value (for narrow terminals); return them as text."""
    from tcs_fewshot.evaluation.stats import GROUP_COLUMNS

    constant = [c for c in GROUP_COLUMNS if c in table.columns and table[c].nunique(dropna=False) <= 1]
    described = ", ".join(f"{c} {table[c].iloc[0]}" for c in constant if len(table))
    narrow = table.drop(columns=constant)
    narrow.attrs = dict(table.attrs)
    return narrow, described


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


_NUMBER = re.compile(r"[-+]?[\d.,]+%?( ?± ?[\d.,]+%?)?|± [\d.,]+|nan|-")


def rich_table(table: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table of any (readable) DataFrame, for the terminal."""
    rich = Table(title=title, caption=ci_footnote(table) or None)
    cells = {column: ["" if pd.isna(value) else str(value) for value in table[column]] for column in table.columns}
    for column in table.columns:
        # Numbers ("45.77 ± 0.60") never wrap or shrink; words columns give way instead.
        numeric = all(_NUMBER.fullmatch(cell) for cell in cells[column] if cell)
        rich.add_column(str(column), justify="right" if numeric else "left", no_wrap=numeric,
                        overflow="ellipsis" if numeric else "fold",
                        min_width=max(map(len, cells[column]), default=0) if numeric else None)
    for row in zip(*cells.values()):
        rich.add_row(*row)
    return rich


def without_single_run(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the ``run`` column of a comparison table when the settings tell the runs apart.

    So a lone run's tables stay as they were, and a sweep's rows are named by their shots.
    """
    from tcs_fewshot.evaluation.stats import GROUP_COLUMNS

    settings = [c for c in GROUP_COLUMNS if c in table.columns]
    runs_per_setting = table.groupby(settings, dropna=False)["run"].nunique() if settings and "run" in table else None
    if "run" in table.columns and (table["run"].nunique() <= 1 or runs_per_setting.max() <= 1):
        narrow = table.drop(columns="run")
        narrow.attrs = dict(table.attrs)
        return narrow
    return table


def format_tables(summary: pd.DataFrame, paired: pd.DataFrame, fmt: str,
                  which: tuple[str, ...] = ("summary", "paired")) -> str:
    """Comparison tables as text: md or latex (readable, a heading each when several) or csv (raw, one table).

    Args:
        summary, paired: Tables of :func:`tcs_fewshot.evaluation.compare.compare_runs`.
        fmt: ``md``, ``csv`` or ``latex``.
        which: ``"summary"`` and/or ``"paired"``, in output order; csv takes the first.
    """
    if fmt not in FORMATS:
        raise TcsFewshotError(f"unknown report format '{fmt}'; use one of: {', '.join(FORMATS)}")
    raw = {"summary": without_single_run(summary), "paired": paired}
    if fmt == "csv":
        return raw[which[0]].to_csv(index=False)
    readable = {"summary": readable_summary(raw["summary"]), "paired": readable_paired(paired)}
    headings = {"summary": "Summary", "paired": "Paired differences"}
    parts = []
    for name in which:
        text = to_markdown(readable[name]) if fmt == "md" else to_latex(readable[name])
        if len(which) > 1:
            text = (f"## {headings[name]}\n\n" if fmt == "md" else f"% {headings[name]}\n") + text
        if name == "paired" and fmt == "md" and paired.attrs.get("gap_closed"):
            text += "\nGap closed:\n\n" + "".join(f"- {line}\n" for line in paired.attrs["gap_closed"])
        parts.append(text)
    return "\n".join(parts)


def terminal_report(summary: pd.DataFrame, paired: pd.DataFrame, warnings: list[str] = (),
                    notes: list[str] = (), which: tuple[str, ...] = ("summary", "paired")) -> list:
    """Rich renderables for the terminal: the summary, the paired differences (those in ``which``), then
    warnings and notes."""
    from rich.panel import Panel

    shown: list = []
    if "summary" in which:
        narrow, setting = without_constant_settings(readable_summary(without_single_run(summary)))
        shown.append(rich_table(narrow, title=setting or None))
    if "paired" in which and len(paired):
        narrow, setting = without_constant_settings(readable_paired(paired))
        shown.append(rich_table(narrow, title=f"paired differences: {setting}" if setting else "paired differences"))
    shown += [Panel(text, title="leakage", border_style="yellow") for text in warnings]
    shown += [f"note: {note}" for note in notes]
    shown += [f"gap closed: {line}" for line in paired.attrs.get("gap_closed", [])]
    return shown
