"""Export and load task sets, so other projects evaluate on exactly our tasks.

The file is JSON (gzip-compressed when the name ends in ``.gz``): the spec, the
dataset fingerprint, and per task its classes, item ids, labels and checksum, plus a
checksum of the whole set. Loading recomputes every checksum, so a damaged or edited
file is named instead of silently giving other numbers.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.tasks import Task, TaskSet, TaskSpec
from tcs_fewshot.errors import TaskFileError

FORMAT = "tcs-fewshot/tasks"
VERSION = 1


def _open(path: Path, mode: str, compressed: bool):
    if compressed:
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def save_tasks(task_set: TaskSet, path: str | os.PathLike) -> str:
    """Write ``task_set`` to ``path`` atomically; returns the task-set checksum."""
    path = Path(path)
    if path.name in ("", ".."):
        raise TaskFileError(f"task file path '{path}' names a directory; give a file name such as tasks.json.gz")
    document = {
        "format": FORMAT,
        "version": VERSION,
        "spec": task_set.spec.as_dict(),
        "dataset": {"name": task_set.dataset_name, "fingerprint": task_set.dataset_fingerprint},
        "checksum": task_set.checksum,
        "tasks": [
            {
                "index": task.index,
                "classes": list(task.classes),
                "support_ids": task.support_ids.tolist(),
                "support_labels": task.support_labels.tolist(),
                "query_ids": task.query_ids.tolist(),
                "query_labels": task.query_labels.tolist(),
                "checksum": task.checksum,
            }
            for task in task_set.tasks
        ],
    }
    temporary = path.with_name(path.name + ".partial")
    with _open(temporary, "w", compressed=path.suffix == ".gz") as handle:
        json.dump(document, handle)
    os.replace(temporary, path)
    return task_set.checksum


def load_tasks(path: str | os.PathLike, index: LabelIndex | None = None) -> TaskSet:
    """Read a task file and verify it; with ``index``, also check every id exists there.

    Raises:
        TaskFileError: missing, unreadable, foreign or damaged file, or ids unknown to ``index``.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file '{path}' does not exist; export one with save_tasks or a run's tasks.json")
    try:
        with _open(path, "r", compressed=path.suffix == ".gz") as handle:
            document = json.load(handle)
    except (OSError, ValueError, EOFError) as error:
        raise TaskFileError(f"task file '{path}' is not readable JSON ({error}); re-export it") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TaskFileError(f"'{path}' is not a tcs-fewshot task file (no format '{FORMAT}')")
    if document.get("version") != VERSION:
        raise TaskFileError(f"task file '{path}' has version {document.get('version')}; this toolkit reads {VERSION}")
    try:
        tasks = tuple(
            Task(
                index=int(entry["index"]),
                classes=tuple(entry["classes"]),
                support_ids=np.asarray(entry["support_ids"], dtype=str),
                support_labels=np.asarray(entry["support_labels"], dtype=np.int64),
                query_ids=np.asarray(entry["query_ids"], dtype=str),
                query_labels=np.asarray(entry["query_labels"], dtype=np.int64),
            )
            for entry in document["tasks"]
        )
        task_set = TaskSet(
            spec=TaskSpec(**document["spec"]),
            dataset_name=document["dataset"]["name"],
            dataset_fingerprint=document["dataset"]["fingerprint"],
            tasks=tasks,
        )
        stored_task_checksums = [entry["checksum"] for entry in document["tasks"]]
    except (KeyError, TypeError, ValueError) as error:
        raise TaskFileError(f"task file '{path}' is malformed ({type(error).__name__}: {error}); re-export it") from None
    for task, stored in zip(task_set.tasks, stored_task_checksums):
        if task.checksum != stored:
            raise TaskFileError(f"task {task.index} in '{path}' does not match its checksum; the file was altered")
    if task_set.checksum != document.get("checksum"):
        raise TaskFileError(f"task file '{path}' does not match its overall checksum; the file was altered")
    if index is not None:
        _check_against(task_set, index, path)
    return task_set


def _check_against(task_set: TaskSet, index: LabelIndex, path: Path) -> None:
    """Every item of every task must exist in ``index`` with the class the task gives it."""
    label_of = dict(zip(index.item_ids.tolist(), index.labels.tolist()))
    for task in task_set.tasks:
        for ids, labels in ((task.support_ids, task.support_labels), (task.query_ids, task.query_labels)):
            for item_id, label in zip(ids.tolist(), labels.tolist()):
                if item_id not in label_of:
                    raise TaskFileError(
                        f"task {task.index} of '{path}' names item '{item_id}', which dataset "
                        f"'{index.name}' does not have; the tasks were made on other data"
                    )
                if label_of[item_id] != task.classes[label]:
                    raise TaskFileError(
                        f"task {task.index} of '{path}' gives item '{item_id}' class '{task.classes[label]}' "
                        f"but dataset '{index.name}' says '{label_of[item_id]}'; the tasks were made on other data"
                    )
