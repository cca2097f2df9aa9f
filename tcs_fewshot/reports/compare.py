"""One table over several runs: summaries side by side, and paired differences across runs.

Runs are read from their directories (``manifest.json`` + ``records.sqlite``); a sweep
directory stands for the runs inside it. Methods of different runs are paired only on
tasks with equal checksums (see :func:`tcs_fewshot.stats.accuracy.paired`); asking for a
reference across runs evaluated on different tasks is refused rather than answered with
zero pairs.

Method labels: a method name that occurs in two runs *of the same setting* (dataset,
protocol, split, N, K, Q) is ambiguous and becomes ``method@label``, with the label of the
directory it was given as (a run, or a sweep for all its runs, so that one method of a
sweep keeps one label across its settings), or of the run when that does not tell them
apart. A name that occurs once per setting, e.g. ``ncm`` across a shots sweep, is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tcs_fewshot.errors import RunDirectoryError, TcsFewshotError
from tcs_fewshot.stats.class_ci import DESCRIPTION as CLASS_CI_DESCRIPTION
from tcs_fewshot.stats.class_ci import run_task_classes, with_class_ci
from tcs_fewshot.runs.manifest import read_manifest
from tcs_fewshot.runs.rundirs import expand_runs, unique_labels
from tcs_fewshot.stats.accuracy import (
    GROUP_COLUMNS,
    describe_ci,
    gap_line,
    group_columns,
    paired,
    summary,
    with_deployed,
)
from tcs_fewshot.runs.store import load_records


@dataclass
class Run:
    """One run directory, loaded.

    Attributes:
        path: The run directory.
        label: A short name distinct among the loaded runs (trailing path components).
        source: The label of the directory it was given as (the run itself, or its sweep).
        manifest: ``manifest.json`` as a dict.
        records: Its records, one row per (task, method), ``method`` relabelled (see module doc).
        methods: Method labels in report order.
        task_classes: ``{task checksum: class names}`` from its ``tasks.json.gz`` (for the CI over
            classes; empty when the run has no task file).
    """

    path: Path
    label: str
    source: str
    manifest: dict[str, Any]
    records: pd.DataFrame
    methods: list[str] = field(default_factory=list)
    task_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def tasks_checksum(self) -> str:
        """The manifest's checksum of the task set (what pairing across runs requires equal)."""
        return str(self.manifest.get("tasks_checksum") or "")


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Load the runs of run and sweep directories, with distinct method labels.

    Raises:
        RunDirectoryError: a path is neither a run nor a sweep directory, or a run is damaged.
    """
    expanded = expand_runs(paths)
    run_paths = [run for run, _ in expanded]
    run_labels = unique_labels(run_paths, [1 if run == given else 2 for run, given in expanded])
    sources = list(dict.fromkeys(given for _, given in expanded))
    source_label = dict(zip(sources, unique_labels(sources)))
    runs = []
    for (path, given), label in zip(expanded, run_labels):
        manifest, records = read_manifest(path), load_records(path)
        if not isinstance(manifest, dict):
            raise RunDirectoryError(f"'{path / 'manifest.json'}' is not a tcs-fewshot run manifest")
        if records.empty:
            raise RunDirectoryError(f"run '{path}' holds no records yet; run it first (re-running resumes)")
        present = pd.unique(records["method"]).tolist()
        methods = [m for m in manifest.get("methods", []) if m in present] + [
            m for m in present if m not in manifest.get("methods", [])]
        runs.append(Run(path, label, source_label[given], manifest, records, methods, run_task_classes(path)))
    _disambiguate(runs)
    return runs


def _settings(run: Run) -> set[tuple]:
    columns = [c for c in GROUP_COLUMNS if c in run.records.columns]
    return set(run.records[columns].astype(str).itertuples(index=False, name=None))


def _disambiguate(runs: list[Run]) -> None:
    """Relabel method names that two runs share in one setting (see the module docstring)."""
    settings = [_settings(run) for run in runs]
    names = list(dict.fromkeys(m for run in runs for m in run.methods))
    for name in names:
        having = [i for i, run in enumerate(runs) if name in run.methods]
        clashes = [(i, j) for k, i in enumerate(having) for j in having[k + 1:] if settings[i] & settings[j]]
        if not clashes:
            continue
        by_source = all(runs[i].source != runs[j].source for i, j in clashes)
        for i in having:
            run = runs[i]
            label = f"{name}@{run.source if by_source else run.label}"
            run.methods = [label if m == name else m for m in run.methods]
            run.records = run.records.assign(method=run.records["method"].replace({name: label}))


def method_labels(runs: Sequence[Run]) -> list[str]:
    """Every method label, in run then report order."""
    return list(dict.fromkeys(m for run in runs for m in run.methods))


def _resolve_reference(runs: Sequence[Run], reference: str) -> str:
    labels = method_labels(runs)
    if reference in labels:
        return reference
    relabelled = [m for m in labels if m.split("@", 1)[0] == reference]
    if relabelled:
        raise TcsFewshotError(f"reference '{reference}' is in several runs; choose one of: {', '.join(relabelled)}")
    raise TcsFewshotError(f"reference method '{reference}' is not in the runs; choose one of: {', '.join(labels)}")


def _check_same_tasks(runs: Sequence[Run], reference: str) -> None:
    """Refuse a reference whose run shares a setting with a run evaluated on other tasks."""
    settings = [_settings(run) for run in runs]
    for i, run in enumerate(runs):
        if reference not in run.methods:
            continue
        for j, other in enumerate(runs):
            if j != i and settings[i] & settings[j] and other.tasks_checksum != run.tasks_checksum:
                raise TcsFewshotError(
                    f"runs '{run.label}' and '{other.label}' were evaluated on different tasks (task checksums "
                    f"{run.tasks_checksum[:12]} and {other.tasks_checksum[:12]}), so they cannot be paired; "
                    "evaluate both on the same tasks with --tasks-file (written by 'tcs-fewshot tasks')"
                )


def unpaired_runs(runs: Sequence[Run]) -> list[str]:
    """One note per pair of runs that share a setting but not their tasks (never paired)."""
    settings = [_settings(run) for run in runs]
    return [
        f"runs '{a.label}' and '{b.label}' were evaluated on different tasks, so their methods are not paired; "
        "use --tasks-file to evaluate on the same tasks"
        for i, a in enumerate(runs) for j, b in enumerate(runs)
        if i < j and settings[i] & settings[j] and a.tasks_checksum != b.tasks_checksum
    ]


def compare_loaded(runs: Sequence[Run], reference: str | None = None,
                   ci: str = "normal") -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`compare_runs` on runs already loaded by :func:`load_runs`."""
    records = pd.concat([run.records.assign(run=run.label) for run in runs], ignore_index=True)
    keys = group_columns(records)
    order = method_labels(runs)
    parts = []
    for run in runs:
        settings = run.manifest.get("method_settings") or (run.manifest.get("config") or {}).get("methods_settings") or {}
        table = with_deployed(summary(run.records, by=keys, ci=ci, methods=run.methods), settings)
        table = with_class_ci(table, run.records, run.task_classes)
        table.insert(len(keys), "run", run.label)
        parts.append(table)
    summary_table = pd.concat(parts, ignore_index=True)
    summary_table = summary_table.sort_values(keys, kind="stable").reset_index(drop=True) if keys else summary_table
    summary_table.attrs["ci"] = describe_ci(ci)
    if summary_table["class_ci95"].notna().any():
        summary_table.attrs["class_ci"] = CLASS_CI_DESCRIPTION
    if reference is not None:
        reference = _resolve_reference(runs, reference)
        _check_same_tasks(runs, reference)
    paired_table = paired(records, reference=reference, by=keys, ci=ci, methods=order)
    if keys and len(paired_table):
        paired_table = paired_table.sort_values(keys, kind="stable").reset_index(drop=True)
        paired_table.attrs["ci"] = describe_ci(ci)
    task_classes = {checksum: classes for run in runs for checksum, classes in run.task_classes.items()}
    paired_table = with_class_ci(paired_table, records, task_classes, kind="paired")
    paired_table.attrs["unpaired"] = [] if reference is not None else unpaired_runs(runs)
    paired_table.attrs["gap_closed"] = gap_lines(runs, keys)
    return summary_table, paired_table


def gap_lines(runs: Sequence[Run], keys: Sequence[str]) -> list[str]:
    """One :func:`~tcs_fewshot.stats.accuracy.gap_line` per run and setting that ran tcs, student-ncm and ncm."""
    lines = []
    for run in runs:
        groups = run.records.groupby(list(keys), dropna=False, sort=False) if keys else [((), run.records)]
        for values, records in groups:
            line = gap_line(records.drop(columns=[k for k in keys if k in records]))
            if line is not None:
                where = ", ".join(f"{k} {v}" for k, v in zip(keys, values if isinstance(values, tuple) else (values,)))
                lines.append(f"{run.label}" + (f" ({where})" if where else "") + f": {line}")
    return lines


def compare_runs(run_dirs: Iterable[str | os.PathLike], reference: str | None = None,
                 ci: str = "normal") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summaries and paired differences over several run (or sweep) directories.

    Args:
        run_dirs: Run directories, or sweep directories whose subdirectories are runs.
        reference: Method label the others are compared with, per setting (default: every
            pair of methods that ran on the same tasks).
        ci: ``normal`` or ``t`` (see :mod:`tcs_fewshot.stats.accuracy`).

    Returns:
        ``(summary, paired)``: the :func:`~tcs_fewshot.stats.accuracy.summary` columns plus
        ``run`` (the run's label), one row per setting, run and method; and the
        :func:`~tcs_fewshot.stats.accuracy.paired` columns (accuracy in percent, differences
        in points). ``paired.attrs["unpaired"]`` lists runs that share a setting but not tasks.

    Raises:
        TcsFewshotError: ``reference`` is unknown or ambiguous, or shares a setting with a
            run evaluated on other tasks; a path is not a run or sweep directory.
    """
    return compare_loaded(load_runs(run_dirs), reference, ci)

