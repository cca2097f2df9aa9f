"""Executors: Ray workers compute the same records as this process, and survive dying workers.

One local Ray (2 CPUs) serves the whole module: it takes seconds to start.
"""

import json
import logging
import os
import sys
import threading

import numpy as np
import pytest
import ray
from cli_invoke import invoke
from conftest import make_features, make_index
from ray import cloudpickle

from tcs_fewshot import (
    MethodFailure,
    NearestClassMean,
    TaskSpec,
    TcsFewshotError,
    evaluate,
    load_records,
    sample_tasks,
)
from tcs_fewshot.runs.executors import LocalExecutor, RayExecutor, make_executor
from tcs_fewshot.runs.manifest import read_manifest
from tcs_fewshot.methods import build_probe

SPEC = TaskSpec(split="test", ways=3, shots=2, queries=5, seed=0)
TIMING_COLUMNS = ["fit_seconds", "predict_seconds", "peak_memory_mb"]


@pytest.fixture(scope="module")
def ray_cluster():
    # address="local": a new instance even when the machine runs a cluster from `ray start`.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    # Workers cannot import this test module: send its classes by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    index = make_index()
    return index, make_features(index)


def without_timings(records):
    """Every column but the timing and memory ones, sorted; missing values as None, numbers as float."""
    frame = records.drop(columns=TIMING_COLUMNS).sort_values(["task_index", "method"]).reset_index(drop=True)
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric].astype(float)
    return frame.astype(object).where(frame.notna(), None)


def probes():
    return {name: build_probe(name) for name in ("ncm", "simpleshot", "logreg")}


def fingerprint(inputs):
    return float(np.asarray(inputs, dtype=np.float64).sum())


class DiesOnTask(NearestClassMean):
    """Nearest class mean whose process exits (like a killed worker) when fitting one given task.

    With a marker file it dies only the first time (the marker is written just before dying),
    so Ray's retry succeeds; without one it dies every time.
    """

    def __init__(self, support_fingerprint, marker=None):
        super().__init__()
        self.target, self.marker = support_fingerprint, marker

    def fit(self, x, y):
        if abs(fingerprint(x) - self.target) < 1e-6 and (self.marker is None or not os.path.exists(self.marker)):
            if self.marker is not None:
                with open(self.marker, "w") as handle:
                    handle.write(str(os.getpid()))
            os._exit(1)
        return super().fit(x, y)


class FailsOnSomeTasks:
    """NaN scores on tasks whose first support value is negative, an exception on every third fit."""

    def fit(self, x, y):
        self.n_way, self.first = int(y.max()) + 1, float(x[0, 0])
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 3 == 0:
            raise ValueError("singular matrix")
        return self

    def predict(self, x):
        scores = np.ones((len(x), self.n_way))
        if self.first < 0:
            scores[:] = np.nan
        return scores


def test_ray_records_equal_a_local_run(ray_cluster, data, tmp_path):
    index, features = data
    tasks = sample_tasks(index, SPEC, 40)
    methods = {**probes(), "first": lambda sx, sy, qx: np.zeros(len(qx), dtype=int)}
    inputs = {name: features for name in methods}  # a {method: inputs} mapping pickles too
    local = evaluate(tasks, methods, inputs)
    remote = evaluate(tasks, {**probes(), "first": methods["first"]}, inputs, run_dir=tmp_path / "run",
                      executor=RayExecutor(chunk_size=3))
    assert len(remote) == 40 * 4 and not remote.duplicated(["task_index", "method"]).any()
    assert remote["failure"].isna().all()
    assert without_timings(remote).equals(without_timings(local))
    assert without_timings(load_records(tmp_path / "run")).equals(without_timings(local)), "the driver stored every row"
    session = read_manifest(tmp_path / "run")["sessions"][-1]
    assert session["executor"]["name"] == "ray" and session["executor"]["chunk_size"] == 3
    assert session["executor"]["cluster_cpus"] == 2


def test_a_run_resumes_across_executors_and_skips_finished_pairs(ray_cluster, data, tmp_path):
    index, features = data
    tasks = sample_tasks(index, SPEC, 12)
    run = tmp_path / "run"
    evaluate(tasks, {"ncm": NearestClassMean()}, features, run_dir=run)
    first = load_records(run)
    evaluate(tasks, {"ncm": NearestClassMean(), "logreg": build_probe("logreg")}, features, run_dir=run,
             executor=RayExecutor(chunk_size=5))
    both = load_records(run)
    assert len(both) == 24
    assert both[both.method == "ncm"].reset_index(drop=True).equals(first), "finished pairs are not recomputed"
    again = evaluate(tasks, {"ncm": NearestClassMean(), "logreg": build_probe("logreg")}, features, run_dir=run)
    assert without_timings(again).equals(without_timings(both))
    manifest = read_manifest(run)
    assert [session["executor"]["name"] for session in manifest["sessions"]] == ["local", "ray", "local"]


def test_a_worker_dying_mid_chunk_is_retried_without_duplicates(ray_cluster, data, tmp_path):
    index, features = data
    tasks = sample_tasks(index, SPEC, 20)
    target = fingerprint(features(tasks.tasks[6].support_ids))
    marker = tmp_path / "died-once"
    reference = evaluate(tasks, {"ncm": NearestClassMean(), "dies": NearestClassMean()}, features)
    records = evaluate(tasks, {"ncm": NearestClassMean(), "dies": DiesOnTask(target, str(marker))}, features,
                       run_dir=tmp_path / "run", executor=RayExecutor(chunk_size=4, max_retries=2))
    assert marker.exists(), "the worker really died on task 6"
    assert int(marker.read_text()) != os.getpid(), "in a worker process, not here"
    stored = load_records(tmp_path / "run")
    assert len(stored) == 40 and not stored.duplicated(["task_index", "method"]).any()
    assert sorted(set(stored["task_index"])) == list(range(20))
    assert without_timings(stored).equals(without_timings(reference))
    assert without_timings(records).equals(without_timings(reference))


def test_a_chunk_lost_for_good_is_one_error_and_the_run_resumes(ray_cluster, data, tmp_path):
    index, features = data
    tasks = sample_tasks(index, SPEC, 16)
    target = fingerprint(features(tasks.tasks[9].support_ids))
    run = tmp_path / "run"
    with pytest.raises(TcsFewshotError, match="a chunk of 2 tasks was lost on Ray after 0 retries") as caught:
        evaluate(tasks, {"ncm": NearestClassMean(), "m": DiesOnTask(target)}, features, run_dir=run,
                 executor=RayExecutor(chunk_size=2, max_retries=0, max_in_flight=2))
    assert "\n" not in str(caught.value)
    stored = load_records(run)
    assert 9 not in set(stored["task_index"])
    assert stored.groupby("task_index")["method"].count().eq(2).all(), "a task is stored whole or not at all"
    # The same run, resumed in this process with a method of that name that does not die.
    resumed = evaluate(tasks, {"ncm": NearestClassMean(), "m": NearestClassMean()}, features, run_dir=run)
    reference = evaluate(tasks, {"ncm": NearestClassMean(), "m": NearestClassMean()}, features)
    assert without_timings(resumed).equals(without_timings(reference))
    assert without_timings(load_records(run)).equals(without_timings(reference))


def test_failures_on_workers_are_rows_and_fail_fast_stops(ray_cluster, data, tmp_path):
    index, features = data
    tasks = sample_tasks(index, SPEC, 15)
    local = evaluate(tasks, {"bad": FailsOnSomeTasks()}, features, measure_memory=False)
    remote = evaluate(tasks, {"bad": FailsOnSomeTasks()}, features, measure_memory=False,
                      executor=RayExecutor(chunk_size=15))  # one chunk, so the fit count matches
    assert without_timings(remote).equals(without_timings(local))
    assert remote["failure"].str.contains("ValueError: singular matrix").sum() == 5
    with pytest.raises(MethodFailure, match="method 'bad' failed"):
        evaluate(tasks, {"bad": FailsOnSomeTasks()}, features, run_dir=tmp_path / "run", fail_fast=True,
                 executor=RayExecutor(chunk_size=4))
    stored = load_records(tmp_path / "run")
    assert stored["failure"].notna().any() and len(stored) < 15


class HoldsALock(NearestClassMean):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()  # cannot be pickled, so cannot travel to a worker


def test_methods_that_cannot_travel_to_workers_are_named_in_one_line(ray_cluster, data, tmp_path):
    index, features = data
    with pytest.raises(TcsFewshotError, match=r"methods or inputs cannot be sent to Ray workers \(.*lock") as caught:
        evaluate(sample_tasks(index, SPEC, 3), {"locked": HoldsALock()}, features, run_dir=tmp_path / "run",
                 executor=RayExecutor())
    assert "\n" not in str(caught.value) and "--executor local" in str(caught.value)


def test_local_chunks_give_the_same_records_as_one_task_at_a_time(data, tmp_path):
    index, features = data
    tasks = sample_tasks(index, SPEC, 10)
    one = evaluate(tasks, probes(), features)
    chunked = evaluate(tasks, probes(), features, run_dir=tmp_path / "run", executor=LocalExecutor(chunk_size=4))
    assert without_timings(chunked).equals(without_timings(one))
    assert read_manifest(tmp_path / "run")["sessions"][0]["executor"] == {"name": "local", "chunk_size": 4}


def test_the_command_line_on_ray_matches_local_and_records_the_executor(ray_cluster, tmp_path):
    args = ["run", "--benchmark", "digits", "--ways", "3", "--shots", "2", "--queries", "4", "--tasks", "12",
            "--methods", "ncm,logreg", "--no-progress"]
    local = invoke([*args, "--out", str(tmp_path / "local")])
    remote = invoke([*args, "--out", str(tmp_path / "ray"), "--executor", "ray", "--chunk-size", "5"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.stderr
    assert without_timings(load_records(tmp_path / "ray")).equals(without_timings(load_records(tmp_path / "local")))
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["sessions"][0]["executor"]["name"] == "ray"
    # The executor is not part of the run's identity: the local command resumes the Ray run.
    again = invoke([*args, "--out", str(tmp_path / "ray")])
    assert again.exit_code == 0, again.stderr
    assert [s["executor"]["name"] for s in read_manifest(tmp_path / "ray")["sessions"]] == ["ray", "local"]


def test_without_ray_the_ray_executor_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    result = invoke(["run", "--benchmark", "digits", "--tasks", "2", "--methods", "ncm", "--executor", "ray",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: the ray executor needs Ray: pip install 'tcs-fewshot[ray]'"
    with pytest.raises(TcsFewshotError, match=r"pip install 'tcs-fewshot\[ray\]'"):
        RayExecutor()


def test_executor_options_are_checked(tmp_path):
    address = invoke(["run", "--benchmark", "digits", "--tasks", "2", "--address", "auto",
                      "--out", str(tmp_path / "run"), "--no-progress"])
    assert address.exit_code == 2 and address.stderr.strip() == "error: --address needs --executor ray"
    chunk = invoke(["run", "--benchmark", "digits", "--chunk-size", "0", "--no-progress"])
    assert chunk.exit_code == 2 and len(chunk.error_lines()) == 1 and "--chunk-size" in chunk.stderr
    with pytest.raises(TcsFewshotError, match="chunk size must be a whole number"):
        LocalExecutor(0)
    assert isinstance(make_executor("local", chunk_size=3), LocalExecutor)


def test_an_unreachable_cluster_fails_in_seconds_with_one_line(tmp_path):
    import subprocess
    import time

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()", "run", "--benchmark", "digits",
         "--tasks", "2", "--methods", "ncm", "--executor", "ray", "--address", "127.0.0.1:9",
         "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "no Ray cluster answers at '127.0.0.1:9'" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "run" / "records.sqlite").exists()


def test_student_methods_on_ray_equal_a_local_run(ray_cluster, tmp_path):
    """TCS and KD travel to workers (cloudpickle takes the image loader and the teacher along)."""
    from tcs_fewshot.data.benchmarks.emoji import Emoji
    from tcs_fewshot.data.benchmarks.emoji_catalog import MIN_EMOJI
    from tcs_fewshot.runs.method_setup import StudentOptions, build_methods
    from tcs_fewshot.cache.feature_cache import FeatureCache
    from tcs_fewshot.models.teachers import load_teacher

    emoji = Emoji(styles=("openmoji",), max_subgroups=5, max_emoji=8, min_instances=MIN_EMOJI, progress=False)
    images = emoji.load(tmp_path / "emoji")
    teacher, cache = load_teacher("torchvision:mobilenet_v2"), FeatureCache(tmp_path / "features")
    tasks = sample_tasks(images.index, TaskSpec(split="test", ways=3, shots=2, queries=3, seed=0), 4)

    def methods():
        return build_methods(["ncm", "tcs", "kd"], cache.feature_set(teacher, images), None, data=images, teacher=teacher,
                             cache=cache, student=StudentOptions("conv4-16", views=1, training={"steps": 10}))[:2]

    local = evaluate(tasks, *methods(), measure_memory=False)
    remote = evaluate(tasks, *methods(), measure_memory=False, executor=RayExecutor(chunk_size=2))
    columns = ["task_index", "method", "accuracy", "n_correct", "teacher_forward_passes", "failure"]
    assert remote["failure"].isna().all()
    assert local[columns].equals(remote[columns])
