"""miniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle 2017 split: 64/16/20 classes, 600 images each.

Three layouts are read, tried in this order:

- learn2learn's cache: ``root/mini-imagenet-cache-{train,validation,test}.pkl`` (``-val.pkl`` too), each a dict with
  ``image_data`` ``(n, 84, 84, 3)`` uint8 and ``class_dict`` ``{wnid: [row, ...]}``. Images come
  from memory; item ids are ``<split>/<wnid>/<row>`` (``split`` in train/val/test). The pickles
  are unpickled with only numpy and container types allowed, but pickle is still a code format:
  load only files you trust (for example ones you made with learn2learn yourself).
- Ravi's split CSVs: ``root/{train,val,test}.csv`` (``filename,label``) with the images in
  ``root/images/<filename>``; item ids are ``images/<filename>``.
- Class folders: ``root/{train,val,test}/<wnid>/*.jpg``; item ids are the relative paths.

The splits always come from the manifest; the split the data on disk puts a class in is checked against it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tcs_fewshot.data.benchmarks.scan import (
    Found,
    ScannedBenchmark,
    file_loader,
    load_data_pickle,
    memory_loader,
    scan_split_folders,
)
from tcs_fewshot.errors import TcsFewshotError

SPLITS = ("train", "val", "test")
# learn2learn names the validation cache "validation"; other shared copies name it "val".
PICKLES = {split: f"mini-imagenet-cache-{mode}.pkl" for split, mode in zip(SPLITS, ("train", "validation", "test"))}
ALSO = {"val": "mini-imagenet-cache-val.pkl"}


def _pickle(root: Path, split: str) -> Path:
    """The cache file of ``split`` under ``root`` (learn2learn's name unless only the other one exists)."""
    if split in ALSO and not (root / PICKLES[split]).is_file() and (root / ALSO[split]).is_file():
        return root / ALSO[split]
    return root / PICKLES[split]
SOURCE = "miniImageNet (Vinyals et al. 2016; Ravi & Larochelle split CSVs)"


def _layout(root: Path) -> str:
    if any((root / name).is_file() for name in (*PICKLES.values(), *ALSO.values())):
        return "learn2learn_pickle"
    if any((root / f"{split}.csv").is_file() for split in SPLITS):
        return "csv"
    if any((root / split).is_dir() for split in SPLITS):
        return "folders"
    raise TcsFewshotError(
        f"'{root}' holds no miniImageNet layout: expected train/val/test.csv with images/, "
        f"train/val/test/<wnid>/ folders, or learn2learn's mini-imagenet-cache-*.pkl; get {SOURCE}"
    )


def _scan_pickles(root: Path) -> Found:
    found = Found([], [], None, {}, facts={"layout": "learn2learn_pickle"})
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        path = _pickle(root, split)
        if not path.is_file():
            found.problems.append(f"'{path}' is missing; make it with learn2learn or use the CSV layout")
            continue
        cache = load_data_pickle(path)
        images = cache.get("image_data") if isinstance(cache, dict) else None
        classes = cache.get("class_dict") if isinstance(cache, dict) else None
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3 or not isinstance(classes, dict):
            found.problems.append(f"'{path}' is not a learn2learn cache (image_data (n, 84, 84, 3), class_dict)")
            continue
        arrays[split] = images
        for wnid, rows in classes.items():
            rows = [int(row) for row in rows]
            if rows and not 0 <= min(rows) <= max(rows) < len(images):
                found.problems.append(f"'{path}': class '{wnid}' lists rows outside image_data")
                continue
            found.item_ids += [f"{split}/{wnid}/{row:05d}" for row in rows]
            found.labels += [wnid] * len(rows)
            found.counts[wnid] = found.counts.get(wnid, 0) + len(rows)
            found.split_of[wnid] = split
    found.loader = memory_loader(arrays)
    return found


def _scan_csv(root: Path) -> Found:
    found = Found([], [], file_loader(root), {}, facts={"layout": "csv"})
    for split in SPLITS:
        path = root / f"{split}.csv"
        if not path.is_file():
            found.problems.append(f"'{path}' is missing; take it from {SOURCE}")
            continue
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
            found.problems.append(f"'{path}' does not start with the header 'filename,label'; use Ravi's split CSV")
            continue
        missing = []
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != 2:
                found.problems.append(f"'{path}' line {line} is not 'filename,label'; fix or remove it")
                continue
            item_id, wnid = f"images/{row[0].strip()}", row[1].strip()
            found.split_of[wnid] = split
            found.counts.setdefault(wnid, 0)
            if not (root / item_id).is_file():
                missing.append(item_id)
                continue
            found.item_ids.append(item_id)
            found.labels.append(wnid)
            found.paths.append(root / item_id)
            found.counts[wnid] += 1
        if missing:
            found.problems.append(
                f"{len(missing)} image(s) listed in '{path.name}' are missing, first '{root / missing[0]}'"
            )
    return found


def _scan(root: Path) -> Found:
    layout = _layout(root)
    if layout == "learn2learn_pickle":
        return _scan_pickles(root)
    if layout == "csv":
        return _scan_csv(root)
    return scan_split_folders(root, SPLITS, SOURCE)


class MiniImageNet(ScannedBenchmark):
    """miniImageNet adapter (see the module docstring for the layouts it reads)."""

    name = "mini_imagenet"
    schemes = ("ravi",)
    description = "miniImageNet, 100 ImageNet classes x 600 images, Ravi & Larochelle 64/16/20 split"
    source = SOURCE

    def scan(self, root: Path) -> Found:
        return _scan(root)
