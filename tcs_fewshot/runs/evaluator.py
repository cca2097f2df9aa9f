"""Run any set of methods on identical tasks and record one row per (task, method).

    records = evaluate(task_set, {"ncm": NearestClassMean()}, inputs=features, run_dir="runs/a")

``inputs`` maps item ids to what methods consume (a :class:`FeatureSet`, or any
function ``ids -> inputs``, e.g. one that loads images); a mapping ``{method name: function}``
gives methods different inputs (teacher features for probes, item ids for a student that
loads its own images). Episodes that already carry their inputs (from the learn2learn and
easyfsl adapters) need no ``inputs``.

A method may report how many teacher image-view evaluations its last ``fit``+``predict``
consumed in an integer attribute ``teacher_forward_passes``; it is recorded per task.

Rows are computed by an executor (:mod:`tcs_fewshot.runs.executors`: this process, or
Ray workers) in chunks of tasks; whatever the executor, this process alone stores them, one
transaction per task, and a resume skips the (task, method) pairs already stored.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tcs_fewshot.data.taskfile import save_tasks
from tcs_fewshot.data.tasks import Task, TaskSet
from tcs_fewshot.errors import RunDirectoryError, TcsFewshotError
from tcs_fewshot.runs.executors import Executor, LocalExecutor
from tcs_fewshot.runs.manifest import manifest_identity, open_manifest
from tcs_fewshot.runs.progress import RunProgress
from tcs_fewshot.runs.rows import ChunkRows, Episode, task_index_of
from tcs_fewshot.runs.store import RecordStore, records_frame
from tcs_fewshot.methods.protocol import as_method

__all__ = ["Episode", "MethodFailure", "evaluate"]


class MethodFailure(Exception):
    """Raised with ``fail_fast=True`` after the failing task's rows are stored."""


def evaluate(
    tasks: TaskSet | Iterable[Task | Episode],
    methods: Mapping[str, Any],
    inputs: Callable[[np.ndarray], Any] | Mapping[str, Callable[[np.ndarray], Any]] | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    method_settings: Mapping[str, Any] | None = None,
    fail_fast: bool = False,
    measure_memory: bool = True,
    progress: bool = False,
    executor: Executor | None = None,
    session: Mapping[str, Any] | None = None,
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
        method_settings: name -> settings of that method alone; a method already in the run
            must have the same, a new one is added (evaluated on the same tasks).
        fail_fast: Stop at the first failing method (its row is stored first).
        measure_memory: Record ``peak_memory_mb`` per (task, method), sampled during the
            timed fit+predict (no second pass): RSS growth on CPU, torch's peak allocation on
            CUDA, named in ``memory_measure``. Off gives ``peak_memory_mb = NaN``.
        progress: Show a rich progress bar with the live mean and 95% CI per method.
        executor: Where rows are computed (default :class:`LocalExecutor`, this process); a
            :class:`RayExecutor` sends chunks of tasks to Ray workers, which receive the
            methods and inputs pickled. Recorded per session in the manifest, not part of the
            run's identity: a run started on one executor resumes on another.
        session: Further facts about this session (e.g. the data check), recorded beside its
            executor in the manifest's ``sessions``; not part of the run's identity.

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
    executor = executor if executor is not None else LocalExecutor()
    session = {**(session or {}), "executor": executor.describe()}
    compute = ChunkRows(prepared, inputs, _spec_columns(tasks), measure_memory, fail_fast)
    run = _Run(Path(run_dir), tasks, list(prepared), config, session, method_settings) if run_dir is not None else None
    rows: list[dict[str, Any]] = []
    total = len(tasks) if hasattr(tasks, "__len__") else None
    try:
        with RunProgress(list(prepared), total, progress) as bar:
            earlier: dict[int, list[dict[str, Any]]] = {}  # stored rows of tasks being completed
            chunks = _pending_chunks(tasks, list(prepared), inputs, run, executor.chunk_size, rows, earlier, bar)
            with closing(executor.map_chunks(compute, chunks)) as results:
                for chunk_result in results:
                    for task_index, task_rows in chunk_result:
                        if run is not None:
                            run.add(task_index, task_rows)
                        rows.extend(task_rows)
                        bar.advance(earlier.pop(task_index, []) + task_rows)
                        failed = [row for row in task_rows if row.get("failure")]
                        if fail_fast and failed:
                            raise MethodFailure(
                                f"method '{failed[0]['method']}' failed on task {task_index}: {failed[0]['failure']}"
                            )
        return records_frame(rows)
    finally:
        if run is not None:
            run.close()


def _pending_chunks(tasks: Iterable[Task | Episode], names: list[str], inputs: Any, run: _Run | None,
                    chunk_size: int, rows: list[dict[str, Any]], earlier: dict[int, list[dict[str, Any]]],
                    bar: RunProgress) -> Iterator[list[tuple[Task | Episode, tuple[str, ...]]]]:
    """Chunks of ``(task, methods not stored yet)``; rows already stored go straight to ``rows``."""
    stored = run.stored if run is not None else {}
    chunk: list[tuple[Task | Episode, tuple[str, ...]]] = []
    for item in tasks:
        task_index = task_index_of(item)
        done = [stored[(task_index, name)] for name in names if (task_index, name) in stored]
        if any(row["task_checksum"] != item.checksum for row in done):
            raise RunDirectoryError(f"task {task_index} differs from the one stored in '{run.path}'; use another --out")
        rows.extend(done)
        todo = tuple(name for name in names if (task_index, name) not in stored)
        if not todo:
            bar.advance(done)
            continue
        if inputs is None and not isinstance(item, Episode):
            raise TcsFewshotError("tasks name items by id: pass inputs= (a FeatureSet or a function ids -> inputs)")
        earlier[task_index] = done
        chunk.append((item, todo))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _spec_columns(tasks: Any) -> dict[str, Any]:
    if not isinstance(tasks, TaskSet):
        return {}
    return {"dataset": tasks.dataset_name, **{key: value for key, value in tasks.spec.as_dict().items()}}


class _Run:
    """An open run directory: manifest checked, lock held, store open, stored rows read."""

    def __init__(self, run_dir: Path, tasks: Any, method_names: list[str], config: Mapping[str, Any] | None,
                 session: Mapping[str, Any] | None = None, method_settings: Mapping[str, Any] | None = None) -> None:
        self.path = run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.lock = open(run_dir / "lock", "w")  # noqa: SIM115  # held open: closing it releases the lock
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
            manifest = open_manifest(run_dir, identity, method_names, session, method_settings)
            if isinstance(tasks, TaskSet) and not (run_dir / "tasks.json.gz").exists():
                save_tasks(tasks, run_dir / "tasks.json.gz")
            self.store = RecordStore(run_dir / "records.sqlite", identity=manifest_identity(manifest))
            self.stored = {(row["task_index"], row["method"]): row for row in self.store.rows()}
        except BaseException:
            self.close()
            raise

    def add(self, task_index: int, rows: list[dict[str, Any]]) -> None:
        """Store the rows of one task in one transaction (the one write path of every executor)."""
        try:
            self.store.add(rows)
        except sqlite3.Error as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise RunDirectoryError(
                f"cannot store the records of task {task_index} in '{self.store.path}' ({reason}); the tasks stored "
                "before it are kept: free disk space or make the run directory writable, then run again to resume"
            ) from None

    def close(self) -> None:
        if getattr(self, "store", None) is not None:
            self.store.close()
        self.lock.close()  # closing the file releases the lock
