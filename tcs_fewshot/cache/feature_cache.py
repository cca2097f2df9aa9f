"""Teacher features computed once per (teacher identity, image, view), shared by every method and run.

    cache = FeatureCache()                                       # <data_home()>/features
    x = cache.features(teacher, data, ids, views=(0, 1, 2))      # (len(ids), 3, feature_dim) float32
    inputs = cache.feature_set(teacher, data)                    # FeatureSet of view 0, every item

Only missing (item, view) rows go through the teacher, in batches under ``torch.inference_mode``
on the device (and in the precision) of the model's parameters; a CNN teacher's weights are
converted to channels_last in place (same values, faster convolutions). ``teacher.identity`` (name, weights checksum,
preprocessing, layer) keys the storage, with the dataset's ``index.fingerprint`` and, for embedded
benchmarks, their build record (``data.manifest["build"]``), and for image files how they are
decoded (``data.image_record``: background, decoder version). Each item backed by a file
(``data.root / item_id``) has its identity (size, mtime_ns) stored beside its rows; a row whose
file changed since is dropped (recorded, shown by ``cache info``) and recomputed. Views are
described in :mod:`tcs_fewshot.models.views`, the on-disk layout in :mod:`cache_store`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.cache.admin import cache_info, clear_cache, default_root
from tcs_fewshot.cache.store import LAYOUT_VERSION, CacheEntry, entry_path
from tcs_fewshot.data.features import FeatureSet
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.views import RECIPE, view_image

__all__ = ["CPU_BATCH_SIZE", "FeatureCache", "cache_info", "clear_cache", "default_root", "total_forward_passes"]

# MobileNetV2 on a 2-core CPU: 15-19 ms/image at batch 8, 25-28 at batch 64 (memory-bound);
# GPUs want large batches, so the default is 64 there.
CPU_BATCH_SIZE = 8

_total_forward_passes = 0  # images passed through any teacher by any FeatureCache of this process


def total_forward_passes() -> int:
    """Images passed through a teacher by every :class:`FeatureCache` of this process so far."""
    return _total_forward_passes


class FeatureCache:
    """Teacher features on disk under ``root`` (default ``<data_home()>/features``).

    Attributes:
        forward_passes: Images this object has passed through a teacher (0 on a full cache hit).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.forward_passes = 0
        self._entries: dict[tuple[str, str], CacheEntry] = {}

    def features(self, teacher: Teacher, data: BenchmarkData, item_ids: Sequence[str] | None = None,
                 views: Sequence[int] = (0,), batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """``(len(item_ids), len(views), feature_dim)`` float32 features, computing only missing rows.

        Args:
            item_ids: Items of ``data.index`` (default: all, in the index's order).
            views: View ids, 0 the plain image, ``k > 0`` seeded augmentations (see ``views``).
            batch_size: Images per teacher forward pass; default 64 on a GPU, ``CPU_BATCH_SIZE`` on CPU.
            progress: Show a rich progress bar while extracting.
        """
        entry = self._entry(teacher, data)
        rows = entry.rows(data.index.item_ids if item_ids is None else item_ids)
        views = [int(view) for view in views]
        if any(view < 0 for view in views):
            raise TcsFewshotError(f"views must be ids >= 0 (0 is the plain image); got {views}")
        out = np.empty((len(rows), len(views), entry.shape[1]), dtype=np.float32)
        self._fill(teacher, data, entry, rows, views, batch_size, progress)
        for j, view in enumerate(views):
            out[:, j] = entry.read(view)[rows]  # fancy indexing copies: the caller owns ``out``
        return out

    def feature_set(self, teacher: Teacher, data: BenchmarkData, view: int = 0, *,
                    batch_size: int | None = None, progress: bool = False) -> FeatureSet:
        """``(n_items, feature_dim)`` features of ``view`` of every item, for the probes.

        Rows are in sorted item-id order; the matrix is the read-only memory map itself (no copy).
        """
        entry = self._entry(teacher, data)
        self._fill(teacher, data, entry, np.arange(entry.shape[0]), [int(view)], batch_size, progress)
        # Rows were checked finite when written; reading a large memory map again would cost seconds.
        return FeatureSet(entry.item_ids, entry.read(int(view)), check_finite=False)

    def _entry(self, teacher: Teacher, data: BenchmarkData) -> CacheEntry:
        if not teacher.identity:
            raise TcsFewshotError(f"teacher '{teacher.name}' has no identity; features cannot be cached without one")
        key = (teacher.identity, content_fingerprint(data))
        if key not in self._entries:
            meta = {"teacher": teacher.name, "identity": teacher.identity, "config": teacher.config,
                    "pretraining": teacher.pretraining, "dataset": data.index.name, "fingerprint": key[1],
                    "index_fingerprint": data.index.fingerprint,
                    "n_items": len(data.index.item_ids), "feature_dim": int(teacher.feature_dim),
                    "views": RECIPE, "layout": LAYOUT_VERSION}
            self._entries[key] = CacheEntry(entry_path(self.root, *key), data.index.item_ids, meta)
        return self._entries[key]

    def _fill(self, teacher: Teacher, data: BenchmarkData, entry: CacheEntry, rows: np.ndarray,
              views: list[int], batch_size: int | None, progress: bool) -> None:
        stamps = file_stamps(data, entry, np.unique(rows))
        if not _missing(entry, rows, views) and not _changed(entry, stamps):
            return  # the common case: no lock, no torch
        with entry.writing():
            changed = _changed(entry, stamps)  # again under the lock: another process may have refreshed
            entry.replace_stamps(stamps, changed)
            todo = _missing(entry, rows, views)  # another process may have filled some while we waited
            if todo:
                self._extract(teacher, data, entry, todo, batch_size, progress)

    def _extract(self, teacher: Teacher, data: BenchmarkData, entry: CacheEntry,
                 todo: list[tuple[int, int]], batch_size: int | None, progress: bool) -> None:
        import torch

        model = teacher.model
        if model.training:  # batch norm would make a row depend on its batch-mates: not cacheable
            raise TcsFewshotError(f"teacher '{teacher.name}' is in training mode; call teacher.model.eval() first")
        parameter = next(model.parameters(), torch.empty(0))  # where and in what precision the teacher runs
        device, dtype = parameter.device, (parameter.dtype if parameter.is_floating_point() else torch.float32)
        # CNNs run about 1.5x faster in channels_last (measured on CPU; more on GPU); a ViT has one
        # convolution (its patch embedding) and gains nothing. Same weights, converted in place.
        channels_last = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1
        if channels_last:
            model.to(memory_format=torch.channels_last)
        size = batch_size or (64 if device.type == "cuda" else CPU_BATCH_SIZE)
        batches = [todo[start:start + size] for start in range(0, len(todo), size)]
        # One thread decodes and preprocesses the next batch while the teacher runs on this one
        # (PIL and torch release the GIL); only that thread calls data.load_image.
        with ThreadPoolExecutor(max_workers=1) as loader, torch.inference_mode(), \
                _progress_bar(progress, len(todo), f"teacher {teacher.name}") as advance:
            pending = loader.submit(_inputs, teacher, data, entry, batches[0])
            for k, batch in enumerate(batches):
                x = torch.stack(pending.result()).to(device, dtype)
                if k + 1 < len(batches):
                    pending = loader.submit(_inputs, teacher, data, entry, batches[k + 1])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                self._store(teacher, entry, batch, model(x).float().cpu().numpy())
                advance(len(batch))

    def _store(self, teacher: Teacher, entry: CacheEntry, batch: list[tuple[int, int]], values: np.ndarray) -> None:
        global _total_forward_passes
        self.forward_passes += len(batch)
        _total_forward_passes += len(batch)
        if values.shape != (len(batch), entry.shape[1]) or not np.isfinite(values).all():
            raise TcsFewshotError(f"teacher '{teacher.name}' returned {values.shape} features (finite: "
                                  f"{np.isfinite(values).all()}); expected ({len(batch)}, {entry.shape[1]}) finite")
        batch_rows, batch_views = np.array(batch).T
        for view in np.unique(batch_views):
            entry.write(int(view), batch_rows[batch_views == view], values[batch_views == view])


def content_fingerprint(data: BenchmarkData) -> str:
    """The index fingerprint, combined with the build record of an embedded benchmark (a rebuild is
    new data) and the image decoding of data read from files (``data.image_record``: decoder
    version, background, working size), so features of one background never serve another."""
    build = (data.manifest or {}).get("build")
    images = data.image_record
    if not build and not images:
        return data.index.fingerprint
    text = data.index.fingerprint
    if build:
        text += "\n" + json.dumps(build, sort_keys=True, default=str)
    if images:
        text += "\n" + json.dumps({"images": images}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_stamps(data: BenchmarkData, entry: CacheEntry, rows: np.ndarray) -> dict[int, str]:
    """row -> ``"size:mtime_ns"`` of the file behind each item (items held in memory have none)."""
    root = Path(data.root) if data.root is not None else None
    stamps = {}
    if root is None:
        return stamps
    for row in rows.tolist():
        try:
            status = os.stat(root / str(entry.item_ids[row]))
        except (OSError, ValueError):
            continue  # not a file under root: an in-memory item, covered by the build record
        stamps[int(row)] = f"{status.st_size}:{status.st_mtime_ns}"
    return stamps


def _changed(entry: CacheEntry, stamps: dict[int, str]) -> dict[int, str]:
    """row -> why its stored features are stale: filled from a file whose identity differs now."""
    if not stamps:
        return {}
    stored = entry.stored_stamps()
    filled = np.zeros(entry.shape[0], dtype=bool)
    for view in _views_on_disk(entry):
        filled |= entry.filled(view)
    reasons = {}
    for row, stamp in stamps.items():
        before = stored.get(str(entry.item_ids[row]))
        if filled[row] and before != stamp:
            reasons[row] = ("no file identity recorded (cached before identities were)" if before is None
                            else f"file changed (size:mtime_ns {before} -> {stamp})")
    return reasons


def _views_on_disk(entry: CacheEntry) -> list[int]:
    return sorted(int(path.stem.split("-")[1]) for path in entry.path.glob("view-*.npy"))


def _missing(entry: CacheEntry, rows: np.ndarray, views: list[int]) -> list[tuple[int, int]]:
    """Unfilled (row, view) pairs, by row then view, so an image's views share one load."""
    unique_rows = np.unique(rows)
    pairs = [(int(row), view) for view in dict.fromkeys(views) for row in unique_rows[~entry.filled(view)[unique_rows]]]
    return sorted(pairs)


def _inputs(teacher: Teacher, data: BenchmarkData, entry: CacheEntry, batch: list[tuple[int, int]]) -> list:
    """``(3, H, W)`` tensors of the batch's (row, view) pairs, each image decoded once."""
    images: dict[str, object] = {}
    tensors = []
    for row, view in batch:
        item_id = str(entry.item_ids[row])
        if item_id not in images:
            images[item_id] = data.load_image(item_id)
        tensors.append(teacher.transform(view_image(images[item_id], item_id, view)))
    return tensors


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
