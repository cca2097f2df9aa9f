"""Building an embedded benchmark's cache folder (``emoji``, ``glyphs``) safely.

A build is written into a temporary sibling folder ``.<name>.building-<pid>-<host>-<hex>`` and
renamed into place when complete, so a reader never sees half a build, a failed build leaves
the old one as it was, and of two processes building the same thing the first to finish wins.
Every finished build holds ``build.json``; a folder without it is never replaced or deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tcs_fewshot.errors import TcsFewshotError

BUILD_FILE = "build.json"


def unwritable(target: Path, benchmark: str) -> str | None:
    """One line saying why a build of ``benchmark`` cannot be written to ``target``; None if it can.

    Builds are written next to ``target``, so this creates and removes an empty folder in the
    nearest existing folder above it: permissions, read-only mounts and a file in the way all fail.
    """
    folder = Path(target).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        Path(tempfile.mkdtemp(prefix=".tcs-fewshot-probe-", dir=folder)).rmdir()
    except OSError as error:
        return (f"cannot write the {benchmark} cache under '{folder}' ({error.strerror or error}); "
                "set TCS_FEWSHOT_DATA or --root to a writable directory")
    return None


@contextmanager
def building(target: Path, benchmark: str, finished: Callable[[Path], bool]) -> Iterator[Path]:
    """An empty temporary folder next to ``target`` to build into, moved to ``target`` on success.

    Before yielding it: a one-line error if ``target``'s folder cannot be written, or if
    ``target`` is a non-empty directory without ``build.json``; leftovers of killed builds
    (``.<target name>.building-<pid>-*`` of processes no longer running on this host) are
    removed. On success the folder replaces ``target`` (an older or damaged build) unless
    ``finished(target)``: another process has put the same build there first. On failure it is
    removed and ``target`` is left as it was.
    """
    target = Path(target)
    problem = unwritable(target, benchmark)
    if problem:
        raise TcsFewshotError(problem)
    if target.is_dir() and not (target / BUILD_FILE).exists() and any(target.iterdir()):
        article = "an" if benchmark[0] in "aeiou" else "a"
        raise TcsFewshotError(f"'{target}' holds files that are not {article} {benchmark} build; "
                              f"give an empty or new --root for the {benchmark} cache")
    remove_stale(target)
    temporary = target.parent / _sibling_name(target, "building")
    try:
        temporary.mkdir(parents=True)
    except OSError as error:
        raise TcsFewshotError(f"cannot create the {benchmark} cache next to '{target}' ({error.strerror}); "
                              "set TCS_FEWSHOT_DATA to a writable directory") from None
    try:
        yield temporary
        if not finished(target):
            _swap(temporary, target, finished)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def remove_stale(target: Path) -> list[Path]:
    """Delete the temporary siblings of ``target`` left by killed builds on this host; returns them.

    Those are ``.<name>.building-<pid>[-<host>]-<8 hex>`` and ``.<name>.old-...`` folders whose
    ``pid`` is no running process here; other hosts' builds (a shared file system) are left.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:building|old)-(\d+)-(?:(.*)-)?[0-9a-f]{{8}}")
    removed = []
    with suppress(OSError):
        for sibling in target.parent.iterdir():
            match = pattern.fullmatch(sibling.name)
            if match and match[2] in (None, socket.gethostname()) and not _alive(int(match[1])):
                shutil.rmtree(sibling, ignore_errors=True)
                removed.append(sibling)
    return removed


def _sibling_name(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _swap(temporary: Path, target: Path, finished: Callable[[Path], bool]) -> None:
    old = target.parent / _sibling_name(target, "old")
    with suppress(FileNotFoundError):
        os.rename(target, old)
    try:
        os.rename(temporary, target)
    except OSError:
        if not finished(target):  # else another process finished the same build meanwhile
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # there os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # PermissionError: another user's process
    return True


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr over ``total`` steps; yields ``step(n=1, description=None)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1, description=None: bar.update(
            task, advance=n, **({"description": description} if description else {})
        )
