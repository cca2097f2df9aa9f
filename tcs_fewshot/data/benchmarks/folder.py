"""A user's own images as a few-shot benchmark: an ImageFolder tree or a CSV of ``path,label``.

- Tree: ``root/<class>/<images>``; item ids are ``<class>/<file>``.
- CSV: ``root`` is the CSV file, one ``path,label`` row per image (an optional header row
  ``path,label``); paths are relative to the CSV's folder and are the item ids.

Classes are split either by a JSON split file ``{"train": [...], "val": [...], "test": [...]}``
or, without one, by a seeded rule that is recorded with the data: sort the classes that have
images, permute them with ``numpy.random.default_rng(seed).permutation``, and give the first
``round(fractions[0] * n)`` to train, the next ``round(fractions[1] * n)`` to val, the rest to test.
There is no manifest: ``check`` reports facts, and problems for empty classes, corrupt images,
unreadable CSV rows and split-file classes that are not on disk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.data.benchmarks.base import BenchmarkData, CheckReport, check_images
from tcs_fewshot.data.benchmarks.scan import (
    Found,
    add_class_folders,
    choose_scheme,
    file_loader,
)
from tcs_fewshot.data.images import ImageOptions
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError

SEEDED_RULE = "sorted classes permuted by numpy.random.default_rng(seed).permutation, cut by fractions"


def _scan_csv(path: Path) -> Found:
    found = Found([], [], file_loader(path.parent), {}, facts={"layout": "csv"})
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows: list[list[str] | None] = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise TcsFewshotError(f"'{path}' is not a UTF-8 CSV of path,label ({error})") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["path", "label"]:
        rows[0] = None  # the header
    bad: list[tuple[int, str]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=1):
        if row is None or not any(cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            bad.append((line, "not 'path,label'"))
            continue
        item_id, label = Path(row[0].strip()).as_posix(), row[1].strip()
        if not (path.parent / item_id).is_file():
            bad.append((line, f"no file '{path.parent / item_id}'"))
        elif item_id in seen:
            bad.append((line, f"'{item_id}' listed again"))
        else:
            seen.add(item_id)
            found.item_ids.append(item_id)
            found.labels.append(label)
            found.paths.append(path.parent / item_id)
            found.counts[label] = found.counts.get(label, 0) + 1
    if bad:
        found.problems.append(
            f"{len(bad)} unreadable row(s) in '{path}', first line {bad[0][0]} ({bad[0][1]}); fix or remove them"
        )
    elif not found.item_ids:
        found.problems.append(f"'{path}' lists no images; write one 'path,label' row per image")
    return found


def _scan(root: Path) -> Found:
    if root.is_file():
        return _scan_csv(root)
    if not root.is_dir():
        raise TcsFewshotError(f"'{root}' does not exist; give an image folder root/<class>/<images> or a CSV of path,label")
    found = Found([], [], file_loader(root), {}, facts={"layout": "image_folder"})
    add_class_folders(found, root, root)
    if not found.counts:
        raise TcsFewshotError(f"'{root}' has no class folders; expected root/<class>/<images> or a CSV of path,label")
    return found


class ImageFolderBenchmark:
    """Your own data; see the module docstring. ``scheme`` is always ``custom``.

    Args:
        root: The ImageFolder root or the CSV file.
        split_file: JSON ``{split: [class, ...]}``; ``None`` splits the classes by ``seed``.
        seed: Seed of the class split when there is no split file.
        fractions: Shares of the classes for train, val and test (non-negative, sum 1).
        name: Dataset name recorded with results (default: the root's name).
    """

    schemes = ("custom",)
    description = "your own images: an ImageFolder tree or a CSV of path,label"
    source = "your own data"

    def __init__(self, root: str | os.PathLike, split_file: str | os.PathLike | None = None, seed: int = 0,
                 fractions: Sequence[float] = (0.64, 0.16, 0.2), name: str | None = None) -> None:
        self.root = Path(root).expanduser()
        self.split_file = None if split_file is None else Path(split_file).expanduser()
        self.seed = int(seed)
        self.fractions = tuple(float(f) for f in fractions)
        if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6:
            raise TcsFewshotError(f"fractions must be three non-negative shares summing to 1, got {fractions}")
        if self.seed < 0:
            raise TcsFewshotError(f"seed must be a non-negative integer, got {seed}")
        self.name = name or self.root.stem

    def splits(self, classes: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """The class splits of ``classes`` (those with images) and the record of how they were made."""
        if self.split_file is not None:
            return self._split_file_splits(set(classes))
        ordered = sorted(classes)
        permuted = [ordered[k] for k in np.random.default_rng(self.seed).permutation(len(ordered))]
        n_train = round(self.fractions[0] * len(ordered))
        n_val = min(round(self.fractions[1] * len(ordered)), len(ordered) - n_train)
        cuts = {"train": permuted[:n_train], "val": permuted[n_train:n_train + n_val], "test": permuted[n_train + n_val:]}
        record = {"rule": SEEDED_RULE, "seed": self.seed, "fractions": list(self.fractions)}
        return {split: sorted(members) for split, members in cuts.items()}, record

    def _split_file_splits(self, present: set[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
        path = self.split_file
        try:
            raw = path.read_bytes()
            splits = json.loads(raw)
        except (OSError, ValueError) as error:
            raise TcsFewshotError(f"split file '{path}' is not readable JSON ({error})") from None
        if not isinstance(splits, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in splits.values()
        ):
            raise TcsFewshotError(f"split file '{path}' must be a JSON object {{\"train\": [class, ...], ...}}")
        listed = [c for members in splits.values() for c in members]
        repeated = sorted(c for c, n in Counter(listed).items() if n > 1)
        if repeated:
            raise TcsFewshotError(
                f"split file '{path}' lists class '{repeated[0]}' more than once; a class belongs to one split"
            )
        absent = [c for c in listed if c not in present]
        if absent:
            raise TcsFewshotError(
                f"split file '{path}' names {len(absent)} class(es) with no images on disk, first '{absent[0]}'; "
                "fix the split file or add the images"
            )
        return splits, {"rule": "split file", "file": str(path), "sha256": hashlib.sha256(raw).hexdigest()}

    def check(self, root: str | os.PathLike | None = None, images: ImageOptions | None = None,
              verify_images: bool = True, scheme: str | None = None) -> CheckReport:
        """Layout, CSV rows, empty classes, (``verify_images``) every image decoded by ``images``, and the split.

        ``scheme`` does not apply: a folder has one (its split file or the seeded rule).
        """
        root = self.root if root is None else Path(root).expanduser()
        report = CheckReport(self.name, root)
        try:
            found = _scan(root)
        except TcsFewshotError as error:
            report.problems.append(str(error))
            return report
        report.problems.extend(found.problems)
        empty = sorted(c for c, n in found.counts.items() if n == 0)
        if empty:
            report.problems.append(
                f"{len(empty)} class folder(s) have no images, first '{root / empty[0]}'; add images or remove it"
            )
        if verify_images:
            check_images(report, found.paths, images)
        report.facts.update(found.facts, classes=len(found.counts) - len(empty), images=len(found.item_ids))
        try:
            splits, record = self.splits([c for c, n in found.counts.items() if n > 0])
            report.facts.update(split=record["rule"], **{f"{s}_classes": len(m) for s, m in splits.items()})
        except TcsFewshotError as error:
            report.problems.append(str(error))
        return report

    def load(self, root: str | os.PathLike | None = None, scheme: str | None = None) -> BenchmarkData:
        """The items, split by the split file or the seeded rule (recorded in ``manifest["split"]``)."""
        scheme = choose_scheme(self.schemes, scheme, self.name)
        root = self.root if root is None else Path(root).expanduser()
        found = _scan(root)
        if found.problems:
            raise TcsFewshotError(f"{found.problems[0]} (check() lists every problem)")
        splits, record = self.splits([c for c, n in found.counts.items() if n > 0])
        index = LabelIndex.from_items(found.item_ids, found.labels, splits, name=self.name)
        manifest = {"benchmark": self.name, "scheme": scheme, "splits": splits, "split": record}
        return BenchmarkData(index=index, scheme=scheme, load_image=found.loader, root=root, manifest=manifest)
