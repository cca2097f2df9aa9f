"""Report figures (matplotlib, Agg canvas; no pyplot state, no display needed).

Each function takes a table of :func:`tcs_fewshot.reports.compare.compare_runs` and
returns a :class:`matplotlib.figure.Figure` (or ``None`` when there is nothing to draw);
:func:`png_data_uri` turns one into an embeddable ``data:image/png;base64,...`` string.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tcs_fewshot.stats.accuracy import GROUP_COLUMNS

DPI = 110
WIDTH = 8.0  # inches; 880 px at DPI


def _new_figure(height: float) -> Figure:
    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def varying_settings(table: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Setting columns that take more than one value in ``table`` (besides ``exclude``)."""
    return [c for c in GROUP_COLUMNS if c in table.columns and c not in exclude and table[c].nunique(dropna=False) > 1]


def _setting_text(row: pd.Series, columns: list[str]) -> str:
    """``"5-shot, dataset cub"``: the values of ``columns`` in ``row``."""
    return ", ".join(f"{row[c]}-{c[:-1]}" if c in ("shots", "ways") else f"{c} {row[c]}" for c in columns)


def accuracy_vs_shots(summary: pd.DataFrame) -> Figure:
    """Mean accuracy (%) against shots K, error bars the 95% CI: one line per method (and other setting).

    Args:
        summary: ``compare_runs``'s summary (``shots``, ``method``, ``accuracy``, ``ci95``; with
            ``class_ci95``, the CI over classes is drawn too, as a wide pale bar behind).
    """
    figure = _new_figure(4.2)
    axes = figure.add_subplot()
    others = varying_settings(summary, exclude=("shots",))
    series = summary.groupby(["method", *others], sort=False, dropna=False)
    offsets = np.linspace(-0.03, 0.03, max(series.ngroups, 1))
    for offset, (key, rows) in zip(offsets, series):
        rows = rows.sort_values("shots")
        name = key[0] if isinstance(key, tuple) else key
        label = name + (f" ({_setting_text(rows.iloc[0], others)})" if others else "")
        # A small multiplicative offset keeps overlapping error bars apart on the log axis.
        x = rows["shots"].astype(float) * (1 + offset)
        drawn = axes.errorbar(x, rows["accuracy"], yerr=rows["ci95"], marker="o", capsize=4, linewidth=1.6,
                              label=label)
        if "class_ci95" in rows and rows["class_ci95"].notna().any():
            # The CI over classes, wider and pale behind the CI over tasks, in the line's colour.
            axes.errorbar(x, rows["accuracy"], yerr=rows["class_ci95"], fmt="none", capsize=7, linewidth=5,
                          alpha=0.25, color=drawn.lines[0].get_color())
    shots = sorted(summary["shots"].dropna().unique().tolist())
    axes.set_xscale("log")
    axes.set_xticks(shots, [str(int(s)) for s in shots])
    axes.minorticks_off()
    if len(shots) == 1:
        axes.set_xlim(shots[0] / 2, shots[0] * 2)
    axes.set_xlabel("shots per class (K)")
    axes.set_ylabel("accuracy (%), mean ± 95% CI")  # over tasks; the pale bars: over classes
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure


def _paired_label(row: pd.Series, columns: list[str]) -> str:
    label = f"{row['method']} − {row['reference']}"
    return label + (f"  [{_setting_text(row, columns)}]" if columns else "")


def forest_plot(paired: pd.DataFrame) -> Figure | None:
    """Paired differences (points) with their 95% CIs, one row per comparison; ``None`` if none.

    Rows whose CI excludes 0 are coloured (green above, red below); a dashed line marks 0. With
    ``class_ci95``, the CI over classes is a thin pale line under each row's CI over tasks.
    """
    if paired.empty:
        return None
    others = varying_settings(paired)
    figure = _new_figure(1.2 + 0.38 * len(paired))
    axes = figure.add_subplot()
    y = np.arange(len(paired))[::-1]
    colours = np.where(paired["ci_low"] > 0, "#1a7f37", np.where(paired["ci_high"] < 0, "#cf222e", "#57606a"))
    for position, (_, row), colour in zip(y, paired.iterrows(), colours):
        if pd.notna(row.get("class_ci95", np.nan)):
            # The CI over classes: a thin pale line under the CI over tasks.
            axes.errorbar(row["difference"], position, xerr=row["class_ci95"], fmt="none", color=colour,
                          alpha=0.35, capsize=2, linewidth=1)
        axes.errorbar(row["difference"], position, xerr=row["ci95"], fmt="s", color=colour, capsize=4, markersize=6)
    axes.axvline(0, color="black", linestyle="--", linewidth=1)
    axes.set_yticks(y, [_paired_label(row, others) for _, row in paired.iterrows()], fontsize=8)
    axes.set_xlabel("paired difference (accuracy points), mean ± 95% CI")
    axes.grid(axis="x", alpha=0.3)
    return figure


def cost_bars(summary: pd.DataFrame) -> Figure:
    """Mean time per task (ms: fit and predict, log axis) and peak memory (MB) per method and setting."""
    others = varying_settings(summary)
    labels = [row["method"] + (f" [{_setting_text(row, others)}]" if others else "") for _, row in summary.iterrows()]
    figure = _new_figure(1.4 + 0.42 * len(summary))
    time_axes, memory_axes = figure.subplots(1, 2, sharey=True)
    y = np.arange(len(summary))[::-1]
    height = 0.38
    fit = summary["fit_seconds"].to_numpy(dtype=float) * 1000
    predict = summary["predict_seconds"].to_numpy(dtype=float) * 1000
    time_axes.barh(y + height / 2, fit, height, label="fit", color="#0969da")
    time_axes.barh(y - height / 2, predict, height, label="predict", color="#8250df")
    time_axes.set_xscale("log")
    time_axes.set_xlim(right=float(np.nanmax(np.concatenate([fit, predict]), initial=1e-3)) * 3)
    time_axes.set_xlabel("time per task (ms, log scale)")
    time_axes.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    time_axes.set_yticks(y, labels, fontsize=8)
    memory = summary["peak_memory_mb"].to_numpy(dtype=float)
    bars = memory_axes.barh(y, np.nan_to_num(memory), 0.6, color="#bf8700")
    memory_axes.bar_label(bars, [f"{m:.2f}" for m in memory], padding=3, fontsize=8)
    memory_axes.set_xlabel("peak memory per task (MB, Python heap)")
    memory_axes.set_xlim(0, max(float(np.nanmax(memory, initial=0)) * 1.25, 0.01))
    for axes in (time_axes, memory_axes):
        axes.grid(axis="x", alpha=0.3)
    return figure


def accuracy_vs_flops(summary: pd.DataFrame) -> Figure | None:
    """Accuracy (%, 95% CI bars) against the deployed network's inference MFLOPs per image (log axis).

    One point per method and setting, from the ``flops_per_image`` column of
    :func:`tcs_fewshot.stats.accuracy.with_deployed`. Methods that run no network (0 FLOPs,
    pixel-ncm) sit at the axis' left edge, labelled "no network". ``None`` when nothing was measured.
    """
    if "flops_per_image" not in summary:
        return None
    flops = pd.to_numeric(summary["flops_per_image"]).to_numpy(dtype=float) / 1e6
    known = ~np.isnan(flops)
    if not known.any():
        return None
    positive = flops[known & (flops > 0)]
    floor = float(positive.min()) / 10 if len(positive) else 1e-3
    others = varying_settings(summary)
    figure = _new_figure(4.2)
    axes = figure.subplots()
    for (_, row), x in zip(summary.iterrows(), flops):
        if np.isnan(x):
            continue
        label = row["method"] + (f" [{_setting_text(row, others)}]" if others else "")
        shown = x if x > 0 else floor
        axes.errorbar(shown, row["accuracy"], yerr=row["ci95"], fmt="o", capsize=3, label=label)
        axes.annotate(label if x > 0 else f"{label} (no network)", (shown, row["accuracy"]), fontsize=7,
                      xytext=(4, 4), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("inference cost of the deployed network (MFLOPs per image, log scale)")
    axes.set_ylabel("accuracy (%)")
    axes.grid(alpha=0.3)
    return figure


def png_data_uri(figure: Figure) -> tuple[str, tuple[int, int]]:
    """The figure as a ``data:image/png;base64,...`` URI, and its size ``(width, height)`` in px."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = buffer.getvalue()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), (width, height)
