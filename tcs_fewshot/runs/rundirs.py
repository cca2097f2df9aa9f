"""Finding run directories: a run (``manifest.json`` + ``records.sqlite``) or a sweep of runs.

A *sweep directory* is a directory whose immediate subdirectories are run directories, as
``tcs-fewshot run --shots 1,5 --out DIR`` writes (one run per setting). Reports and
comparisons accept either and expand a sweep to its runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from tcs_fewshot.errors import RunDirectoryError

RUN_FILES = ("manifest.json", "records.sqlite")


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a run's ``manifest.json`` or ``records.sqlite``."""
    return any((Path(path) / name).is_file() for name in RUN_FILES)


def _natural_key(path: Path) -> list:
    """Sort key that puts ``shots2`` before ``shots10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def sweep_runs(path: str | os.PathLike) -> list[Path]:
    """The run directories directly inside ``path``, in natural name order (empty if none)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted((child for child in path.iterdir() if child.is_dir() and is_run_dir(child)), key=_natural_key)


def expand_runs(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """``(run directory, path given)`` for every run of the run and sweep directories ``paths``.

    In the order given, each run once (by resolved path); a sweep's runs in natural name order.

    Raises:
        RunDirectoryError: a path does not exist or is neither a run nor a sweep directory;
            or no path was given.
    """
    found: dict[Path, tuple[Path, Path]] = {}
    for given in paths:
        path = Path(given)
        if is_run_dir(path):
            runs = [path]
        else:
            runs = sweep_runs(path)
            if not runs:
                what = "does not exist" if not path.exists() else "holds no run directories"
                raise RunDirectoryError(
                    f"'{given}' is not a run directory (no manifest.json) nor a sweep of runs ({what}); "
                    "pass the --out of a run"
                )
        for run in runs:
            found.setdefault(run.resolve(), (run, path))
    if not found:
        raise RunDirectoryError("no run directory given; pass the --out of a run")
    return list(found.values())


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The run directories of the run and sweep directories ``paths`` (see :func:`expand_runs`)."""
    return [run for run, _ in expand_runs(paths)]


def unique_labels(paths: list[Path], min_parts: list[int] | None = None) -> list[str]:
    """Short distinct names: the last path components, as many as needed to tell paths apart.

    Args:
        min_parts: Per path, the fewest trailing components to use (default 1 each).
    """
    resolved = [Path(os.path.abspath(path)) for path in paths]
    parts = list(min_parts) if min_parts is not None else [1] * len(paths)

    def label(i: int) -> str:
        return "/".join(resolved[i].parts[-parts[i]:]).lstrip("/") or str(resolved[i])

    while True:
        labels = [label(i) for i in range(len(paths))]
        clashing = [i for i, name in enumerate(labels) if labels.count(name) > 1
                    and parts[i] < len(resolved[i].parts)]
        if not clashing:
            return labels
        for i in clashing:
            parts[i] += 1
