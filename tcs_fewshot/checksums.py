"""The one file checksum of the package: sha256 hex, computed once per file version and process."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_SHA256: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of a file, memoised per (resolved path, inode, size, mtime), so a changed file is hashed again."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with path.open("rb") as handle:  # 1 MiB at a time (hashlib.file_digest needs Python 3.11)
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]
