"""Episodes from a learn2learn task dataset, reproducible task by task.

    tasks = l2l.data.TaskDataset(dataset, [NWays(dataset, 5), KShots(dataset, 20), LoadData(dataset)])
    records = evaluate(learn2learn_episodes(tasks, shots=5, queries=15, n_tasks=600), methods)

learn2learn draws with Python's global ``random`` and takes no seed. Task ``i`` is drawn under
``random`` seeded from ``SeedSequence([seed], spawn_key=(i,))`` and the caller's state is then
restored, so episode ``i`` depends only on (task dataset, seed, i) when the task dataset redraws
on every call (``num_tasks=-1``, learn2learn's default; a finite ``num_tasks`` caches tasks as
first drawn, so they also depend on earlier draws). Torch-random data transforms are not seeded.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.evaluator import Episode
from tcs_fewshot.methods.protocol import to_numpy


def episode_checksum(support_inputs: Any, support_labels: Any, query_inputs: Any, query_labels: Any) -> str:
    """sha256 hex digest of an episode's content, pairing rows of the same episode across runs.

    Hashes each of the four arrays in turn: dtype name (``float32``, ``int64``...), shape, raw
    C-order bytes. A numpy array and a torch tensor (any device) of equal content hash alike.
    """
    digest = hashlib.sha256()
    for part in (support_inputs, support_labels, query_inputs, query_labels):
        if hasattr(part, "detach"):  # torch: raw bytes through a uint8 view (numpy has no bfloat16)
            import torch
            tensor = part.detach().cpu().contiguous()
            dtype, shape = str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape)
            raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        else:
            array = np.ascontiguousarray(part)
            if array.dtype.kind == "O":
                raise TcsFewshotError("episode inputs are Python objects; give numeric arrays or tensors")
            dtype, shape, raw = array.dtype.name, array.shape, array.tobytes()
        digest.update(f"{dtype}{shape}".encode() + raw + b"\x1e")
    return digest.hexdigest()


def learn2learn_episodes(task_dataset: Any, shots: int, queries: int, n_tasks: int, seed: int = 0) -> Iterator[Episode]:
    """Episodes ``0..n_tasks-1``, each drawn with ``task_dataset.sample()`` under its own seed.

    Args:
        task_dataset: Has learn2learn's ``sample() -> (data, labels)``, ``data`` a tensor
            ``(n_way * (shots + queries), ...)``, ``labels`` ``(n_way * (shots + queries),)``:
            a ``TaskDataset`` with ``NWays(n)``, ``KShots(k=shots + queries)``, ``LoadData``.
        shots, queries: Per class, the first ``shots`` items (in learn2learn's order) are
            support, the next ``queries`` are queries.
        n_tasks: Number of episodes.
        seed: Non-negative base seed.

    Returns:
        An iterator of :class:`Episode`: ``support_inputs`` ``(n_way * shots, ...)`` and
        ``query_inputs`` ``(n_way * queries, ...)`` tensors grouped by class, int64 labels
        ``0..n_way-1`` numbering the task's labels in sorted order, checksum :func:`episode_checksum`.
    """
    for name, value, least in (("shots", shots, 1), ("queries", queries, 1), ("n_tasks", n_tasks, 1), ("seed", seed, 0)):
        if int(value) < least:
            raise TcsFewshotError(f"{name} must be at least {least}, got {value}")
    return _episodes(task_dataset, int(shots), int(queries), int(n_tasks), int(seed))


def _episodes(task_dataset: Any, shots: int, queries: int, n_tasks: int, seed: int) -> Iterator[Episode]:
    for index in range(n_tasks):
        words = np.random.SeedSequence([seed], spawn_key=(index,)).generate_state(4, dtype=np.uint64)
        caller_state = random.getstate()
        try:
            random.seed(int.from_bytes(words.tobytes(), "little"))
            task = task_dataset.sample()
        finally:
            random.setstate(caller_state)
        yield _split(index, task[0], task[1], shots, queries)


def _split(index: int, data: Any, labels: Any, shots: int, queries: int) -> Episode:
    labels = to_numpy(labels)
    if labels.ndim != 1 or not hasattr(data, "shape") or len(labels) != len(data):
        raise TcsFewshotError(
            "a learn2learn task must give a data tensor and 1-D labels of the same length, "
            f"got {type(data).__name__} and labels of shape {labels.shape}"
        )
    classes, remapped = np.unique(labels, return_inverse=True)
    remapped = remapped.reshape(-1).astype(np.int64)
    counts, per_class = np.bincount(remapped, minlength=len(classes)), shots + queries
    if not np.all(counts == per_class):
        got = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()} to {counts.max()}"
        raise TcsFewshotError(
            f"a learn2learn task has {got} samples per class but {shots}-shot {queries}-query episodes "
            f"need exactly {per_class}; build the task dataset with KShots(dataset, k={per_class})"
        )
    order = np.argsort(remapped, kind="stable").reshape(len(classes), per_class)  # by class, l2l order within
    support, query = order[:, :shots].ravel(), order[:, shots:].ravel()
    support_inputs, support_labels = data[support], remapped[support]
    query_inputs, query_labels = data[query], remapped[query]
    checksum = episode_checksum(support_inputs, support_labels, query_inputs, query_labels)
    return Episode(index, checksum, support_inputs, support_labels, query_inputs, query_labels, n_way=len(classes))
