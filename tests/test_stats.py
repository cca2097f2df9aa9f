import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from tcs_fewshot import paired, summary
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.stats.accuracy import ci_half_width
from tcs_fewshot.runs.store import COLUMN_NAMES


def make_records(accuracies: dict[str, list[float]], shots=5, failures=()):
    rows = []
    for method, values in accuracies.items():
        for task_index, accuracy in enumerate(values):
            failed = (method, task_index) in failures
            rows.append(dict(dataset="toy", protocol="episodic", split="test", ways=5, shots=shots, queries=15, seed=0,
                             task_index=task_index, task_checksum=f"t{shots}-{task_index}", method=method,
                             accuracy=None if failed else accuracy, failure="boom" if failed else None,
                             fit_seconds=0.01, predict_seconds=0.001, peak_memory_mb=1.0))
    return pd.DataFrame(rows, columns=list(COLUMN_NAMES))


def test_ci_half_width_normal_and_t_match_scipy():
    values = np.random.default_rng(0).uniform(size=40)
    std = values.std(ddof=1)
    assert ci_half_width(std, 40, method="normal") == pytest.approx(1.959964 * std / np.sqrt(40), rel=1e-6)
    low, high = scipy_stats.t.interval(0.95, 39, loc=values.mean(), scale=scipy_stats.sem(values))
    assert ci_half_width(std, 40, method="t") == pytest.approx((high - low) / 2)
    assert np.isnan(ci_half_width(0.1, 1))
    with pytest.raises(TcsFewshotError, match="unknown CI method"):
        ci_half_width(1.0, 10, method="bootstrap")


def test_summary_means_cis_and_failures():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.4, 0.9, 50), rng.uniform(0.2, 0.7, 50)
    records = make_records({"b": b, "a": a}, failures={("a", 3)})
    table = summary(records, methods=["a", "b"])
    assert table["method"].tolist() == ["a", "b"]
    row = table.iloc[0]
    kept = np.delete(a, 3) * 100
    assert row["n"] == 49 and row["failures"] == 1
    assert row["accuracy"] == pytest.approx(kept.mean())
    assert row["ci95"] == pytest.approx(1.959964 * kept.std(ddof=1) / np.sqrt(49), rel=1e-6)
    assert "ddof=1" in table.attrs["ci"]


def test_summary_groups_by_setting():
    records = pd.concat([make_records({"a": [0.5, 0.7]}, shots=1), make_records({"a": [0.9, 0.9, 0.8]}, shots=5)])
    table = summary(records)
    assert table[["shots", "n"]].values.tolist() == [[1, 2], [5, 3]]


def test_paired_difference_is_mean_and_ci_of_per_task_differences():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.4, 0.9, 60)
    b = a - rng.normal(0.05, 0.02, 60)
    records = make_records({"a": a, "b": b}, failures={("b", 0)})
    table = paired(records, reference="b")
    differences = (a - b)[1:] * 100
    row = table.iloc[0]
    assert (row["method"], row["reference"], row["n_pairs"]) == ("a", "b", 59)
    assert row["difference"] == pytest.approx(differences.mean())
    assert row["ci95"] == pytest.approx(1.959964 * differences.std(ddof=1) / np.sqrt(59), rel=1e-6)
    assert row["wins"] == (differences > 0).sum() and row["losses"] == (differences < 0).sum()
    unpaired = summary(records)
    assert row["ci95"] < unpaired["ci95"].min(), "pairing removes task difficulty"


def test_paired_all_pairs_and_checksum_matching():
    records = make_records({"a": [0.5, 0.6], "b": [0.4, 0.4], "c": [0.1, 0.2]})
    assert paired(records)[["method", "reference"]].values.tolist() == [["a", "b"], ["a", "c"], ["b", "c"]]
    records.loc[records["method"] == "c", "task_checksum"] = "other-tasks"
    table = paired(records, reference="a")
    assert table.set_index("method")["n_pairs"].to_dict() == {"b": 2}, "rows on other tasks never pair"
    with pytest.raises(TcsFewshotError, match="reference method 'z'"):
        paired(records, reference="z")


def test_settings_with_missing_values_stay_separate():
    """pFSL rows have no ways/queries: they must neither vanish nor merge with episodic rows."""
    episodic = make_records({"a": [0.5, 0.7], "b": [0.4, 0.4]})
    pfsl = make_records({"a": [0.9, 0.8, 0.7], "b": [0.6, 0.6, 0.6]})
    pfsl = pfsl.assign(protocol="pfsl", ways=None, queries=None, split="all",
                       task_checksum=pfsl["task_checksum"] + "p")
    records = pd.concat([episodic, pfsl], ignore_index=True)
    table = summary(records)
    assert table[["protocol", "method", "n"]].values.tolist() == [
        ["episodic", "a", 2], ["episodic", "b", 2], ["pfsl", "a", 3], ["pfsl", "b", 3]]
    differences = paired(records, reference="b")
    assert differences[["protocol", "n_pairs"]].values.tolist() == [["episodic", 2], ["pfsl", 3]]
    assert differences["difference"].tolist() == pytest.approx([20.0, 20.0])


def test_gap_closed_recovers_known_ratio_and_its_ci_covers():
    from tcs_fewshot.stats.accuracy import gap_closed, gap_line

    rng = np.random.default_rng(5)
    hits = 0
    for trial in range(200):
        n = 150
        student = rng.uniform(0.3, 0.5, n)
        gap = rng.normal(0.06, 0.05, n)
        tcs = student + 0.6 * gap + rng.normal(0.0, 0.03, n)  # closes 60% of the gap on average
        records = make_records({"student-ncm": student, "ncm": student + gap, "tcs": tcs})
        result = gap_closed(records, "tcs")
        hits += result["ci_low"] <= 0.6 <= result["ci_high"]
    assert 0.90 <= hits / 200 <= 0.99, hits
    assert result["ratio"] == pytest.approx(((tcs - student).mean()) / gap.mean())
    assert not result["no_gap"]
    assert gap_line(records).startswith("tcs closed ")


def test_gap_closed_says_when_the_teacher_does_not_beat_the_student():
    from tcs_fewshot.stats.accuracy import gap_closed, gap_line

    rng = np.random.default_rng(6)
    student = rng.uniform(0.3, 0.5, 80)
    records = make_records({"student-ncm": student, "ncm": student + rng.normal(-0.01, 0.05, 80),
                            "tcs": student + 0.01})
    assert gap_closed(records, "tcs")["no_gap"]
    assert "no gap for tcs to close" in gap_line(records)
    assert gap_line(make_records({"ncm": student})) is None
    with pytest.raises(TcsFewshotError, match="not in the records"):
        gap_closed(records, "kd")


def test_summary_shows_teacher_passes_and_the_deployed_cost():
    from tcs_fewshot.runs.run_tables import readable_summary
    from tcs_fewshot.stats.accuracy import with_deployed

    records = make_records({"ncm": [0.5, 0.6], "tcs": [0.4, 0.5]})
    records["teacher_forward_passes"] = np.where(records["method"] == "tcs", 20, np.nan)
    settings = {"ncm": {"deployed": {"network": "teacher", "flops_per_image": 600_000_000, "parameters": 2_223_872}},
                "tcs": {"deployed": {"network": "student", "flops_per_image": 49_500_000, "parameters": 2_000_000}},
                "student": {"spec": "x"}}
    readable = readable_summary(with_deployed(summary(records), settings)).set_index("method")
    assert readable.loc["tcs", "teacher passes"] == 20 and np.isnan(readable.loc["ncm", "teacher passes"])
    assert readable["network"].tolist() == ["teacher", "student"]
    assert readable["MFLOPs"].tolist() == [600.0, 49.5] and readable.loc["ncm", "params (M)"] == 2.224


def test_reports_carry_the_gap_closed_line_per_run_and_setting():
    from pathlib import Path

    from tcs_fewshot.reports.compare import Run, compare_loaded
    from tcs_fewshot.reports.tables import format_tables

    rng = np.random.default_rng(7)
    student = rng.uniform(0.3, 0.5, 60)
    gap = rng.normal(0.06, 0.02, 60)
    records = make_records({"student-ncm": student, "ncm": student + gap, "tcs": student + 0.5 * gap})
    run = Run(Path("r"), "r", "r", {}, records, ["ncm", "student-ncm", "tcs"])
    summary_table, paired_table = compare_loaded([run], reference="student-ncm")
    [line] = paired_table.attrs["gap_closed"]
    assert line.startswith("r (dataset toy, protocol episodic, split test, ways 5, shots 5, queries 15): tcs closed 50%")
    assert line in format_tables(summary_table, paired_table, "md")


def test_a_run_summary_states_the_gap_its_tcs_methods_closed(tmp_path):
    from tcs_fewshot.runs.experiment import RunResult
    from tcs_fewshot.runs.run_tables import write_run_tables

    rng = np.random.default_rng(8)
    student = rng.uniform(0.3, 0.5, 100)
    records = make_records({"ncm": student + 0.06, "student-ncm": student, "kd": student + 0.01,
                            "student-ncm@tcs": student + 0.045 + rng.normal(0, 0.01, 100)})
    result = RunResult(tmp_path, None, records, summary(records), paired(records, reference="ncm"))
    (line,) = result.gap_lines  # kd is not a TCS method
    assert line.startswith("student-ncm@tcs closed 7") and "between student-ncm and ncm" in line
    write_run_tables(result)
    assert f"- {line}" in (tmp_path / "summary.md").read_text()
