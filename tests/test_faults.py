"""Faults a run must survive without losing a stored result, each reported in one line.

Killing a run (SIGKILL) and resuming, a second writer, and a foreign or damaged records
store are covered in test_evaluator.py; Ray workers that die in test_executors.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_invoke import invoke
from conftest import make_features, make_index

from tcs_fewshot import (
    MethodFailure,
    NearestClassMean,
    TaskSpec,
    evaluate,
    load_records,
    sample_tasks,
    summary,
)
from tcs_fewshot.errors import RunDirectoryError
from tcs_fewshot.runs.store import RecordStore

SPEC = TaskSpec(split="test", ways=3, shots=2, queries=5, seed=0)
COLUMNS = ["task_index", "task_checksum", "method", "accuracy", "n_correct", "n_query", "failure"]


@pytest.fixture
def data():
    index = make_index()
    return index, make_features(index)


def sqlite_limit_after(monkeypatch, n_tasks, pragma):
    """Let ``n_tasks`` tasks be stored, then apply an sqlite PRAGMA that makes writes fail for real."""
    original = RecordStore.add
    calls = []

    def add(self, rows):
        calls.append(1)
        if len(calls) == n_tasks + 1:
            page_count = self.connection.execute("PRAGMA page_count").fetchone()[0]
            self.connection.execute(pragma.format(page_count=page_count))
        return original(self, rows)

    monkeypatch.setattr(RecordStore, "add", add)


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_every_earlier_task(tmp_path, data, monkeypatch):
    index, features = data
    tasks = sample_tasks(index, SPEC, 80)
    methods = {"ncm": NearestClassMean(), "other": NearestClassMean()}
    run = tmp_path / "run"
    # sqlite itself reports SQLITE_FULL once the file may not grow by another page.
    sqlite_limit_after(monkeypatch, 3, "PRAGMA max_page_count = {page_count}")
    with pytest.raises(RunDirectoryError) as caught:
        evaluate(tasks, methods, features, run_dir=run)
    message = str(caught.value)
    assert "\n" not in message and "(database or disk is full)" in message
    assert f"in '{run / 'records.sqlite'}'" in message and "run again to resume" in message
    failed_task = int(message.split("records of task ")[1].split()[0])
    assert failed_task >= 3
    stored = load_records(run)
    assert stored["task_index"].tolist() == sorted(list(range(failed_task)) * 2), "every earlier task, whole"
    monkeypatch.undo()  # space freed
    resumed = evaluate(tasks, methods, features, run_dir=run)
    reference = evaluate(tasks, methods, features)
    assert resumed[COLUMNS].equals(reference[COLUMNS])
    assert load_records(run)[COLUMNS].equals(reference[COLUMNS])


def test_a_store_turned_read_only_mid_run_is_one_line(tmp_path, data, monkeypatch):
    index, features = data
    tasks = sample_tasks(index, SPEC, 10)
    sqlite_limit_after(monkeypatch, 2, "PRAGMA query_only = ON")
    with pytest.raises(RunDirectoryError, match=r"cannot store the records of task 2 in .*attempt to write a readonly"):
        evaluate(tasks, {"ncm": NearestClassMean()}, features, run_dir=tmp_path / "run")
    assert load_records(tmp_path / "run")["task_index"].tolist() == [0, 1]


def test_a_full_disk_through_the_command_line_is_exit_2_and_one_line(tmp_path, monkeypatch):
    sqlite_limit_after(monkeypatch, 1, "PRAGMA max_page_count = {page_count}")
    result = invoke(["run", "--benchmark", "digits", "--tasks", "200", "--methods", "ncm", "--queries", "2",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "database or disk is full" in result.stderr
    monkeypatch.undo()
    report = invoke(["report", str(tmp_path / "run"), "--format", "csv"])
    assert report.exit_code == 0, report.stderr


def _read_only(directory, command):
    """``command`` with ``directory`` read-only: a read-only bind mount (root ignores modes) or chmod."""
    if os.geteuid() == 0:
        quoted = " ".join(f"'{part}'" for part in command)
        wrapped = ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{directory}' '{directory}' && exec {quoted}"]
        return subprocess.run(wrapped, capture_output=True, text=True, timeout=300, check=False)
    modes = {path: path.stat().st_mode for path in [directory, *directory.iterdir()]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_a_read_only_run_directory_is_refused_in_one_line_and_still_reported(tmp_path):
    cli = [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()"]
    run = tmp_path / "run"
    args = ["run", "--benchmark", "digits", "--ways", "3", "--tasks", "6", "--out", str(run), "--no-progress"]
    first = invoke([*args, "--methods", "ncm"])
    assert first.exit_code == 0, first.stderr
    before = (run / "records.sqlite").read_bytes(), (run / "manifest.json").read_bytes()
    refused = _read_only(run, [*cli, *args, "--methods", "ncm,logreg"])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot write to run directory '{run}' (Read-only file system); choose another --out"
        if os.geteuid() == 0 else
        f"error: cannot write to run directory '{run}' (Permission denied); choose another --out"
    ]
    report = _read_only(run, [*cli, "report", str(run), "--format", "csv"])
    assert report.returncode == 0, report.stderr
    assert "ncm" in report.stdout and "logreg" not in report.stdout
    assert ((run / "records.sqlite").read_bytes(), (run / "manifest.json").read_bytes()) == before


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "tcs-fewshot/run", "config"', "manifest.json' is damaged"),
        (b"\xff\xfe not text", "manifest.json' is damaged"),
        ("[1, 2, 3]", "manifest.json' is not a tcs-fewshot run manifest"),
        ('{"format": "someone-else/experiment", "runs": []}', "manifest.json' is not a tcs-fewshot run manifest"),
        (None, r"manifest.json' is damaged \('sessions' is not a list\)"),
    ],
    ids=["truncated", "binary", "a-list", "foreign", "edited-by-hand"],
)
def test_a_damaged_or_foreign_manifest_is_named_and_never_overwritten(tmp_path, data, content, message):
    index, features = data
    tasks = sample_tasks(index, SPEC, 4)
    run = tmp_path / "run"
    evaluate(tasks, {"ncm": NearestClassMean()}, features, run_dir=run)
    path = run / "manifest.json"
    if content is None:  # valid JSON of the right format, with a list replaced by a string
        manifest = json.loads(path.read_text())
        manifest["sessions"] = "lost"
        content = json.dumps(manifest)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = path.read_bytes()
    with pytest.raises(RunDirectoryError, match=message) as caught:
        evaluate(tasks, {"ncm": NearestClassMean()}, features, run_dir=run)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert path.read_bytes() == before, "refused, never overwritten"
    report = invoke(["report", str(run)])
    assert report.exit_code == 2 and "Traceback" not in report.stderr
    assert len(report.error_lines()) == 1 and "manifest.json" in report.stderr
    assert path.read_bytes() == before
    assert len(load_records(run)) == 4, "the records themselves are intact"


class NaNOrRaises:
    """NaN scores on even tasks, an exception on every third, correct-ish labels otherwise."""

    def fit(self, x, y):
        self.n_way = int(y.max()) + 1
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 3 == 0:
            raise np.linalg.LinAlgError("Singular matrix")
        return self

    def predict(self, x):
        scores = np.zeros((len(x), self.n_way))
        if self.calls % 2 == 0:
            scores[-1, -1] = np.nan
        return scores


def test_failing_methods_give_reasons_the_run_goes_on_and_the_summary_counts_them(tmp_path, data):
    index, features = data
    tasks = sample_tasks(index, SPEC, 12)
    records = evaluate(tasks, {"flaky": NaNOrRaises(), "ncm": NearestClassMean()}, features,
                       run_dir=tmp_path / "run", measure_memory=False)
    flaky = records[records.method == "flaky"].set_index("task_index")
    raised = [i for i in range(12) if (i + 1) % 3 == 0]
    nan = [i for i in range(12) if (i + 1) % 2 == 0 and i not in raised]
    assert flaky.loc[raised, "failure"].eq("LinAlgError: Singular matrix").all()
    assert flaky.loc[nan, "failure"].str.startswith("InvalidPredictions: scores contain 1 NaN").all()
    ok = [i for i in range(12) if i not in raised + nan]
    assert flaky.loc[ok, "failure"].isna().all() and flaky.loc[ok, "accuracy"].notna().all()
    assert len(records) == 24 and records[records.method == "ncm"]["failure"].isna().all(), "the run went on"
    table = summary(load_records(tmp_path / "run")).set_index("method")
    assert table.loc["flaky", "failures"] == len(raised) + len(nan) and table.loc["flaky", "n"] == len(ok)
    assert table.loc["ncm", "failures"] == 0 and table.loc["ncm", "n"] == 12


def test_fail_fast_keeps_the_failing_task_and_everything_before(tmp_path, data):
    index, features = data
    tasks = sample_tasks(index, SPEC, 12)
    with pytest.raises(MethodFailure, match=r"method 'flaky' failed on task 1: InvalidPredictions"):
        evaluate(tasks, {"ncm": NearestClassMean(), "flaky": NaNOrRaises()}, features, run_dir=tmp_path / "run",
                 fail_fast=True, measure_memory=False)
    stored = load_records(tmp_path / "run")
    assert stored["task_index"].tolist() == [0, 0, 1, 1]
    assert stored["failure"].notna().tolist() == [False, False, True, False]
