"""Local dataset archives: refuse unsafe members, extract with torchvision, stage atomically.

Extraction itself is torchvision's (``torchvision.datasets.utils.extract_archive``), which
trusts its archive: tar members are written as they are named. So every member is checked
here first, and one unsafe member stops everything before a byte is written: an absolute
name, a ``..`` component or a drive (``C:x``), a symbolic or hard link, a device or fifo.
Archives are extracted into a hidden staging folder beside their target (same file system),
and only whole, checked entries are renamed into place (:func:`staging`, :func:`swap_in`).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tcs_fewshot.errors import TcsFewshotError

STAGING_PREFIX = ".tcs-prepare-"


def _unsafe_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return (parts[0] == "" and len(parts) > 1) or ".." in parts or ":" in parts[0]  # /x, a/../b, C:x


def _refuse(archive: Path, member: str, why: str) -> TcsFewshotError:
    return TcsFewshotError(
        f"archive '{archive}' has an unsafe member '{member}' ({why}); refusing to extract it: use the original archive"
    )


def checked_members(archive: Path) -> list[str]:
    """The member names of a tar (any compression) or zip, after refusing any unsafe member.

    Raises:
        TcsFewshotError: the file is neither a readable tar nor a zip, or a member is unsafe.
    """
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                infos = handle.infolist()
            for info in infos:
                if _unsafe_name(info.filename):
                    raise _refuse(archive, info.filename, "absolute path or '..'")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise _refuse(archive, info.filename, "a symbolic link")
            return [info.filename for info in infos]
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        reason = " ".join(str(error).split())  # tarfile lists one reason per compression, on several lines
        raise TcsFewshotError(
            f"cannot extract '{archive}' ({reason}); it is not a complete tar or zip: use a complete copy of the archive"
        ) from None
    for member in members:
        if _unsafe_name(member.name):
            raise _refuse(archive, member.name, "absolute path or '..'")
        if member.issym() or member.islnk():
            raise _refuse(archive, member.name, f"a link to '{member.linkname}'")
        if not (member.isfile() or member.isdir()):
            raise _refuse(archive, member.name, "a device, fifo or other special file")
    return [member.name for member in members]


def extract(archive: Path, destination: Path) -> list[str]:
    """Extract ``archive`` into ``destination`` with torchvision, once its members are checked.

    Returns the member names. torchvision picks the format from the name's suffix
    (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``).
    """
    from torchvision.datasets.utils import extract_archive

    names = checked_members(archive)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        extract_archive(str(archive), str(destination))
    except RuntimeError as error:  # torchvision: a suffix it does not know
        raise TcsFewshotError(
            f"cannot tell how to extract '{archive}' from its name ({' '.join(str(error).split())}); "
            "keep the archive's original name (.tar, .tar.gz, .tgz, .zip)"
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise TcsFewshotError(
            f"cannot extract '{archive}' ({' '.join(str(error).split())}); use a complete copy of the archive"
        ) from None
    return names


def md5_of(path: Path) -> str:
    """Hex md5 of a file (torchvision's ``calculate_md5``: what its dataset classes publish)."""
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(str(path))


@contextmanager
def staging(root: Path, benchmark: str) -> Iterator[Path]:
    """A fresh hidden folder inside ``root`` (same file system as the entries), removed on exit.

    Leftovers of a killed earlier prepare of ``benchmark`` are removed first.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(f"{STAGING_PREFIX}{benchmark}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{benchmark}-", dir=root))
    except OSError as error:
        raise TcsFewshotError(f"cannot write under '{root}' ({error.strerror}); choose another --root") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def swap_in(staged: Path, root: Path, entries: list[str]) -> None:
    """Rename each ``staged/entry`` to ``root/entry``, replacing an earlier one.

    Each rename is atomic; an entry being replaced is moved aside first (into ``staged``,
    deleted with it), so ``root/entry`` is always either the old or the new one, and
    nothing else in ``root`` is touched.
    """
    replaced = staged.parent / f"{staged.name}-replaced"
    replaced.mkdir()
    try:
        for entry in entries:
            target = root / entry
            if target.exists() or target.is_symlink():
                os.rename(target, replaced / entry)
            os.rename(staged / entry, target)
    finally:
        shutil.rmtree(replaced, ignore_errors=True)
