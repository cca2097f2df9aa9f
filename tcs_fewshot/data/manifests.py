"""Benchmark manifests: the classes of each split, where the lists come from, what to expect on disk.

One JSON file per benchmark and split scheme, ``data_manifests/<benchmark>/<scheme>.json`` in
the repository, installed as the package data ``tcs_fewshot.manifests``. They are written by
:mod:`data_manifests.build.splits` from the published split files, never by hand.

Keys: ``format`` (``"tcs-fewshot/manifest"``), ``version`` (1), ``benchmark``, ``scheme``,
``title``, ``citation``, ``provenance`` (source files with repository, commit, licence, sha256),
``class_id`` (what a class id looks like on disk), ``splits`` (split -> class ids),
``image_split`` (``None`` or a description of an official per-image train/test split),
``expected`` (``classes``, ``images`` and ``images_per_class``, the last two possibly ``None``),
``pretraining_overlap`` (datasets a pretrained teacher may have seen), ``checksum`` (see
:func:`manifest_checksum`). Some add: ``class_names`` (miniImageNet wnid -> WordNet words),
``superclasses`` (class -> superclass: tieredImageNet, CIFAR-FS, FC100), ``superclass_names``
(tieredImageNet), ``superclass_splits`` (FC100), ``alphabets`` (Omniglot alphabet -> Lake zip),
``rule`` (CUB chen), ``protocol`` (CUB official), ``dataset_citation``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcs_fewshot.errors import TcsFewshotError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

FORMAT = "tcs-fewshot/manifest"
VERSION = 1
PACKAGE = "tcs_fewshot.manifests"
REBUILD = "rebuild it with: python -m data_manifests.build.splits SPLITS_DIR"


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``splits`` and ``image_split``: what a result depends on."""
    content = {"splits": manifest.get("splits"), "image_split": manifest.get("image_split")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _root() -> Traversable:
    try:
        return resources.files(PACKAGE)
    except ModuleNotFoundError:
        # A source checkout whose package link (tcs_fewshot/manifests) is missing, e.g. on a
        # file system without symlinks: read the repository's own directory.
        return Path(__file__).resolve().parents[2] / "data_manifests"


def list_manifests() -> list[tuple[str, str]]:
    """Every ``(benchmark, scheme)`` that has a manifest, sorted."""
    root = _root()
    if not root.is_dir():
        return []
    return sorted(
        (folder.name, file.name[: -len(".json")])
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(("_", ".")) and folder.name != "sources"
        for file in folder.iterdir()
        if file.name.endswith(".json")
    )


def parse_manifest(text: str, name: str) -> dict[str, Any]:
    """Validate the JSON ``text`` of a manifest; ``name`` (a path) is used in error messages."""
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise TcsFewshotError(
            f"manifest '{name}' is not valid JSON ({error.msg}, line {error.lineno}); {REBUILD}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TcsFewshotError(f"'{name}' is not a tcs-fewshot manifest (no format '{FORMAT}'); {REBUILD}")
    if manifest.get("version") != VERSION:
        raise TcsFewshotError(
            f"manifest '{name}' has version {manifest.get('version')!r}, this tcs-fewshot reads version "
            f"{VERSION}; upgrade tcs-fewshot or rebuild the manifest"
        )
    if not isinstance(manifest.get("splits"), dict) or not manifest["splits"]:
        raise TcsFewshotError(f"manifest '{name}' has no splits; {REBUILD}")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise TcsFewshotError(
            f"manifest '{name}' was modified: its checksum does not match its splits; "
            f"restore the file from the package or {REBUILD}"
        )
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate the manifest file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TcsFewshotError(f"cannot read manifest '{path}' ({error.strerror}); {REBUILD}") from None
    return parse_manifest(text, str(path))


def load_manifest(benchmark: str, scheme: str) -> dict[str, Any]:
    """The validated manifest of ``benchmark`` under split ``scheme`` (a fresh dict on each call)."""
    available = list_manifests()
    if (benchmark, scheme) not in available:
        benchmarks = sorted({b for b, _ in available})
        if benchmark not in benchmarks:
            raise TcsFewshotError(
                f"no manifest for benchmark '{benchmark}'; manifests exist for: {', '.join(benchmarks) or 'none'}"
            )
        schemes = [s for b, s in available if b == benchmark]
        raise TcsFewshotError(
            f"benchmark '{benchmark}' has no split scheme '{scheme}'; choose one of: {', '.join(schemes)}"
        )
    resource = _root() / benchmark / f"{scheme}.json"
    manifest = parse_manifest(resource.read_text(encoding="utf-8"), str(resource))
    if (manifest.get("benchmark"), manifest.get("scheme")) != (benchmark, scheme):
        raise TcsFewshotError(
            f"manifest '{resource}' describes {manifest.get('benchmark')}/{manifest.get('scheme')}, "
            f"not {benchmark}/{scheme}; {REBUILD}"
        )
    return manifest
