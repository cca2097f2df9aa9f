"""The CI over classes: its formula, where it is undefined, its coverage on simulated benchmarks, and its
place in every report (run summary, md, csv, latex, terminal, HTML)."""

from itertools import combinations

import numpy as np
import pytest

from cli_invoke import invoke
from tcs_fewshot.stats.class_ci import HEADER, two_level_ci, with_class_ci
from tcs_fewshot.reports.compare import compare_runs
from tcs_fewshot.stats.coverage import Population, simulate_coverage
from tcs_fewshot.runs.experiment import RunConfig, run_experiment
from tcs_fewshot.reports.html import render_html_report
from tcs_fewshot.reports.compare import load_runs


def test_two_level_variance_of_exactly_additive_tasks():
    # Every 3-class subset of 6 classes, once; a task's value is the mean of its classes' values, no noise:
    # the class effects are recovered exactly, so the class term is sum_c w_c^2 * var(alpha) with w_c = 1/6.
    alpha = np.array([40.0, 55.0, 60.0, 62.0, 70.0, 85.0])
    tasks = list(combinations(range(6), 3))
    values = np.array([alpha[list(task)].mean() for task in tasks])
    found = two_level_ci(values, [tuple(f"c{c}" for c in task) for task in tasks])
    assert found["class_variance"] == pytest.approx(6 * (1 / 6) ** 2 * alpha.var(ddof=1))
    assert found["task_variance"] == pytest.approx(values.var(ddof=1) / len(values))
    assert found["mean"] == pytest.approx(alpha.mean())
    assert found["n_classes"] == 6 and found["reason"] is None
    assert found["high"] - found["mean"] == pytest.approx(found["half"])
    assert 5 <= found["df"] <= len(values) - 1  # Satterthwaite, between C-1 and T-1


def test_class_ci_is_nan_with_a_reason_where_it_is_undefined():
    same = two_level_ci(np.array([50.0, 60.0, 55.0]), [("a", "b")] * 3)  # 2-way tasks from 2 classes
    assert np.isnan(same["half"]) and "same classes" in same["reason"]
    few = two_level_ci(np.array([50.0, 60.0, 55.0]), [("a", "b"), ("b", "c"), ("a", "c")])
    assert np.isnan(few["half"]) and "more tasks than classes" in few["reason"]


def test_two_level_ci_covers_the_truth_and_the_task_ci_does_not():
    population = Population()
    truth = 100 * population.true_accuracy(n_tasks=200_000, seed=1)
    coverage = simulate_coverage(population, n_classes=9, n_tasks=100, n_benchmarks=200, resamples=50, seed=3,
                                 truth=truth).set_index("interval")["coverage"]
    assert 0.88 <= coverage["classes, two-level"] <= 0.99
    assert coverage["tasks"] < 0.6  # it ignores which 9 classes the benchmark drew
    again = simulate_coverage(population, n_classes=9, n_tasks=100, n_benchmarks=20, resamples=50, seed=3, truth=truth)
    once = simulate_coverage(population, n_classes=9, n_tasks=100, n_benchmarks=20, resamples=50, seed=3, truth=truth)
    assert again.equals(once)  # seeded


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-way run on digits' 5 test classes (30 tasks), so the tasks differ in their classes."""
    run_dir = tmp_path_factory.mktemp("classci") / "run"
    config = RunConfig(benchmark="digits", ways=3, shots=1, tasks=30, methods=("ncm", "simpleshot", "logreg"))
    return run_experiment(config, run_dir=run_dir)


def test_run_summary_and_paired_have_the_class_ci(run):
    from tcs_fewshot.runs.run_tables import write_run_tables

    assert run.summary["class_ci95"].notna().all() and (run.summary["class_ci95"] > 0).all()
    assert run.paired["class_ci95"].notna().all()
    # Only 5 classes: the class-level interval is wider than the one over 30 tasks.
    assert (run.summary["class_ci95"] > run.summary["ci95"]).all()
    write_run_tables(run)
    summary_md = (run.run_dir / "summary.md").read_text()
    assert HEADER in summary_md and "Satterthwaite" in summary_md
    assert HEADER in (run.run_dir / "paired.md").read_text()
    assert "class_ci95" in (run.run_dir / "summary.csv").read_text().splitlines()[0]


def test_report_formats_show_both_cis(run):
    half = run.summary.set_index("method").loc["ncm", "class_ci95"]
    for fmt in ("md", "latex"):
        outcome = invoke(["report", str(run.run_dir), "--format", fmt])
        assert outcome.exit_code == 0, outcome.stderr
        header = HEADER.replace("%", r"\%") if fmt == "latex" else HEADER  # LaTeX escapes the percent sign
        assert header in outcome.stdout and f"{half:.2f}" in outcome.stdout, fmt
    csv = invoke(["report", str(run.run_dir), "--format", "csv"]).stdout
    assert csv.splitlines()[0].endswith("class_ci95,class_ci_df")
    paired = invoke(["report", str(run.run_dir), "--paired", "--format", "md"]).stdout
    assert HEADER in paired
    terminal = invoke(["report", str(run.run_dir)]).stdout
    assert "CI (classes" in terminal


def test_report_equals_the_run_summary_and_is_deterministic(run):
    summary, paired = compare_runs([run.run_dir])
    assert np.allclose(summary["class_ci95"], run.summary["class_ci95"])
    assert np.allclose(paired.sort_values(["method", "reference"])["class_ci95"].dropna(),
                       compare_runs([run.run_dir])[1].sort_values(["method", "reference"])["class_ci95"].dropna())


def test_html_report_shows_both_cis(run):
    page = render_html_report(load_runs([run.run_dir]))
    summary_table = page[page.index('id="summary-table"'):page.index("</table>", page.index('id="summary-table"'))]
    assert "accuracy (%)" in summary_table and HEADER in summary_table
    assert "over classes (two-level)" in page  # the figures' captions name the second interval


def test_without_a_task_file_the_class_ci_is_left_out(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run.run_dir, copy)
    (copy / "tasks.json.gz").unlink()
    summary, _ = compare_runs([copy])
    assert summary["class_ci95"].isna().all() and "class_ci" not in summary.attrs
    outcome = invoke(["report", str(copy), "--format", "md"])
    assert outcome.exit_code == 0 and HEADER not in outcome.stdout and "accuracy (%)" in outcome.stdout


def test_with_class_ci_skips_rows_whose_tasks_are_unknown(run):
    partial = dict(list({task.checksum: task.classes for task in run.task_set.tasks}.items())[:-1])
    table = with_class_ci(run.summary.drop(columns=["class_ci95", "class_ci_df"]), run.records, partial)
    assert table["class_ci95"].isna().all()  # never a CI over a subset of the tasks the mean used
