"""Crash-safe records store: one sqlite row per (task, method), one transaction per task.

sqlite commits atomically (write-ahead log), so a process killed at any moment leaves every finished
task's rows and none of the task in flight; a re-run skips what is stored.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from tcs_fewshot.errors import RunDirectoryError

FORMAT = "tcs-fewshot/records"
VERSION = 3  # 2: teacher_forward_passes; 3: memory_measure

# (name, sqlite type); the order is the column order of records DataFrames.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("dataset", "TEXT"),
    ("protocol", "TEXT"),
    ("split", "TEXT"),
    ("ways", "INTEGER"),
    ("shots", "INTEGER"),
    ("queries", "INTEGER"),
    ("seed", "INTEGER"),
    ("task_index", "INTEGER NOT NULL"),
    ("task_checksum", "TEXT NOT NULL"),
    ("method", "TEXT NOT NULL"),
    ("accuracy", "REAL"),
    ("n_correct", "INTEGER"),
    ("n_query", "INTEGER"),
    ("fit_seconds", "REAL"),
    ("predict_seconds", "REAL"),
    # MiB over fit+predict; memory_measure names what: cpu_rss_growth or cuda_peak_allocated.
    ("peak_memory_mb", "REAL"),
    ("memory_measure", "TEXT"),
    # Teacher image-view evaluations the method consumed for this task (from the cache or not);
    # NULL for methods that do not report it.
    ("teacher_forward_passes", "INTEGER"),
    ("failure", "TEXT"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        connection.execute("SELECT 1 FROM meta LIMIT 1")
        return connection
    except sqlite3.OperationalError:
        # A read-only directory cannot hold WAL's shared-memory file; immutable mode needs none
        # (and there is no writer to miss in a directory nobody can write to).
        connection.close()
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


class RecordStore:
    """Records of one run directory in ``records.sqlite``.

    Raises:
        RunDirectoryError: the file exists but is damaged or not a tcs-fewshot store.
    """

    def __init__(self, path: str | os.PathLike, identity: str | None = None, read_only: bool = False) -> None:
        """Open or create the store.

        Args:
            identity: The run's identity hash (see ``manifest_identity``); a store made for
                another run is refused rather than mixed with this one.
            read_only: Open for reading only (reports on a read-only copy of a run).
        """
        self.path = Path(path)
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            if read_only:
                self.connection = _connect_read_only(self.path)
                self._check_format()
                return
            self.connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            # WAL commits survive a killed process; NORMAL sync risks only the last commits on
            # power loss, never corruption, and is about 5x faster per task than FULL.
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            if existed:
                self._check_format(identity)
            else:
                self._create(identity)
        except sqlite3.DatabaseError as error:
            raise RunDirectoryError(
                f"'{self.path}' is not a readable records store ({error}); move it away or use another --out"
            ) from None

    def _create(self, identity: str | None) -> None:
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        with self.connection:
            self.connection.execute("BEGIN")
            self.connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            self.connection.execute(
                "INSERT INTO meta VALUES ('format', ?), ('version', ?), ('run_identity', ?)",
                (FORMAT, str(VERSION), identity),
            )
            self.connection.execute(f"CREATE TABLE records ({columns}, PRIMARY KEY (task_index, method))")

    def _check_format(self, identity: str | None = None) -> None:
        try:
            meta = dict(self.connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            meta = {}
        if meta.get("format") != FORMAT:
            raise RunDirectoryError(f"'{self.path}' is not a tcs-fewshot records store; move it away or use another --out")
        if meta.get("version") != str(VERSION):
            raise RunDirectoryError(
                f"records store '{self.path}' has version {meta.get('version')}; this toolkit reads {VERSION}: "
                "re-run into a new --out"
            )
        if identity is not None and meta.get("run_identity") != identity:
            raise RunDirectoryError(
                f"records store '{self.path}' belongs to another run than its manifest.json describes; "
                "use another --out"
            )

    def rows(self) -> list[dict]:
        """Every stored row as a dict of plain Python values."""
        cursor = self.connection.execute(f"SELECT {', '.join(COLUMN_NAMES)} FROM records ORDER BY task_index, method")
        return [dict(zip(COLUMN_NAMES, values)) for values in cursor]

    def add(self, rows: Iterable[Mapping]) -> None:
        """Insert the rows of one task atomically."""
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        values = [tuple(row.get(name) for name in COLUMN_NAMES) for row in rows]
        with self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany(f"INSERT INTO records VALUES ({placeholders})", values)

    def records(self) -> pd.DataFrame:
        """All rows, ordered by task then method."""
        return pd.read_sql_query(
            f"SELECT {', '.join(COLUMN_NAMES)} FROM records ORDER BY task_index, method", self.connection
        )

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def records_frame(rows: list[Mapping]) -> pd.DataFrame:
    """Rows as a DataFrame with the store's columns, ordered by task then method."""
    frame = pd.DataFrame(rows, columns=list(COLUMN_NAMES))
    return frame.sort_values(["task_index", "method"], kind="stable").reset_index(drop=True)


def load_records(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The records of a run directory, for reports and comparisons."""
    path = Path(run_dir) / "records.sqlite"
    if not path.is_file():
        raise RunDirectoryError(f"'{run_dir}' is not a run directory (no records.sqlite); pass the --out of a run")
    with RecordStore(path, read_only=True) as store:
        return store.records()
