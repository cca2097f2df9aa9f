"""Helpers the file-based adapters share: finding the root, scanning class folders,
loading trusted pickles, and turning what was found into a :class:`BenchmarkData`.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.data.benchmarks.base import (
    BenchmarkData,
    CheckReport,
    compare_counts,
    check_images,
)
from tcs_fewshot.data.images import ImageLoader, ImageOptions
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.manifests import load_manifest
from tcs_fewshot.errors import TcsFewshotError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def require_root(root: str | os.PathLike, what: str) -> Path:
    """``root`` as a Path; a one-line error naming ``what`` belongs there if it is not a directory."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise TcsFewshotError(f"data root '{path}' does not exist or is not a directory; put {what} there")
    return path


def choose_scheme(schemes: Sequence[str], scheme: str | None, benchmark: str) -> str:
    """``scheme`` if the adapter offers it, else the default (first) scheme when ``None``."""
    if scheme is None:
        return schemes[0]
    if scheme not in schemes:
        raise TcsFewshotError(f"benchmark '{benchmark}' has no split scheme '{scheme}'; choose from: {', '.join(schemes)}")
    return scheme


def list_images(directory: Path) -> list[Path]:
    """Image files directly in ``directory`` (by suffix, hidden files skipped), sorted by name."""
    return sorted(
        p for p in directory.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def class_folders(directory: Path) -> dict[str, list[Path]]:
    """Subfolder name -> its images, for every visible subfolder of ``directory`` (empty ones too)."""
    return {
        folder.name: list_images(folder)
        for folder in sorted(directory.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }


def manifest_classes(manifest: Mapping[str, Any]) -> set[str]:
    """Every class id of the manifest's splits."""
    return {c for classes in manifest["splits"].values() for c in classes}


def file_loader(root: Path) -> ImageLoader:
    """item id (a path relative to ``root``) -> RGB PIL image, read when called (default
    :class:`ImageOptions`; ``BenchmarkData.with_images`` sets others)."""
    return ImageLoader(root)


def memory_loader(arrays: Mapping[str, np.ndarray]) -> Callable[[str], Any]:
    """item id ``"<part>/.../<row>"`` -> RGB PIL image of row ``row`` of ``arrays[part]``.

    Each array is ``(n, height, width, 3)`` uint8; only the first and last path parts are used.
    """
    from PIL import Image

    def load(item_id: str) -> Any:
        part, *_, row = item_id.split("/")
        try:
            return Image.fromarray(arrays[part][int(row)]).convert("RGB")
        except (KeyError, ValueError, IndexError):
            raise TcsFewshotError(f"no image '{item_id}' in the loaded arrays; the item id comes from other data") from None

    return load


@dataclass
class Found:
    """What an adapter's scan of a root found, shared by its ``check`` and ``load``.

    Attributes:
        item_ids: Item ids (relative paths, or ``<part>/.../<row>`` for in-memory arrays).
        labels: Class id of each item.
        loader: item id -> RGB PIL image.
        counts: class id -> number of images, empty classes included (as 0).
        problems: Structural problems (a missing part, a CSV row naming a missing file):
            ``check`` lists them, ``load`` refuses to go on.
        paths: Image files whose integrity ``check`` verifies (none for in-memory data).
        split_of: class id -> the split the data on disk puts it in, when the layout has one.
        facts: Extra facts for the check report (``layout``, ...).
    """

    item_ids: list[str]
    labels: list[str]
    loader: Callable[[str], Any] | None  # None only while an in-memory scan is filling its arrays
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    split_of: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def add_class_folders(found: Found, directory: Path, root: Path, split: str | None = None) -> None:
    """Add the images of every class folder under ``directory`` to ``found`` (ids relative to ``root``)."""
    for class_id, images in class_folders(directory).items():
        found.counts[class_id] = found.counts.get(class_id, 0) + len(images)
        found.item_ids += [path.relative_to(root).as_posix() for path in images]
        found.labels += [class_id] * len(images)
        found.paths += images
        if split is not None:
            found.split_of[class_id] = split


def scan_split_folders(root: Path, splits: Sequence[str], source: str) -> Found:
    """``root/<split>/<class>/<images>``: a missing split folder is a problem naming ``source``."""
    found = Found([], [], file_loader(root), {}, facts={"layout": "split_folders"})
    for split in splits:
        if (root / split).is_dir():
            add_class_folders(found, root / split, root, split)
        else:
            found.problems.append(f"'{root / split}' is missing; take the {split} classes from {source}")
    return found


def check_found(
    report: CheckReport, scan: Callable[[], Found], manifest: Mapping[str, Any], what: str,
    images: ImageOptions | None = None,
    verify_images: bool = True,
) -> CheckReport:
    """Fill ``report``: root, layout (``scan`` raising), counts vs ``manifest``, split, and
    (``verify_images``) every image decoded by ``images`` (problems for files that would not
    load, notes for odd modes)."""
    if not report.root.is_dir():
        report.problems.append(f"data root '{report.root}' does not exist or is not a directory; put {what} there")
        return report
    try:
        found = scan()
    except TcsFewshotError as error:
        report.problems.append(str(error))
        return report
    report.facts.update(found.facts)
    report.problems.extend(found.problems)
    compare_counts(found.counts, manifest, report)
    manifest_split = {c: split for split, classes in manifest["splits"].items() for c in classes}
    moved = [c for c, split in sorted(found.split_of.items()) if manifest_split.get(c, split) != split]
    if moved:
        report.problems.append(
            f"{len(moved)} class(es) sit in another split on disk than in the manifest, first '{moved[0]}' "
            f"in '{found.split_of[moved[0]]}' (manifest: '{manifest_split[moved[0]]}'); the data uses another split"
        )
    extra = sorted(set(found.counts) - manifest_classes(manifest))
    if extra:
        report.facts["classes_not_in_manifest"] = len(extra)
    if verify_images:
        check_images(report, found.paths, images)
    return report


def load_found(found: Found, manifest: Mapping[str, Any], scheme: str, root: Path, name: str) -> BenchmarkData:
    """The :class:`BenchmarkData` of a scan, split as the manifest says.

    Raises a one-line error if the scan found structural problems or a manifest class has no
    items. Items of classes outside the manifest are dropped: a root may hold more than the
    benchmark (a full ImageNet tree under tieredImageNet), and those must not enter tasks.
    """
    check_hint = f"run: tcs-fewshot data check {name} --root {root}"
    if found.problems:
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        raise TcsFewshotError(f"{found.problems[0]}{more}; {check_hint}")
    present = set(found.labels)
    absent = [c for classes in manifest["splits"].values() for c in classes if c not in present]
    if absent:
        raise TcsFewshotError(
            f"{len(absent)} class(es) of the {name} manifest have no images under '{root}', "
            f"first '{absent[0]}'; {check_hint}"
        )
    wanted = manifest_classes(manifest)
    keep = [k for k, label in enumerate(found.labels) if label in wanted]
    index = LabelIndex.from_items(
        [found.item_ids[k] for k in keep], [found.labels[k] for k in keep], manifest["splits"], name=name
    )
    return BenchmarkData(index=index, scheme=scheme, load_image=found.loader, root=root, manifest=dict(manifest))


# Pickle can run arbitrary code while loading. The pickles read here (learn2learn's
# miniImageNet cache, the CIFAR-100 archive) hold only dicts, lists, strings and numpy
# arrays, so the unpickler below refuses every other global: a tampered file fails with an
# error instead of running code. Users should still only load files from a source they trust.
class ScannedBenchmark:
    """``check`` and ``load`` for adapters whose files one ``scan(root) -> Found`` describes.

    Subclasses set ``name``, ``schemes``, ``description``, ``source`` and implement ``scan``.
    """

    name: str
    schemes: tuple[str, ...]
    description: str
    source: str

    def scan(self, root: Path) -> Found:
        raise NotImplementedError

    def check(self, root: str | os.PathLike, images: ImageOptions | None = None, verify_images: bool = True,
              scheme: str | None = None) -> CheckReport:
        """Layout and counts against the default scheme's manifest, and (``verify_images``) every image decoded by ``images``.

        Every scheme splits the same files, so ``scheme`` does not change what is checked.
        """
        root = Path(root).expanduser()
        manifest = load_manifest(self.name, self.schemes[0])
        return check_found(CheckReport(self.name, root), lambda: self.scan(root), manifest, self.source, images,
                           verify_images)

    def load(self, root: str | os.PathLike, scheme: str | None = None) -> BenchmarkData:
        """Items of the manifest's classes, split as ``scheme`` says (default: the first)."""
        scheme = choose_scheme(self.schemes, scheme, self.name)
        root = require_root(root, self.source)
        return load_found(self.scan(root), load_manifest(self.name, scheme), scheme, root, self.name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.int64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed = {("collections", "OrderedDict"): collections.OrderedDict, ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _DataUnpickler(pickle.Unpickler):
    allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a data file never needs")
        return self.allowed[(module, name)]


def load_data_pickle(path: Path, encoding: str = "ASCII") -> Any:
    """Unpickle a data file that should hold only containers and numpy arrays.

    Args:
        path: The pickle; only call this for a file whose name is the documented one.
        encoding: ``"bytes"`` for Python 2 pickles (the CIFAR-100 archive).
    """
    try:
        with open(path, "rb") as handle:
            return _DataUnpickler(handle, encoding=encoding).load()
    except FileNotFoundError:
        raise TcsFewshotError(f"'{path}' is missing") from None
    except Exception as error:  # a damaged pickle raises many types
        raise TcsFewshotError(
            f"'{path}' is not a readable data pickle ({type(error).__name__}: {error}); "
            "restore it from the original archive"
        ) from None
