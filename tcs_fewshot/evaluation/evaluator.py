"""Run any set of methods on identical tasks and record one row per (task, method).

    records = evaluate(task_set, {"ncm": NearestClassMean()}, inputs=features, run_dir="runs/a")

``inputs`` maps item ids to what methods consume (a :class:`FeatureSet`, or any
function ``ids -> inputs``, e.g. one that loads images); a mapping ``{method name: function}``
gives methods different inputs (teacher features for probes, item ids for a student that
loads its own images). Episodes that already carry their inputs (from the learn2learn and
easyfsl adapters) need no ``inputs``.

A method may report how many teacher image-view evaluations its last ``fit``+``predict``
consumed in an integer attribute ``teacher_forward_passes``; it is recorded per task.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tcs_fewshot.data.taskfile import save_tasks
from tcs_fewshot.data.tasks import Task, TaskSet
from tcs_fewshot.errors import RunDirectoryError, TcsFewshotError
from tcs_fewshot.evaluation.manifest import manifest_identity, open_manifest
from tcs_fewshot.evaluation.progress import RunProgress
from tcs_fewshot.evaluation.store import RecordStore, records_frame
from tcs_fewshot.methods.protocol import as_method, predicted_labels


@dataclass(frozen=True, eq=False)
class Episode:
    """A task with its inputs resolved: what ``fit`` and ``predict`` receive.

    Attributes:
        task_index: Position of the task in its task set.
        checksum: Content checksum that pairs rows of the same task across methods and runs.
        support_inputs: ``n_support`` inputs (a ``(n_support, dim)`` matrix, a tensor batch, ...).
        support_labels: ``(n_support,)`` int64 in ``0..n_way-1``.
        query_inputs: ``n_query`` inputs.
        query_labels: ``(n_query,)`` int64.
        n_way: Number of classes.
    """

    task_index: int
    checksum: str
    support_inputs: Any
    support_labels: np.ndarray
    query_inputs: Any
    query_labels: np.ndarray
    n_way: int

    @classmethod
    def from_task(cls, task: Task, inputs: Callable[[np.ndarray], Any]) -> Episode:
        return cls(
            task_index=task.index,
            checksum=task.checksum,
            support_inputs=inputs(task.support_ids),
            support_labels=task.support_labels,
            query_inputs=inputs(task.query_ids),
            query_labels=task.query_labels,
            n_way=len(task.classes),
        )


class MethodFailure(Exception):
    """Raised with ``fail_fast=True`` after the failing task's rows are stored."""


def _peak_memory_mb(method: Any, episode: Episode) -> float:
    """Peak memory of a second fit+predict: Python heap incl. numpy (tracemalloc), or CUDA's peak.

    A separate pass, so that the timed pass runs untraced (tracing slowed logistic regression
    from 3.6 to 13.6 ms per fit).
    """
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        torch = sys.modules.get("torch")
        cuda = torch is not None and torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        method.fit(episode.support_inputs, episode.support_labels)
        method.predict(episode.query_inputs)
        peak = tracemalloc.get_traced_memory()[1] - baseline
        if cuda:
            peak = max(peak, torch.cuda.max_memory_allocated())
    finally:
        if started_here:
            tracemalloc.stop()
    return peak / 2**20


def _run_one(method: Any, episode: Episode, measure_memory: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"n_query": int(len(episode.query_labels))}
    try:
        started = time.perf_counter()
        method.fit(episode.support_inputs, episode.support_labels)
        fitted = time.perf_counter()
        predictions = method.predict(episode.query_inputs)
        row["predict_seconds"] = time.perf_counter() - fitted
        row["fit_seconds"] = fitted - started
        labels = predicted_labels(predictions, row["n_query"], episode.n_way)
        passes = getattr(method, "teacher_forward_passes", None)
        row["teacher_forward_passes"] = None if passes is None else int(passes)
        if measure_memory:
            row["peak_memory_mb"] = _peak_memory_mb(method, episode)
    except Exception as error:  # a method's bug is recorded, not fatal: the run goes on
        message = " ".join(f"{type(error).__name__}: {error}".split())
        row["failure"] = message[:500]
        row["accuracy"] = None
        return row
    row["n_correct"] = int((labels == episode.query_labels).sum())
    row["accuracy"] = row["n_correct"] / max(row["n_query"], 1)
    return row


def evaluate(
    tasks: TaskSet | Iterable[Task | Episode],
    methods: Mapping[str, Any],
    inputs: Callable[[np.ndarray], Any] | Mapping[str, Callable[[np.ndarray], Any]] | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    fail_fast: bool = False,
    measure_memory: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Evaluate ``methods`` on every task and return the records, one row per (task, method).

    Args:
        tasks: A :class:`TaskSet` (recommended: its spec and checksum are recorded),
            or any iterable of :class:`Task` (needs ``inputs``) or :class:`Episode`.
        methods: name -> method object (``fit``/``predict``) or function
            ``(support_x, support_y, query_x) -> predictions``.
        inputs: ids -> inputs, e.g. a :class:`FeatureSet`; or ``{method name: ids -> inputs}``
            with an entry for every method.
        run_dir: Directory for the crash-safe store, the manifest and the tasks file.
            A re-run into it skips finished (task, method) pairs, so a killed run resumes.
        config: Extra settings to record; a resume must have the same.
        fail_fast: Stop at the first failing method (its row is stored first).
        measure_memory: Record peak memory per (task, method) from a second, traced
            fit+predict (the timed pass runs untraced); doubles the methods' cost. Off gives
            ``peak_memory_mb = NaN``.
        progress: Show a rich progress bar with the live mean and 95% CI per method.

    Returns:
        The records of these tasks and methods (stored ones included), ordered by task then method.
    """
    if not methods:
        raise TcsFewshotError("no methods to evaluate; name at least one")
    prepared = {name: as_method(method) for name, method in methods.items()}
    if isinstance(inputs, Mapping):
        missing = [name for name in prepared if name not in inputs]
        if missing:
            raise TcsFewshotError(f"inputs has no entry for method '{missing[0]}'; give one per method")
    spec_columns = _spec_columns(tasks)
    run = _Run(Path(run_dir), tasks, list(prepared), config) if run_dir is not None else None
    stored = run.stored if run is not None else {}
    rows: list[dict[str, Any]] = []
    total = len(tasks) if hasattr(tasks, "__len__") else None
    try:
        with RunProgress(list(prepared), total, progress) as bar:
            for item in tasks:
                task_index = item.task_index if isinstance(item, Episode) else item.index
                done = [stored[(task_index, name)] for name in prepared if (task_index, name) in stored]
                if any(row["task_checksum"] != item.checksum for row in done):
                    raise RunDirectoryError(
                        f"task {task_index} differs from the one stored in '{run_dir}'; use another --out"
                    )
                rows.extend(done)
                todo = [name for name in prepared if (task_index, name) not in stored]
                if todo:
                    episodes = _Episodes(item, inputs)
                    task_rows = [
                        {**spec_columns, "task_index": task_index, "task_checksum": item.checksum,
                         "method": name, **_run_one(prepared[name], episodes.for_method(name), measure_memory)}
                        for name in todo
                    ]
                    if run is not None:
                        run.store.add(task_rows)
                    rows.extend(task_rows)
                bar.advance(done + (task_rows if todo else []))
                failed = [row for row in task_rows if row.get("failure")] if todo else []
                if fail_fast and failed:
                    raise MethodFailure(f"method '{failed[0]['method']}' failed on task {task_index}: {failed[0]['failure']}")
        return records_frame(rows)
    finally:
        if run is not None:
            run.close()


class _Episodes:
    """The episode of one task per distinct input function, built once and shared by methods."""

    def __init__(self, item: Task | Episode, inputs: Any) -> None:
        self.item, self.inputs = item, inputs
        self._built: dict[int, Episode] = {}

    def for_method(self, name: str) -> Episode:
        if isinstance(self.item, Episode):
            return self.item
        inputs = self.inputs[name] if isinstance(self.inputs, Mapping) else self.inputs
        if inputs is None:
            raise TcsFewshotError("tasks name items by id: pass inputs= (a FeatureSet or a function ids -> inputs)")
        if id(inputs) not in self._built:
            self._built[id(inputs)] = Episode.from_task(self.item, inputs)
        return self._built[id(inputs)]


def _spec_columns(tasks: Any) -> dict[str, Any]:
    if not isinstance(tasks, TaskSet):
        return {}
    return {"dataset": tasks.dataset_name, **{key: value for key, value in tasks.spec.as_dict().items()}}


class _Run:
    """An open run directory: manifest checked, lock held, store open, stored rows read."""

    def __init__(self, run_dir: Path, tasks: Any, method_names: list[str], config: Mapping[str, Any] | None) -> None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.lock = open(run_dir / "lock", "w")
        except OSError as error:
            raise RunDirectoryError(f"cannot write to run directory '{run_dir}' ({error.strerror}); choose another --out") from None
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.close()
            raise RunDirectoryError(
                f"another process is writing to run directory '{run_dir}'; wait for it to finish or use another --out"
            ) from None
        try:
            identity: dict[str, Any] = {"config": dict(config or {})}
            if isinstance(tasks, TaskSet):
                # Compared in this order on resume, so the message names the most telling difference.
                identity.update(
                    spec=tasks.spec.as_dict(),
                    n_tasks=len(tasks),
                    dataset={"name": tasks.dataset_name, "fingerprint": tasks.dataset_fingerprint},
                    tasks_checksum=tasks.checksum,
                )
            manifest = open_manifest(run_dir, identity, method_names)
            if isinstance(tasks, TaskSet) and not (run_dir / "tasks.json.gz").exists():
                save_tasks(tasks, run_dir / "tasks.json.gz")
            self.store = RecordStore(run_dir / "records.sqlite", identity=manifest_identity(manifest))
            self.stored = {(row["task_index"], row["method"]): row for row in self.store.rows()}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if getattr(self, "store", None) is not None:
            self.store.close()
        self.lock.close()  # closing the file releases the lock
