"""Episodes from easyfsl-style episodic batches, as its ``TaskSampler.episodic_collate_fn`` gives.

    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
    records = evaluate(easyfsl_episodes(loader), {"ncm": NearestClassMean()})
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.evaluator import Episode
from tcs_fewshot.interop.learn2learn import episode_checksum
from tcs_fewshot.methods.protocol import to_numpy


def easyfsl_episodes(batches: Iterable[Sequence[Any]], start_index: int = 0) -> Iterator[Episode]:
    """One :class:`Episode` per batch, with ``task_index = start_index + position``.

    Args:
        batches: ``(support_images, support_labels, query_images, query_labels[, class_ids])``:
            inputs ``(n_support, ...)`` and ``(n_query, ...)``, labels ``(n_support,)`` and
            ``(n_query,)`` in ``0..n_way-1``, as torch tensors or numpy arrays. ``class_ids``
            (easyfsl's true class ids) is ignored.
        start_index: Task index of the first batch.

    Returns:
        An iterator of :class:`Episode`: inputs as given, int64 labels, ``n_way`` the number of
        support classes, checksum :func:`~tcs_fewshot.interop.learn2learn.episode_checksum`.
    """
    if int(start_index) < 0:
        raise TcsFewshotError(f"start_index must be non-negative, got {start_index}")
    return _episodes(batches, int(start_index))


def _episodes(batches: Iterable[Sequence[Any]], start_index: int) -> Iterator[Episode]:
    for index, batch in enumerate(batches, start=start_index):
        if len(batch) not in (4, 5):
            raise TcsFewshotError(
                f"easyfsl batch {index} has {len(batch)} parts; expected (support_images, support_labels, "
                "query_images, query_labels[, class_ids])"
            )
        support_inputs, support_labels, query_inputs, query_labels = batch[:4]
        support_labels = _labels(support_labels, support_inputs, f"easyfsl batch {index}: support")
        query_labels = _labels(query_labels, query_inputs, f"easyfsl batch {index}: query")
        classes = np.unique(support_labels)
        if not np.array_equal(classes, np.arange(len(classes))):
            raise TcsFewshotError(f"easyfsl batch {index}: support labels must be 0..n_way-1, got {classes.tolist()}")
        unseen = np.setdiff1d(query_labels, classes)
        if unseen.size:
            raise TcsFewshotError(f"easyfsl batch {index}: query labels {unseen.tolist()} have no support items")
        checksum = episode_checksum(support_inputs, support_labels, query_inputs, query_labels)
        yield Episode(index, checksum, support_inputs, support_labels, query_inputs, query_labels, n_way=len(classes))


def _labels(labels: Any, inputs: Any, where: str) -> np.ndarray:
    """``labels`` as ``(n,)`` int64 after checking they are 1-D integers, one per row of ``inputs``."""
    array = to_numpy(labels)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise TcsFewshotError(f"{where} labels must be non-empty 1-D integers, got {array.dtype} of shape {array.shape}")
    shape = getattr(inputs, "shape", None)
    if shape is None or len(shape) == 0 or shape[0] != len(array):
        got = f"inputs of shape {tuple(shape)}" if shape is not None else f"a {type(inputs).__name__}"
        raise TcsFewshotError(f"{where} has {len(array)} labels but {got}; give a tensor or array, one row per label")
    return array.astype(np.int64)
