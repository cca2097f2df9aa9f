"""On-disk storage of one (teacher identity, dataset fingerprint) pair of the feature cache.

Layout of an entry directory ``<root>/<sha256(identity)[:16]>/<fingerprint[:16]>-v<LAYOUT>/``::

    meta.json       teacher name, identity, config, pretraining; dataset name, fingerprint,
                    n_items; feature_dim; the view recipe (written once, atomically)
    view-0000.npy   (n_items, feature_dim) float32 features of view 0; row r is the r-th item id
    view-0001.npy   in sorted order (the order the fingerprint is defined in, so the same data
    ...             listed in another order shares the rows); one file per view, made on demand
    filled.sqlite   table filled(view, bits): a packed bitmap of the rows that hold features;
                    table stamps(item, stamp): the file identity (size, mtime_ns) each item's rows
                    were computed from; table invalidated(item, reason, at): rows dropped as stale
    lock            flock'ed by the one process extracting into this entry

Crash safety: a view file is created full-size under a temporary name and renamed into place.
Rows are written into the memory map and flushed to disk *before* their bits are set, in one
sqlite transaction (WAL), so a killed extraction never leaves a row marked filled that is not;
unmarked rows are recomputed later. Filled rows are never written again, so readers need no lock:
they read the bitmap (a consistent sqlite snapshot), then rows that cannot change under them.
Writers are serialised by ``flock`` (local file systems; not NFS).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError

LAYOUT_VERSION = 1  # bump when the layout or the view recipe changes: old entries are then ignored
META, BITMAP, LOCK = "meta.json", "filled.sqlite", "lock"


def entry_path(root: Path, identity: str, fingerprint: str) -> Path:
    """Directory of (teacher ``identity``, dataset ``fingerprint``); hashed, so any identity string is a safe name."""
    return root / hashlib.sha256(identity.encode()).hexdigest()[:16] / f"{fingerprint[:16]}-v{LAYOUT_VERSION}"


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk by the files under ``path`` (view files are sparse until filled)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def try_lock(path: Path) -> Any | None:
    """The entry's writer lock taken without waiting (an open file; close it to release), or None if busy."""
    lock = open(path / LOCK, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return lock
    except BlockingIOError:
        lock.close()
        return None


def read_bitmaps(path: Path) -> dict[int, np.ndarray]:
    """view -> packed uint8 bitmap of its filled rows, for the entry directory ``path`` (one snapshot)."""
    if not (path / BITMAP).exists():
        return {}
    query = "SELECT view, bits FROM filled"
    try:
        with contextlib.closing(sqlite3.connect(path / BITMAP, timeout=60)) as connection:
            found = connection.execute(query).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):  # a first writer is creating the file right now
            return {}
        if os.access(path, os.W_OK):
            raise
        # A read-only cache (shared copy) cannot hold WAL's -shm file; nobody writes to it, so
        # sqlite may read it as immutable.
        uri = f"file:{urllib.parse.quote(str(path / BITMAP))}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            found = connection.execute(query).fetchall()
    return {view: np.frombuffer(bits, dtype=np.uint8) for view, bits in found}


def invalidations(path: Path) -> tuple[int, str | None]:
    """(rows dropped as stale so far, the latest reason) for the entry directory ``path``."""
    if not (path / BITMAP).exists():
        return 0, None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(str(path / BITMAP))}?mode=ro",
                                                uri=True)) as connection:
            count, = connection.execute("SELECT COUNT(*) FROM invalidated").fetchone()
            latest = connection.execute("SELECT item, reason FROM invalidated ORDER BY rowid DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # no such table: an entry made before stamps existed
        return 0, None
    return int(count), (f"{latest[0]}: {latest[1]}" if latest else None)


def filled_counts(path: Path) -> dict[int, int]:
    """view -> number of filled rows, for the entry directory ``path``."""
    return {view: int(np.unpackbits(bits).sum()) for view, bits in sorted(read_bitmaps(path).items())}


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class CacheEntry:
    """One entry directory: the item order, which rows are filled, and the feature matrices.

    Args:
        path: The entry directory (created by the first writer).
        item_ids: ``(n_items,)`` the dataset's item ids (any order; rows follow sorted order).
        meta: What ``meta.json`` holds; an existing file must agree on identity, fingerprint,
            n_items and feature_dim.
    """

    def __init__(self, path: Path, item_ids: np.ndarray, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.item_ids = np.sort(np.asarray(item_ids, dtype=str))
        self.shape = (len(self.item_ids), int(meta["feature_dim"]))
        self._check_meta()

    def rows(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(len(item_ids),)`` int64 row of each id; raises for an id not in the dataset."""
        ids = np.asarray(item_ids, dtype=str)
        rows = np.minimum(np.searchsorted(self.item_ids, ids), len(self.item_ids) - 1)
        unknown = ids[self.item_ids[rows] != ids] if len(ids) else ids
        if len(unknown):
            raise TcsFewshotError(f"item '{unknown[0]}' is not in dataset '{self.meta['dataset']}'; ask for ids of its index")
        return rows.astype(np.int64)

    def filled(self, view: int) -> np.ndarray:
        """``(n_items,)`` bool: rows of ``view`` that hold features."""
        bits = read_bitmaps(self.path).get(view)
        if bits is None:
            return np.zeros(self.shape[0], dtype=bool)
        return np.unpackbits(bits, count=self.shape[0]).astype(bool)

    def read(self, view: int) -> np.ndarray:
        """``(n_items, feature_dim)`` read-only float32 memory map of ``view`` (rows valid where filled)."""
        return np.load(self._view_path(view), mmap_mode="r")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this entry's writer lock (blocks while another process extracts into it)."""
        while True:
            self.path.mkdir(parents=True, exist_ok=True)  # again: clear_cache may have removed it
            try:
                lock = open(self.path / LOCK, "a")
            except FileNotFoundError:  # clear_cache renamed the entry away just now
                continue
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _same_file(lock, self.path / LOCK):
                break
            lock.close()  # clear_cache removed the entry while we waited: lock the new one
        try:
            for stale in self.path.glob(".*.tmp"):  # half-made files of a killed writer
                stale.unlink(missing_ok=True)
            yield
        finally:
            lock.close()

    def write(self, view: int, rows: np.ndarray, values: np.ndarray) -> None:
        """Store ``(len(rows), feature_dim)`` ``values`` in ``rows`` of ``view``: data first, then bits."""
        self._write_meta()  # with the first rows, so a teacher that fails at once leaves no claim
        path = self._view_path(view)
        if not path.exists():
            temporary = self.path / f".{path.name}.{uuid.uuid4().hex}.tmp"
            blank = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=self.shape)
            del blank  # closes the map; the file is sparse (zeros), so this costs no disk yet
            os.replace(temporary, path)
        matrix = np.load(path, mmap_mode="r+")
        matrix[rows] = values
        matrix.flush()  # msync: the rows reach the disk before the bits that vouch for them
        del matrix
        self.mark_filled(view, rows)

    def mark_filled(self, view: int, rows: np.ndarray) -> None:
        """Set the bits of ``rows`` of ``view`` in one transaction."""
        with contextlib.closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            found = connection.execute("SELECT bits FROM filled WHERE view = ?", (view,)).fetchone()
            mask = np.zeros(self.shape[0], dtype=bool)
            if found:
                mask |= np.unpackbits(np.frombuffer(found[0], dtype=np.uint8), count=self.shape[0]).astype(bool)
            mask[rows] = True
            connection.execute("INSERT OR REPLACE INTO filled VALUES (?, ?)", (view, np.packbits(mask).tobytes()))
            connection.execute("COMMIT")

    def stored_stamps(self) -> dict[str, str]:
        """item id -> the file identity its rows were computed from (items with a file only)."""
        if not (self.path / BITMAP).exists():
            return {}
        uri = f"file:{urllib.parse.quote(str(self.path / BITMAP))}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=60)) as connection:
                return dict(connection.execute("SELECT item, stamp FROM stamps").fetchall())
        except sqlite3.OperationalError:  # no stamps table yet: an entry made before stamps existed
            return {}

    def replace_stamps(self, stamps: dict[int, str], reasons: dict[int, str]) -> None:
        """Record ``row -> stamp``; the ``reasons`` rows lose their filled bits in every view first.

        One transaction, under the writer lock, before the rows are recomputed: a stale row is
        never served, and a crash leaves it unfilled (recomputed later), never marked fresh.
        """
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with contextlib.closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            if reasons:
                drop = np.zeros(self.shape[0], dtype=bool)
                drop[list(reasons)] = True
                for view, bits in connection.execute("SELECT view, bits FROM filled").fetchall():
                    mask = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=self.shape[0]).astype(bool)
                    connection.execute("UPDATE filled SET bits = ? WHERE view = ?",
                                       (np.packbits(mask & ~drop).tobytes(), view))
                connection.executemany("INSERT INTO invalidated VALUES (?, ?, ?)",
                                       [(str(self.item_ids[row]), reason, now) for row, reason in reasons.items()])
            connection.executemany("INSERT OR REPLACE INTO stamps VALUES (?, ?)",
                                   [(str(self.item_ids[row]), stamp) for row, stamp in stamps.items()])
            connection.execute("COMMIT")

    def _view_path(self, view: int) -> Path:
        return self.path / f"view-{view:04d}.npy"

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path / BITMAP, timeout=60, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        # NORMAL: power loss may roll back the last commits (rows then recomputed), never the reverse.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("CREATE TABLE IF NOT EXISTS filled (view INTEGER PRIMARY KEY, bits BLOB NOT NULL)")
        connection.execute("CREATE TABLE IF NOT EXISTS stamps (item TEXT PRIMARY KEY, stamp TEXT NOT NULL)")
        connection.execute("CREATE TABLE IF NOT EXISTS invalidated (item TEXT, reason TEXT, at TEXT)")
        return connection

    def _write_meta(self) -> None:
        # Only under the writer lock: no other writer's temporary file is in flight.
        if not (self.path / META).exists():
            temporary = self.path / f".{META}.{uuid.uuid4().hex}.tmp"
            temporary.write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
            os.replace(temporary, self.path / META)

    def _check_meta(self) -> None:
        try:
            stored = json.loads((self.path / META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            raise TcsFewshotError(f"feature cache entry '{self.path}' has an unreadable {META} ({error}); "
                                  "run: tcs-fewshot cache clear") from None
        for key in ("identity", "fingerprint", "n_items", "feature_dim"):
            if stored.get(key) != self.meta[key]:
                raise TcsFewshotError(f"feature cache entry '{self.path}' holds {key}={stored.get(key)!r}, not "
                                      f"{self.meta[key]!r}; run: tcs-fewshot cache clear")
