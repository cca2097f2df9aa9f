"""The record rows of one task: what every executor computes, in this process or on a worker.

:func:`task_rows` fits and predicts every requested method on one task and returns one row
per method; :class:`ChunkRows` applies it to a chunk of tasks and pickles (methods and
inputs by value), so a Ray worker receives it once and reuses it for every chunk it runs.
Nothing here touches a run directory: the evaluator alone stores rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcs_fewshot.data.tasks import Task
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.memory import PeakMemory
from tcs_fewshot.runs.store import COLUMN_NAMES
from tcs_fewshot.methods.protocol import predicted_labels


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


def task_index_of(item: Task | Episode) -> int:
    """The index of a task or episode in its task set."""
    return item.task_index if isinstance(item, Episode) else item.index


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads (what a method's ``fit_threads()`` asks for), then restore.

    The runner sets the process-wide count, not the method: ``None`` leaves it as it is.
    """
    if count is None:
        yield
        return
    import torch  # only here: the evaluator itself runs without torch (features-only runs)

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_method(method: Any, episode: Episode, measure_memory: bool) -> dict[str, Any]:
    """Fit and predict one method on one episode; a failure is returned as a row, never raised.

    Returns:
        ``n_query``, ``accuracy`` (fraction in [0, 1], None on failure), ``n_correct``,
        ``fit_seconds`` and ``predict_seconds`` (wall clock), ``peak_memory_mb`` (MiB, when
        measured: see :mod:`.memory`) with ``memory_measure`` naming the measure
        (``cpu_rss_growth`` or ``cuda_peak_allocated``), ``teacher_forward_passes`` and
        ``failure`` (the reason, one line).
    """
    row: dict[str, Any] = {"n_query": len(episode.query_labels)}
    try:
        # Memory is sampled during the timed pass (no second fit); the sampler thread costs
        # a /proc read every 2 ms.
        with PeakMemory() if measure_memory else nullcontext() as peak:
            started = time.perf_counter()
            # A transductive method also fits on the queries' inputs (never their labels).
            unlabelled = {"unlabelled": episode.query_inputs} if getattr(method, "transductive", False) else {}
            with torch_threads(method.fit_threads() if hasattr(method, "fit_threads") else None):
                method.fit(episode.support_inputs, episode.support_labels, **unlabelled)
            fitted = time.perf_counter()
            predictions = method.predict(episode.query_inputs)
            predicted = time.perf_counter()
        row["predict_seconds"] = predicted - fitted
        row["fit_seconds"] = fitted - started
        if peak is not None:
            row["peak_memory_mb"], row["memory_measure"] = peak.mb, peak.measure
        labels = predicted_labels(predictions, row["n_query"], episode.n_way)
        passes = getattr(method, "teacher_forward_passes", None)
        row["teacher_forward_passes"] = None if passes is None else int(passes)
    except Exception as error:  # noqa: BLE001  # a method's bug is recorded, not fatal: the run goes on
        message = " ".join(f"{type(error).__name__}: {error}".split())
        row["failure"] = message[:500]
        row["accuracy"] = None
        return row
    row["n_correct"] = int((labels == episode.query_labels).sum())
    row["accuracy"] = row["n_correct"] / max(row["n_query"], 1)
    return row


class _Episodes:
    """The episode of one task per distinct input function, built once and shared by methods."""

    def __init__(self, item: Task | Episode, inputs: Any) -> None:
        self.item, self.inputs = item, inputs
        self._built: dict[int, Episode] = {}

    def inputs_for(self, name: str) -> Callable[[np.ndarray], Any]:
        """The function ``ids -> inputs`` of method ``name``."""
        inputs = self.inputs[name] if isinstance(self.inputs, Mapping) else self.inputs
        if inputs is None:
            raise TcsFewshotError("tasks name items by id: pass inputs= (a FeatureSet or a function ids -> inputs)")
        return inputs

    def for_method(self, name: str) -> Episode:
        if isinstance(self.item, Episode):
            return self.item
        inputs = self.inputs_for(name)
        if id(inputs) not in self._built:
            self._built[id(inputs)] = Episode.from_task(self.item, inputs)
        return self._built[id(inputs)]


def task_rows(
    item: Task | Episode,
    method_names: Sequence[str],
    methods: Mapping[str, Any],
    inputs: Any,
    spec_columns: Mapping[str, Any],
    measure_memory: bool,
) -> list[dict[str, Any]]:
    """The record rows of ``method_names`` on one task, in that order (the one compute path).

    Args:
        item: The task (its inputs are looked up with ``inputs``) or an episode.
        methods: name -> object with ``fit``/``predict`` (already adapted by ``as_method``).
        inputs: ids -> inputs, ``{method name: ids -> inputs}``, or None for episodes.
        spec_columns: Setting columns copied into every row (dataset, protocol, shots, ...).
        measure_memory: Also record ``peak_memory_mb`` (torch-aware, sampled during the timed pass).
    """
    episodes = _Episodes(item, inputs)
    warm_up_failures = warm_up(item, method_names, methods, episodes)
    # Every store column, None where it does not apply: fresh rows look like rows read back on resume.
    base = {**dict.fromkeys(COLUMN_NAMES), **spec_columns, "task_index": task_index_of(item),
            "task_checksum": item.checksum}
    return [{**base, "method": name,
             **(warm_up_failures.get(name) or run_method(methods[name], episodes.for_method(name), measure_memory))}
            for name in method_names]


def warm_up(item: Task | Episode, method_names: Sequence[str], methods: Mapping[str, Any],
            episodes: _Episodes) -> dict[str, dict]:
    """Call ``warm_up(inputs)`` of every method that has one, before any clock.

    ``inputs`` are the method's inputs of the task's support then query ids (the ids
    themselves for a method whose inputs function returns them, ``StudentItems`` for ours).

    Shared per-task work (frozen student outputs, cache fills) is then paid here, not by
    whichever method happens to run first, so a method's time does not depend on the order.
    Returns failure rows of the methods whose warm-up raised (they are not run).
    """
    if not isinstance(item, Task):
        return {}
    ids = np.concatenate([np.asarray(item.support_ids), np.asarray(item.query_ids)])
    failures = {}
    for name in method_names:
        hook = getattr(methods[name], "warm_up", None)
        if hook is None:
            continue
        inputs = episodes.inputs_for(name)  # no inputs= is the caller's error: raised, as before
        try:
            hook(inputs(ids))
        except Exception as error:  # noqa: BLE001  # recorded as that method's failure, as in run_method
            message = " ".join(f"warm_up: {type(error).__name__}: {error}".split())
            failures[name] = {"n_query": len(item.query_ids), "accuracy": None, "failure": message[:500]}
    return failures


@dataclass
class ChunkRows:
    """``chunk -> [(task_index, rows), ...]`` for chunks of ``(task or episode, method names)``.

    Picklable with its methods and inputs, which is how Ray workers receive them. With
    ``fail_fast`` a chunk stops after the first task on which a method failed.
    """

    methods: Mapping[str, Any]
    inputs: Any
    spec_columns: Mapping[str, Any] = field(default_factory=dict)
    measure_memory: bool = True
    fail_fast: bool = False

    def __call__(self, chunk: Sequence[tuple[Task | Episode, Sequence[str]]]) -> list[tuple[int, list[dict[str, Any]]]]:
        results = []
        for item, method_names in chunk:
            rows = task_rows(item, method_names, self.methods, self.inputs, self.spec_columns, self.measure_memory)
            results.append((task_index_of(item), rows))
            if self.fail_fast and any(row.get("failure") for row in rows):
                break
        return results
