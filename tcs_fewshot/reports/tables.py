"""Tables from records: formatted for reading (terminal, markdown, LaTeX) or raw (CSV)."""

from __future__ import annotations

import re

import pandas as pd
from rich.table import Table

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.run_tables import FORMATS, ci_footnote, readable_paired, readable_summary, to_latex, to_markdown


def without_constant_settings(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Drop setting columns that hold one value (for narrow terminals); return them as text."""
    from tcs_fewshot.stats.accuracy import GROUP_COLUMNS

    constant = [c for c in GROUP_COLUMNS if c in table.columns and table[c].nunique(dropna=False) <= 1]
    described = ", ".join(f"{c} {table[c].iloc[0]}" for c in constant if len(table))
    narrow = table.drop(columns=constant)
    narrow.attrs = dict(table.attrs)
    return narrow, described


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
    from tcs_fewshot.stats.accuracy import GROUP_COLUMNS

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
        summary, paired: Tables of :func:`tcs_fewshot.reports.compare.compare_runs`.
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
