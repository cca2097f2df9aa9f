"""A CI that also accounts for which classes the benchmark's split happened to hold.

The CI of :mod:`tcs_fewshot.stats.accuracy` is over tasks: it answers "how much would the
mean move with other tasks on these classes?". With few test classes (emoji's test split has 9,
so 600 five-way tasks share at most 126 class sets) the larger uncertainty is which classes the
split holds. This module gives a **two-level** CI for the mean of per-task accuracies (or of
paired differences), treating the split's C classes as a sample from a population of classes and
the tasks as a sample of class subsets of them:

    var(mean) = sum_c w_c^2 * sigma_class^2  +  s^2 / T

- ``s^2 / T`` is the task level: the sample variance of the T per-task values over T, exactly the
  task CI's variance.
- The class level is fitted with additive class effects: per task ``y_t = sum_c x_tc a_c + e_t``,
  ``x_tc = 1/N`` for the task's N classes (least squares, T x C). ``sigma_class^2`` is the sample
  variance of the fitted ``a_c`` minus the part the fit's own noise adds
  (``s_e^2 * trace(H (X'X)^-1 H) / (C - 1)``, H the centring matrix, ``s_e^2`` the residual variance
  with T - C degrees of freedom), floored at 0. ``w_c`` is class c's weight in the mean
  (tasks holding c / (N T)), about 1/C.
- The quantile is Student's t with Satterthwaite's degrees of freedom (C - 1 for the class part,
  T - 1 for the task part), so a split of 9 classes gets a quantile near t(8) = 2.31 when the class
  part dominates, and near 1.96 when it does not.

Why this and not a bootstrap over classes: ``benchmarks/class_ci_coverage.py`` simulated benchmarks
with known truth (200 per row; 9 and 20 classes; four class populations, from large class differences
with confusable classes to task noise alone) and compared it with two class bootstraps (product
weights of the class counts on the stored tasks, and redrawing tasks in proportion to those weights;
percentile intervals). Only the tasks whose N classes were all drawn, about (1 - 1/e)^N (12% for
N = 5), survive a class resample, so the bootstraps amplify task noise: they covered 95-100% but
with intervals up to 4x as wide as the two-level ones when class differences are small. The
two-level CI covered 90-99% in every row (``benchmarks/results/class_ci_coverage.md``), while the CI
over tasks covered 12-37% wherever classes differ. It is deterministic (no resampling, no seed) and
costs one least-squares fit of T x C per task set, shared by every method.

It needs more classes than ways and tasks that vary in their classes (not pFSL, where every task
holds every class), and more tasks than classes; otherwise the CI is NaN and ``reason`` says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as scipy_stats
from threadpoolctl import threadpool_limits

METHOD = "two-level"
HEADER = f"95% CI (classes, {METHOD})"
DESCRIPTION = (f"{HEADER}: var(mean) = variance of additive class effects (least squares, noise-corrected) x sum "
               "of squared class weights + task variance / n, Student t with Satterthwaite df")


def two_level_ci(values: np.ndarray, task_classes: Sequence[Sequence[str]], confidence: float = 0.95) -> dict:
    """The two-level CI of ``values.mean()`` (see the module docstring).

    Args:
        values: ``(T,)`` per-task values (accuracy in percent, or paired differences in points).
        task_classes: The T tasks' class names, in the order of ``values``.
        confidence: Two-sided level.

    Returns:
        dict: ``mean``, ``half`` (half-width, same units as ``values``), ``low``, ``high``, ``df``,
        ``class_variance`` and ``task_variance`` (the two terms of var(mean)), ``n_classes`` and
        ``reason`` (why the CI is NaN, else ``None``).
    """
    values = np.asarray(values, dtype=float)
    n_tasks = len(values)
    if n_tasks != len(task_classes):
        raise ValueError(f"{n_tasks} values but {len(task_classes)} tasks")
    fit = _fit(tuple(tuple(classes) for classes in task_classes))
    result = dict(mean=float(values.mean()) if n_tasks else np.nan, half=np.nan, low=np.nan, high=np.nan,
                  df=np.nan, class_variance=np.nan, task_variance=np.nan, n_classes=fit.n_classes, reason=fit.reason)
    if fit.reason is not None:
        return result
    n_classes = fit.n_classes
    effects = fit.solver @ values
    residual = values - fit.design @ effects
    noise = residual @ residual / (n_tasks - n_classes)
    centred = effects - effects.mean()
    spread = (centred @ centred - noise * fit.noise_trace) / (n_classes - 1)
    class_variance = float(fit.squared_weights * max(spread, 0.0))
    task_variance = float(values.var(ddof=1) / n_tasks)
    variance = class_variance + task_variance
    if variance <= 0:
        df = float(n_tasks - 1)
    else:
        df = variance**2 / (class_variance**2 / (n_classes - 1) + task_variance**2 / (n_tasks - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(variance))
    result.update(half=half, low=result["mean"] - half, high=result["mean"] + half, df=float(df),
                  class_variance=class_variance, task_variance=task_variance)
    return result


@dataclass(frozen=True)
class _Fit:
    """What the least-squares fit of one task set needs, whatever the values (shared by every method)."""

    n_classes: int
    reason: str | None
    design: np.ndarray | None = None  # (T, C): 1/N for the task's classes
    solver: np.ndarray | None = None  # (C, T): (X'X)^-1 X', values -> class effects
    noise_trace: float = np.nan  # trace(H (X'X)^-1 H)
    squared_weights: float = np.nan  # sum_c w_c^2


@lru_cache(maxsize=16)
def _fit(task_classes: tuple[tuple[str, ...], ...]) -> _Fit:
    names = sorted({name for classes in task_classes for name in classes})
    n_tasks, n_classes = len(task_classes), len(names)
    code = {name: j for j, name in enumerate(names)}
    design = np.zeros((n_tasks, n_classes))
    for t, classes in enumerate(task_classes):
        design[t, [code[name] for name in classes]] = 1.0 / len(classes)
    # Rank and inverse from the C x C Gram matrix: an SVD of the T x C design is needlessly slow.
    with threadpool_limits(1):  # small matrices; threads only contend on shared cores
        eigenvalues, eigenvectors = np.linalg.eigh(design.T @ design)
    rank = int((eigenvalues > eigenvalues.max(initial=0.0) * max(n_classes, 1) * 1e-12).sum())
    if rank < n_classes or n_classes < 2:
        return _Fit(n_classes, "every task holds the same classes" if rank <= 1
                    else f"the tasks' class sets do not separate the {n_classes} classes")
    if n_tasks <= n_classes + 1:
        return _Fit(n_classes, f"needs more tasks than classes ({n_tasks} tasks, {n_classes} classes)")
    inverse = (eigenvectors / eigenvalues) @ eigenvectors.T
    centring = np.eye(n_classes) - 1.0 / n_classes
    weights = design.sum(axis=0) / n_tasks
    return _Fit(n_classes, None, design, inverse @ design.T, float(np.trace(centring @ inverse @ centring)),
                float((weights**2).sum()))


def classes_by_checksum(task_set) -> dict[str, tuple[str, ...]]:
    """``{task checksum: its classes}`` of a :class:`~tcs_fewshot.data.tasks.TaskSet` (records pair on checksums)."""
    return {task.checksum: tuple(task.classes) for task in task_set.tasks}


def run_task_classes(run_dir) -> dict[str, tuple[str, ...]]:
    """:func:`classes_by_checksum` of a run directory's ``tasks.json.gz``; empty when it has none.

    Runs made by :func:`~tcs_fewshot.runs.evaluator.evaluate` on tasks that are not a
    ``TaskSet`` (learn2learn, easyfsl) store no task file: their class CI is then NaN.
    """
    from pathlib import Path

    from tcs_fewshot.data.taskfile import load_tasks
    from tcs_fewshot.errors import TaskFileError

    path = Path(run_dir) / "tasks.json.gz"
    if not path.is_file():
        return {}
    try:
        return classes_by_checksum(load_tasks(path))
    except TaskFileError:
        return {}  # a damaged task file: no class CI (never a guess); the records' own checks still apply


def _ci_of(frame, classes: Mapping[str, Sequence[str]], column: str, confidence: float) -> tuple[float, float]:
    """(half-width, df) over ``frame``'s tasks, NaN when a task's classes are unknown or the CI is undefined."""
    known = frame["task_checksum"].map(lambda checksum: checksum in classes)
    if len(frame) == 0 or not known.all():
        return np.nan, np.nan
    found = two_level_ci(frame[column].to_numpy(dtype=float), [classes[c] for c in frame["task_checksum"]],
                         confidence)
    return found["half"], found["df"]


def _text(value) -> str:
    """A setting value as text: 5 and 5.0 alike (a concatenation may turn ints into floats), NaN and None alike."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "nan"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def with_class_ci(table, records, classes: Mapping[str, Sequence[str]], kind: str = "summary",
                  confidence: float = 0.95):
    """``table`` plus ``class_ci95`` (half-width) and ``class_ci_df``, one value per row.

    Args:
        table: A :func:`~tcs_fewshot.stats.accuracy.summary` (``kind="summary"``) or
            :func:`~tcs_fewshot.stats.accuracy.paired` (``kind="paired"``) table of ``records``.
        records: The records it was computed from (``task_checksum``, ``method``, ``accuracy``, ``failure``).
        classes: ``{task checksum: class names}`` of every task (:func:`classes_by_checksum`); rows
            with a task missing from it get NaN.
    """
    from tcs_fewshot.stats.accuracy import GROUP_COLUMNS

    keys = [c for c in GROUP_COLUMNS if c in table.columns]
    succeeded = records[records["failure"].isna()]
    succeeded = succeeded.assign(accuracy=succeeded["accuracy"].astype(float) * 100.0)
    columns = ["task_index", "task_checksum", "accuracy"]
    # Keys as text, so that a missing setting value (NaN) finds its group too.
    groups = {tuple(map(_text, key if isinstance(key, tuple) else (key,))): frame[columns]
              for key, frame in succeeded.groupby([*keys, "method"], dropna=False, sort=False)}
    empty = succeeded[columns].iloc[:0]
    halves, dfs = [], []
    for _, row in table.iterrows():
        setting = tuple(_text(row[key]) for key in keys)
        frame = groups.get((*setting, _text(row["method"])), empty)
        if kind == "summary":
            half, df = _ci_of(frame, classes, "accuracy", confidence)
        else:
            other = groups.get((*setting, _text(row["reference"])), empty)
            both = frame.merge(other, on=["task_index", "task_checksum"], suffixes=("", "_reference"))
            both = both.assign(difference=both["accuracy"] - both["accuracy_reference"])
            half, df = _ci_of(both, classes, "difference", confidence)
        halves.append(half)
        dfs.append(df)
    extended = table.assign(class_ci95=halves, class_ci_df=dfs)
    extended.attrs = dict(table.attrs)
    if np.isfinite(np.asarray(halves, dtype=float)).any():
        extended.attrs["class_ci"] = DESCRIPTION
    return extended

