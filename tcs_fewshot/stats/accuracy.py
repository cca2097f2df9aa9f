"""Statistics over records: mean accuracy with a 95% CI, and paired differences.

Accuracies are reported in percent. The CI half-width is ``q * s / sqrt(n)`` with the
sample standard deviation ``s`` (ddof=1) over tasks (or pFSL repeats) and ``q`` either
the normal quantile (``ci="normal"``, 1.96 at 95%: Meta-Dataset, CloserLook) or Student's
t quantile with n-1 degrees of freedom (``ci="t"``: RFS, LibFewShot). Failed rows are
excluded from means and counted in ``failures``.

Methods run on the same tasks, so differences are paired: per task, accuracy of A minus
accuracy of B, then mean and CI of those differences. This interval is much tighter
than comparing two unpaired intervals, because task difficulty cancels.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tcs_fewshot.errors import TcsFewshotError

GROUP_COLUMNS = ("dataset", "protocol", "split", "ways", "shots", "queries")
CI_METHODS = {
    "normal": "normal quantile ({q:.2f}) x s/sqrt(n), s with ddof=1",
    "t": "Student t quantile (n-1 dof) x s/sqrt(n), s with ddof=1",
}


def ci_half_width(std, n, confidence: float = 0.95, method: str = "normal") -> np.ndarray:
    """Half-width of the two-sided CI of a mean; ``std`` uses ddof=1. NaN where n < 2."""
    std = np.asarray(std, dtype=float)
    n = np.asarray(n, dtype=float)
    if method == "normal":
        quantile = NormalDist().inv_cdf(0.5 + confidence / 2)
    elif method == "t":
        quantile = scipy_stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
    else:
        raise TcsFewshotError(f"unknown CI method '{method}'; use 'normal' or 't'")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, quantile * std / np.sqrt(n), np.nan)


def describe_ci(method: str = "normal", confidence: float = 0.95) -> str:
    """One sentence naming how the CI was computed, for report footnotes."""
    if method not in CI_METHODS:
        raise TcsFewshotError(f"unknown CI method '{method}'; use 'normal' or 't'")
    quantile = NormalDist().inv_cdf(0.5 + confidence / 2)
    return f"{confidence:.0%} CI: " + CI_METHODS[method].format(q=quantile)


def group_columns(records: pd.DataFrame, by: Sequence[str] | None = None) -> list[str]:
    """``by``, or the setting columns that are present and not all empty."""
    if by is not None:
        return list(by)
    return [c for c in GROUP_COLUMNS if c in records.columns and records[c].notna().any()]


def _method_order(records: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = pd.unique(records["method"]).tolist()
    if methods is None:
        return present
    return [m for m in methods if m in present] + [m for m in present if m not in methods]


def summary(
    records: pd.DataFrame,
    by: Sequence[str] | None = None,
    ci: str = "normal",
    confidence: float = 0.95,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per setting and method.

    Columns: the setting columns, ``method``, ``n`` (successful tasks), ``failures``,
    ``accuracy`` and ``ci95`` and ``std`` (percent), ``fit_seconds``, ``predict_seconds``
    (mean per task), ``peak_memory_mb`` (mean per task), ``teacher_forward_passes`` (mean per task,
    when recorded). ``attrs["ci"]`` says how the CI was made.
    """
    keys = [*group_columns(records, by), "method"]
    frame = records.assign(accuracy=records["accuracy"].astype(float) * 100.0)
    table = frame.groupby(keys, sort=False, dropna=False).agg(
        n=("accuracy", "count"),
        failures=("failure", "count"),
        accuracy=("accuracy", "mean"),
        std=("accuracy", "std"),
        fit_seconds=("fit_seconds", "mean"),
        predict_seconds=("predict_seconds", "mean"),
        peak_memory_mb=("peak_memory_mb", "mean"),
        **({"teacher_forward_passes": ("teacher_forward_passes", "mean")} if "teacher_forward_passes" in frame else {}),
    )
    table.insert(3, "ci95", ci_half_width(table["std"], table["n"], confidence, ci))
    table = table.reset_index()
    order = {m: i for i, m in enumerate(_method_order(records, methods))}
    table = table.sort_values(keys[:-1] + ["method"], key=lambda s: s.map(order) if s.name == "method" else s,
                              kind="stable").reset_index(drop=True)
    table.attrs["ci"] = describe_ci(ci, confidence)
    return table


def paired(
    records: pd.DataFrame,
    reference: str | None = None,
    by: Sequence[str] | None = None,
    ci: str = "normal",
    confidence: float = 0.95,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Paired differences ``method - reference`` over the tasks both solved, in points.

    With ``reference=None`` every pair of methods is compared. Rows pair only when their
    setting, task index and task checksum all match. Columns: the setting columns,
    ``method``, ``reference``, ``n_pairs``, ``difference``, ``ci95``, ``ci_low``,
    ``ci_high``, ``wins``, ``losses`` (tasks where the method was better/worse).
    """
    keys = group_columns(records, by)
    order = _method_order(records, methods)
    if reference is not None and reference not in order:
        raise TcsFewshotError(f"reference method '{reference}' is not in the records; choose one of: {', '.join(order)}")
    succeeded = records[records["failure"].isna()]
    setting = (succeeded.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() if keys
               else np.zeros(len(succeeded), dtype=np.int64))
    settings = succeeded[keys].assign(setting=setting).drop_duplicates("setting").set_index("setting")
    # One dense (task, method) matrix, built with integer codes: indexing strings is slow.
    checksum = pd.factorize(succeeded["task_checksum"])[0].astype(np.int64)
    task_index = succeeded["task_index"].to_numpy(dtype=np.int64)
    task_key = (setting * (task_index.max(initial=0) + 1) + task_index) * (checksum.max(initial=0) + 1) + checksum
    task_keys, row = np.unique(task_key, return_inverse=True)
    method_code, method_names = pd.factorize(succeeded["method"])
    column = {name: j for j, name in enumerate(method_names)}
    accuracy = np.full((len(task_keys), len(method_names)), np.nan)
    accuracy[row, method_code] = succeeded["accuracy"].to_numpy(dtype=float) * 100.0
    setting_of_task = np.zeros(len(task_keys), dtype=np.int64)
    setting_of_task[row] = setting
    n_settings = len(settings)
    pairs = [(m, reference) for m in order if m != reference] if reference else list(combinations(order, 2))
    tables = []
    for method, other in pairs:
        if method not in column or other not in column:
            continue
        difference = accuracy[:, column[method]] - accuracy[:, column[other]]
        valid = ~np.isnan(difference)
        where, difference = setting_of_task[valid], difference[valid]
        count = np.bincount(where, minlength=n_settings)
        total = np.bincount(where, difference, minlength=n_settings)
        mean = np.divide(total, count, out=np.full(n_settings, np.nan), where=count > 0)
        squares = np.bincount(where, (difference - mean[where]) ** 2, minlength=n_settings)
        std = np.divide(squares, count - 1, out=np.full(n_settings, np.nan), where=count > 1) ** 0.5
        table = settings.assign(
            n_pairs=count[settings.index], difference=mean[settings.index], std=std[settings.index],
            wins=np.bincount(where, difference > 0, minlength=n_settings)[settings.index].astype(int),
            losses=np.bincount(where, difference < 0, minlength=n_settings)[settings.index].astype(int),
        )
        table = table[table["n_pairs"] > 0].reset_index(drop=True)
        table.insert(len(keys), "method", method)
        table.insert(len(keys) + 1, "reference", other)
        tables.append(table)
    if not tables:
        columns = [*keys, "method", "reference", "n_pairs", "difference", "ci95", "ci_low", "ci_high", "wins", "losses"]
        result = pd.DataFrame(columns=columns)
    else:
        result = pd.concat(tables, ignore_index=True)
        half = ci_half_width(result["std"], result["n_pairs"], confidence, ci)
        result.insert(len(keys) + 4, "ci95", half)
        result.insert(len(keys) + 5, "ci_low", result["difference"] - half)
        result.insert(len(keys) + 6, "ci_high", result["difference"] + half)
        result = result.drop(columns="std")
    result.attrs["ci"] = describe_ci(ci, confidence)
    return result


def gap_closed(
    records: pd.DataFrame,
    method: str,
    student: str = "student-ncm",
    teacher: str = "ncm",
    confidence: float = 0.95,
) -> dict:
    """Fraction of the student-teacher gap that ``method`` closes, with a delta-method CI.

    ``gap closed = mean(method - student) / mean(teacher - student)`` over the tasks all three
    solved (same task index and checksum); accuracies in points. The CI is the delta method
    for a ratio of paired means, using the per-task differences ``d = method - student`` and
    ``g = teacher - student``: ``var(R) ~ (var(d) - 2 R cov(d, g) + R^2 var(g)) / (n mean(g)^2)``
    with the normal quantile. Only one setting may be present (filter the records first).

    Returns a dict: ``method``, ``student``, ``teacher``, ``n``, ``gap`` and ``gap_ci95``
    (teacher - student, points), ``gain`` and ``gain_ci95`` (method - student, points),
    ``ratio``, ``ci_low``, ``ci_high`` (NaN when there is no gap) and ``no_gap`` (True when the
    gap's CI reaches 0 or below, so the ratio means nothing).
    """
    keys = group_columns(records)
    if keys and records[keys].drop_duplicates().shape[0] > 1:
        raise TcsFewshotError(f"gap_closed needs one setting; the records hold several ({', '.join(keys)}): filter them first")
    present = set(records["method"])
    missing = [m for m in (method, student, teacher) if m not in present]
    if missing:
        raise TcsFewshotError(f"gap_closed: method(s) {', '.join(missing)} not in the records; present: {', '.join(sorted(present))}")
    succeeded = records[records["failure"].isna()]
    wide = succeeded.pivot_table(index=["task_index", "task_checksum"], columns="method", values="accuracy",
                                 aggfunc="first")[[method, student, teacher]].dropna() * 100.0
    gain = (wide[method] - wide[student]).to_numpy()
    gap = (wide[teacher] - wide[student]).to_numpy()
    n = len(gain)
    if n < 2:
        raise TcsFewshotError(f"gap_closed needs at least 2 tasks solved by {method}, {student} and {teacher}; found {n}")
    quantile = NormalDist().inv_cdf(0.5 + confidence / 2)
    gap_mean, gain_mean = gap.mean(), gain.mean()
    gap_half = quantile * gap.std(ddof=1) / np.sqrt(n)
    result = dict(method=method, student=student, teacher=teacher, n=n, gap=gap_mean, gap_ci95=gap_half,
                  gain=gain_mean, gain_ci95=quantile * gain.std(ddof=1) / np.sqrt(n),
                  ratio=np.nan, ci_low=np.nan, ci_high=np.nan, no_gap=bool(gap_mean - gap_half <= 0))
    if gap_mean != 0:
        ratio = gain_mean / gap_mean
        covariance = np.cov(gain, gap, ddof=1)
        variance = (covariance[0, 0] - 2 * ratio * covariance[0, 1] + ratio**2 * covariance[1, 1]) / (n * gap_mean**2)
        half = quantile * np.sqrt(max(variance, 0.0))
        result.update(ratio=ratio, ci_low=ratio - half, ci_high=ratio + half)
    return result


def gap_line(records: pd.DataFrame, method: str = "tcs", student: str = "student-ncm", teacher: str = "ncm",
             confidence: float = 0.95) -> str | None:
    """One sentence for a run summary: the gap ``method`` closed, or why there is no gap to close.

    ``None`` when the records lack one of the three methods or hold several settings.
    """
    present = set(records["method"])
    if not {method, student, teacher} <= present:
        return None
    keys = group_columns(records)
    if keys and records[keys].drop_duplicates().shape[0] > 1:
        return None
    try:
        gap = gap_closed(records, method, student, teacher, confidence)
    except TcsFewshotError:
        return None
    if gap["no_gap"]:
        return (f"{teacher} does not beat {student} ({gap['gap']:+.2f} ± {gap['gap_ci95']:.2f} points over "
                f"{gap['n']} tasks), so there is no gap for {method} to close; {method} - {student}: "
                f"{gap['gain']:+.2f} ± {gap['gain_ci95']:.2f} points.")
    return (f"{method} closed {gap['ratio']:.0%} ({confidence:.0%} CI {gap['ci_low']:.0%} to {gap['ci_high']:.0%}, "
            f"delta method over {gap['n']} paired tasks) of the {gap['gap']:.2f}-point gap between {student} and {teacher}.")


def with_deployed(table: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """``table`` (one row per method) plus ``network``, ``flops_per_image`` and ``parameters``.

    ``settings`` is the run manifest's per-method record (``settings[name]["described"]["deployed"]``
    in ``method_settings``, or ``settings[name]["deployed"]`` as
    :func:`tcs_fewshot.runs.method_setup.build_methods`); methods without one get NaN.
    """
    deployed = {name: value.get("deployed") or (value.get("described") or {}).get("deployed") or {}
                for name, value in settings.items() if isinstance(value, dict)}
    extended = table.assign(
        network=[deployed.get(m, {}).get("network") for m in table["method"]],
        flops_per_image=[deployed.get(m, {}).get("flops_per_image") for m in table["method"]],
        parameters=[deployed.get(m, {}).get("parameters") for m in table["method"]],
    )
    extended.attrs = dict(table.attrs)
    return extended
