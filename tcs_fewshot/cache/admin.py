"""Listing and deleting feature cache entries (``tcs-fewshot cache info`` and ``cache clear``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from tcs_fewshot.data.benchmarks.base import data_home
from tcs_fewshot.cache.store import META, disk_bytes, filled_counts, invalidations, try_lock


def default_root() -> Path:
    """Where the feature cache lives by default: ``<data_home()>/features``."""
    return data_home() / "features"


def _entries(root: Path) -> Iterator[tuple[Path, dict | None]]:
    """Entry directories with their meta.json: ``None`` if absent (nothing stored yet), ``{}`` if unreadable."""
    for path in sorted(p for p in root.glob("*/*") if p.is_dir() and not p.parent.name.startswith(".")):
        try:
            yield path, json.loads((path / META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            yield path, None
        except (OSError, ValueError):
            yield path, {}


def cache_info(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per (teacher, dataset) entry: teacher, dataset, items, items_filled (view 0),
    views (with any row filled), rows_filled, feature_dim, size_mb (allocated on disk), identity,
    fingerprint, path, invalidated (items whose rows were dropped because their file changed)
    and last_invalidated (the latest such item and why)."""
    rows = []
    for path, meta in _entries(Path(root) if root is not None else default_root()):
        if meta is None:
            continue
        counts = filled_counts(path)
        n_invalidated, latest = invalidations(path)
        rows.append({"teacher": meta.get("teacher"), "dataset": meta.get("dataset"), "items": meta.get("n_items"),
                     "items_filled": counts.get(0, 0), "views": sum(1 for n in counts.values() if n),
                     "rows_filled": sum(counts.values()), "feature_dim": meta.get("feature_dim"),
                     "size_mb": disk_bytes(path) / 2**20, "identity": meta.get("identity"),
                     "fingerprint": meta.get("fingerprint"), "path": str(path),
                     "invalidated": n_invalidated, "last_invalidated": latest})
    columns = ["teacher", "dataset", "items", "items_filled", "views", "rows_filled", "feature_dim", "size_mb",
               "identity", "fingerprint", "path", "invalidated", "last_invalidated"]
    return pd.DataFrame(rows, columns=columns)


def clear_cache(root: str | os.PathLike | None = None, teacher: str | None = None) -> int:
    """Delete cached features (all, or of the teacher with this name or identity); returns bytes freed.

    An entry that a process is extracting into is skipped with a warning. Each entry is renamed
    away before deletion, so a reader sees it whole or not at all.
    """
    root = Path(root) if root is not None else default_root()
    freed = 0
    for trash in root.glob(".trash-*"):  # left by a clear that was killed mid-way
        freed += disk_bytes(trash)
        shutil.rmtree(trash, ignore_errors=True)
    for path, meta in list(_entries(root)):
        if teacher is not None and teacher not in ((meta or {}).get("teacher"), (meta or {}).get("identity")):
            continue
        lock = try_lock(path)
        if lock is None:
            warnings.warn(f"feature cache entry '{path}' is being written by another process; not cleared", stacklevel=2)
            continue
        with lock:
            size = disk_bytes(path)
            trash = root / f".trash-{uuid.uuid4().hex}"
            os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        freed += size
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the teacher's directory, once its last dataset is gone
    return freed
