import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import make_features, make_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcs_fewshot import (
    Episode,
    MethodFailure,
    NearestClassMean,
    TaskSpec,
    TcsFewshotError,
    evaluate,
    load_records,
    load_tasks,
    sample_tasks,
)
from tcs_fewshot.runs.manifest import read_manifest
from tcs_fewshot.methods import build_probe

SPEC = TaskSpec(split="test", ways=3, shots=2, queries=5, seed=0)
ACCURACY_COLUMNS = ["task_index", "task_checksum", "method", "accuracy", "n_correct", "n_query", "failure"]


class Broken:
    """Raises on every second task and returns NaN scores on the others."""

    def fit(self, x, y):
        self.n_way = int(y.max()) + 1
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 2 == 0:
            raise RuntimeError("odd task\nwith a second line")
        return self

    def predict(self, x):
        scores = np.zeros((len(x), self.n_way))
        scores[0, 0] = np.nan
        return scores


def test_methods_see_identical_tasks_and_rows_are_complete(toy_index, toy_features):
    tasks = sample_tasks(toy_index, SPEC, 30)
    seen = {}

    def spy(support_x, support_y, query_x):
        seen.setdefault("spy", []).append(support_x.sum())
        return np.zeros(len(query_x), dtype=int)

    records = evaluate(tasks, {"ncm": NearestClassMean(), "spy": spy}, toy_features)
    assert len(records) == 60
    assert records.groupby("task_index")["task_checksum"].nunique().eq(1).all()
    assert (records["n_query"] == 15).all() and records["failure"].isna().all()
    ncm = records[records.method == "ncm"]
    assert ncm["accuracy"].mean() > 0.8, "separable toy features"
    assert np.allclose(records[records.method == "spy"]["accuracy"], 1 / 3)
    assert (records["fit_seconds"] >= 0).all() and (records["peak_memory_mb"] >= 0).all()
    assert records["shots"].eq(2).all() and records["dataset"].eq("toy").all()
    alone = evaluate(tasks, {"ncm": NearestClassMean()}, toy_features)
    assert np.array_equal(alone["accuracy"].to_numpy(), ncm["accuracy"].to_numpy()), "methods do not affect each other"


def test_failures_are_recorded_and_the_run_goes_on(toy_index, toy_features):
    records = evaluate(sample_tasks(toy_index, SPEC, 8), {"broken": Broken(), "ncm": NearestClassMean()}, toy_features)
    broken = records[records.method == "broken"]
    assert broken["failure"].notna().sum() == 8
    assert broken["failure"].str.contains("RuntimeError: odd task with a second line").sum() == 4
    assert broken["failure"].str.contains("NaN").sum() == 4
    assert broken["accuracy"].isna().all()
    assert records[records.method == "ncm"]["failure"].isna().all()


def test_fail_fast_stops_after_storing_the_failing_task(tmp_path, toy_index, toy_features):
    with pytest.raises(MethodFailure, match="method 'broken' failed on task 0"):
        evaluate(sample_tasks(toy_index, SPEC, 8), {"ncm": NearestClassMean(), "broken": Broken()}, toy_features,
                 run_dir=tmp_path / "run", fail_fast=True)
    stored = load_records(tmp_path / "run")
    assert stored["task_index"].tolist() == [0, 0]


def test_episodes_with_inline_inputs(toy_index, toy_features):
    tasks = sample_tasks(toy_index, SPEC, 5)
    episodes = [Episode.from_task(task, toy_features) for task in tasks]
    assert evaluate(episodes, {"ncm": NearestClassMean()})["accuracy"].tolist() == \
        evaluate(tasks, {"ncm": NearestClassMean()}, toy_features)["accuracy"].tolist()
    with pytest.raises(TcsFewshotError, match="pass inputs="):
        evaluate(tasks, {"ncm": NearestClassMean()})


class IdsStudent:
    """Receives item ids, looks its features up itself, and reports teacher passes like TCS does."""

    def __init__(self, features):
        self.features, self.probe = features, NearestClassMean()

    def fit(self, ids, y):
        assert ids.dtype.kind in "UO", "ids arrive, not features"
        self.teacher_forward_passes = len(ids)
        self.probe.fit(self.features(ids), y)
        return self

    def predict(self, ids):
        self.teacher_forward_passes += len(ids)
        return self.probe.predict(self.features(ids))


def test_each_method_can_have_its_own_inputs_and_report_teacher_passes(toy_index, toy_features):
    tasks = sample_tasks(toy_index, SPEC, 6)
    inputs = {"ncm": toy_features, "student": lambda ids: np.asarray(ids)}
    records = evaluate(tasks, {"ncm": NearestClassMean(), "student": IdsStudent(toy_features)}, inputs)
    ncm, student = records[records.method == "ncm"], records[records.method == "student"]
    assert student["failure"].isna().all()
    assert student["accuracy"].tolist() == ncm["accuracy"].tolist(), "same features, same predictions"
    assert student["teacher_forward_passes"].eq(6 + 15).all(), "support + query of a 3-way 2-shot 5-query task"
    assert ncm["teacher_forward_passes"].isna().all(), "not reported, so not invented"
    with pytest.raises(TcsFewshotError, match="no entry for method 'student'"):
        evaluate(tasks, {"ncm": NearestClassMean(), "student": IdsStudent(toy_features)}, {"ncm": toy_features})


def test_run_directory_records_manifest_and_tasks(tmp_path, toy_index, toy_features):
    tasks = sample_tasks(toy_index, SPEC, 10)
    evaluate(tasks, {"ncm": NearestClassMean()}, toy_features, run_dir=tmp_path / "run", config={"note": "x"})
    manifest = read_manifest(tmp_path / "run")
    assert manifest["tasks_checksum"] == tasks.checksum
    assert manifest["dataset"]["fingerprint"] == toy_index.fingerprint
    assert manifest["sessions"][0]["versions"]["numpy"] == np.__version__
    assert load_tasks(tmp_path / "run" / "tasks.json.gz").checksum == tasks.checksum
    # Adding a method to an existing run evaluates only that method.
    records = evaluate(tasks, {"ncm": NearestClassMean(), "ncm2": NearestClassMean()}, toy_features,
                       run_dir=tmp_path / "run", config={"note": "x"})
    assert len(records) == 20 and read_manifest(tmp_path / "run")["methods"] == ["ncm", "ncm2"]
    assert len(read_manifest(tmp_path / "run")["sessions"]) == 2


def test_another_run_or_a_foreign_store_is_refused(tmp_path, toy_index, toy_features):
    run = tmp_path / "run"
    evaluate(sample_tasks(toy_index, SPEC, 4), {"ncm": NearestClassMean()}, toy_features, run_dir=run)
    with pytest.raises(TcsFewshotError, match=r"holds another run \(n_tasks was 4, now 5\)"):
        evaluate(sample_tasks(toy_index, SPEC, 5), {"ncm": NearestClassMean()}, toy_features, run_dir=run)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    sqlite3.connect(foreign / "records.sqlite").execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(TcsFewshotError, match="is not a tcs-fewshot records store"):
        evaluate(sample_tasks(toy_index, SPEC, 4), {"ncm": NearestClassMean()}, toy_features, run_dir=foreign)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "records.sqlite").write_bytes(b"garbage" * 200)
    with pytest.raises(TcsFewshotError, match="not a readable records store"):
        evaluate(sample_tasks(toy_index, SPEC, 4), {"ncm": NearestClassMean()}, toy_features, run_dir=damaged)
    (damaged / "manifest.json").write_text("{half")
    with pytest.raises(TcsFewshotError, match="manifest.json' is damaged"):
        evaluate(sample_tasks(toy_index, SPEC, 4), {"ncm": NearestClassMean()}, toy_features, run_dir=damaged)


RUNNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import make_features, make_index
    from tcs_fewshot import NearestClassMean, TaskSpec, evaluate, sample_tasks

    class Slow(NearestClassMean):
        def predict(self, x):
            time.sleep(0.004)
            return super().predict(x)

    index = make_index()
    evaluate(sample_tasks(index, TaskSpec(split="test", ways=3, shots=2, queries=5), 150),
             {{"ncm": NearestClassMean(), "slow": Slow()}}, make_features(index), run_dir=sys.argv[1])
""")


def _stored_rows(run_dir):
    try:
        with sqlite3.connect(run_dir / "records.sqlite", timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_table(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=os.path.dirname(__file__)))
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run([sys.executable, str(script), str(reference_dir)], check=True)
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen([sys.executable, str(script), str(resumed_dir)])
        target = _stored_rows(resumed_dir) + int(rng.integers(2, 60))
        deadline = time.monotonic() + 60
        while _stored_rows(resumed_dir) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 1
    subprocess.run([sys.executable, str(script), str(resumed_dir)], check=True)
    reference = load_records(reference_dir)[ACCURACY_COLUMNS]
    resumed = load_records(resumed_dir)[ACCURACY_COLUMNS]
    assert len(resumed) == 300 and not resumed.duplicated(["task_index", "method"]).any()
    assert resumed.equals(reference)
    assert len(read_manifest(resumed_dir)["sessions"]) == 4


def test_a_second_writer_is_refused_while_the_first_holds_the_run(tmp_path, toy_index, toy_features):
    tasks = sample_tasks(toy_index, SPEC, 3)
    seen = []

    def nested(support_x, support_y, query_x):
        if not seen:  # while the outer run holds the directory, a second run must be refused
            with pytest.raises(TcsFewshotError, match="another process is writing to run directory"):
                evaluate(tasks, {"ncm": NearestClassMean()}, toy_features, run_dir=tmp_path / "run")
            seen.append(True)
        return np.zeros(len(query_x), dtype=int)

    records = evaluate(tasks, {"nested": nested}, toy_features, run_dir=tmp_path / "run")
    assert seen and len(records) == 3


def test_only_the_requested_tasks_and_methods_come_back(tmp_path, toy_index, toy_features):
    episodes = [Episode.from_task(task, toy_features) for task in sample_tasks(toy_index, SPEC, 6)]
    evaluate(episodes, {"a": NearestClassMean(), "b": NearestClassMean()}, run_dir=tmp_path / "run")
    again = evaluate(episodes[:2], {"a": NearestClassMean()}, run_dir=tmp_path / "run")
    assert again[["task_index", "method"]].values.tolist() == [[0, "a"], [1, "a"]]


def test_a_store_from_another_run_is_refused(tmp_path, toy_index, toy_features):
    evaluate(sample_tasks(toy_index, SPEC, 2), {"a": NearestClassMean()}, toy_features, run_dir=tmp_path / "one")
    evaluate(sample_tasks(toy_index, SPEC, 3), {"a": NearestClassMean()}, toy_features, run_dir=tmp_path / "two")
    (tmp_path / "two" / "records.sqlite").replace(tmp_path / "one" / "records.sqlite")
    with pytest.raises(TcsFewshotError, match="belongs to another run"):
        evaluate(sample_tasks(toy_index, SPEC, 2), {"a": NearestClassMean()}, toy_features, run_dir=tmp_path / "one")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subset=st.sets(st.sampled_from(["ncm", "simpleshot", "logreg"]), min_size=1), reverse=st.booleans())
def test_a_methods_rows_do_not_depend_on_the_other_methods(subset, reverse):
    index = make_index()
    features = make_features(index)
    tasks = sample_tasks(index, SPEC, 6)
    names = sorted(subset, reverse=reverse)
    records = evaluate(tasks, {name: build_probe(name) for name in names}, features, measure_memory=False)
    for name in names:
        alone = evaluate(tasks, {name: build_probe(name)}, features, measure_memory=False)
        mine = records[records.method == name]
        assert mine["accuracy"].tolist() == alone["accuracy"].tolist()
        assert mine["task_checksum"].tolist() == [task.checksum for task in tasks]


class HoldsTensor:
    """Keeps a 200 MiB CPU tensor as fitted state: invisible to tracemalloc, visible in RSS."""

    def fit(self, x, y):
        import torch

        self.buffer_ = torch.ones(200 * 2**20 // 4, dtype=torch.float32)  # ones: pages touched
        self.n_way_ = int(y.max()) + 1
        return self

    def predict(self, x):
        del self.buffer_
        return np.zeros(len(x), dtype=int)


def test_peak_memory_sees_torch_cpu_tensors_in_one_pass(toy_index, toy_features):
    tasks = sample_tasks(toy_index, SPEC, 2)
    fits = []

    class Counted(HoldsTensor):
        def fit(self, x, y):
            fits.append(1)
            return super().fit(x, y)

    records = evaluate(tasks, {"big": Counted()}, toy_features)
    assert (records["peak_memory_mb"] >= 150).all(), records["peak_memory_mb"].tolist()
    assert records["memory_measure"].eq("cpu_rss_growth").all()
    assert len(fits) == 2, "memory is measured during the timed pass, not a second fit"


class MemoisedContext:
    """Shared per-item outputs that cost 0.3 s to fill for items not seen before."""

    def __init__(self):
        self.known = set()

    def outputs(self, ids):
        missing = set(np.asarray(ids).tolist()) - self.known
        if missing:
            time.sleep(0.3)
            self.known |= missing
        return np.zeros((len(ids), 2))


class UsesContext:
    def __init__(self, context):
        self.context = context

    def warm_up(self, ids):
        self.context.outputs(ids)

    def fit(self, ids, y):
        self.context.outputs(ids)
        return self

    def predict(self, ids):
        self.context.outputs(ids)
        return np.zeros(len(ids), dtype=int)


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_method_order_does_not_move_the_shared_fill_into_a_clock(toy_index, order):
    tasks = sample_tasks(toy_index, SPEC, 2)
    context = MemoisedContext()
    methods = {name: UsesContext(context) for name in order}
    records = evaluate(tasks, methods, lambda ids: np.asarray(ids), measure_memory=False)
    seconds = records.groupby("method")["fit_seconds"].max()
    assert (seconds < 0.15).all(), f"a method paid the 0.3 s fill inside its clock: {seconds.to_dict()}"
    assert records["failure"].isna().all()


def test_adding_a_method_evaluates_only_it_and_changed_settings_are_refused_by_name(toy_index, toy_features, tmp_path):
    from tcs_fewshot.errors import RunDirectoryError

    tasks = sample_tasks(toy_index, SPEC, 4)
    fits = {"tcs": 0, "kd": 0}

    class Counted(NearestClassMean):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def fit(self, x, y):
            fits[self.name] += 1
            return super().fit(x, y)

    run = tmp_path / "run"
    evaluate(tasks, {"tcs": Counted("tcs")}, toy_features, run_dir=run, method_settings={"tcs": {"components": 16}})
    both = evaluate(tasks, {"tcs": Counted("tcs"), "kd": Counted("kd")}, toy_features, run_dir=run,
                    method_settings={"tcs": {"components": 16}, "kd": {"temperature": 4}})
    assert fits == {"tcs": 4, "kd": 4}, "adding kd evaluates only kd"
    assert set(both["method"]) == {"tcs", "kd"} and both.groupby("method")["task_checksum"].apply(tuple).nunique() == 1
    assert read_manifest(run)["method_settings"]["kd"] == {"temperature": 4}
    with pytest.raises(RunDirectoryError, match=r"method 'tcs' .* other settings \(tcs.components was 16, now 8\)"):
        evaluate(tasks, {"tcs": Counted("tcs")}, toy_features, run_dir=run, method_settings={"tcs": {"components": 8}})


def test_student_settings_are_per_method_not_run_identity():
    from tcs_fewshot.runs.experiment import RunConfig, per_method_settings

    built = {"student": {"spec": "conv4-32"}, "tcs": {"components": 16}, "kd": {"temperature": 4}}
    alone = per_method_settings(RunConfig(methods=("tcs",)), {"tcs": "student"}, built)
    with_kd = per_method_settings(RunConfig(methods=("tcs", "kd"), method_options={"kd": {"temperature": 4}}),
                                  {"tcs": "student", "kd": "student"}, built)
    assert with_kd["tcs"] == alone["tcs"], "adding kd (and its options) leaves tcs's settings as they were"
    assert with_kd["kd"]["options"] == {"temperature": 4}
