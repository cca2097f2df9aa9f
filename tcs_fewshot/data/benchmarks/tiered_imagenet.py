"""tieredImageNet (Ren et al. 2018): 608 ImageNet classes under 34 superclasses, split 351/97/160.

Reads image folders, in either layout:

- ``root/{train,val,test}/<wnid>/*`` (the split the folders imply is checked against the manifest);
- ``root/<wnid>/*``, or ``root/images/<wnid>/*`` (easyfsl's ``class_roots``). Other class folders
  (for example the rest of an ImageNet tree) are ignored.

Item ids are paths relative to ``root``; the splits (and superclasses) come from the manifest.
Ren's ``*_images_png.pkl`` files are not read: decode them into class folders first.
"""

from __future__ import annotations

import re
from pathlib import Path

from tcs_fewshot.data.benchmarks.scan import (
    Found,
    ScannedBenchmark,
    add_class_folders,
    file_loader,
    scan_split_folders,
)
from tcs_fewshot.errors import TcsFewshotError

SPLITS = ("train", "val", "test")
SOURCE = (
    "tieredImageNet (Ren et al. 2018; its 608 classes of ImageNet ILSVRC-2012, "
    "split CSVs of renmengye/few-shot-ssl-public)"
)
WNID = re.compile(r"n\d{8}")


def _has_wnid_folders(directory: Path) -> bool:
    return directory.is_dir() and any(p.is_dir() and WNID.fullmatch(p.name) for p in directory.iterdir())


def _scan(root: Path) -> Found:
    if any((root / split).is_dir() for split in SPLITS):
        return scan_split_folders(root, SPLITS, SOURCE)
    for directory in (root, root / "images"):
        if _has_wnid_folders(directory):
            found = Found([], [], file_loader(root), {}, facts={"layout": "class_folders"})
            add_class_folders(found, directory, root)
            return found
    raise TcsFewshotError(
        f"'{root}' holds no tieredImageNet layout: expected train/val/test/<wnid>/ or <wnid>/ image folders "
        f"(Ren's .pkl files must be decoded to folders first); get {SOURCE}"
    )


class TieredImageNet(ScannedBenchmark):
    """tieredImageNet adapter (see the module docstring for the layouts it reads)."""

    name = "tiered_imagenet"
    schemes = ("ren",)
    description = "tieredImageNet, 608 ImageNet classes in 34 superclasses, Ren et al. 351/97/160 split"
    source = SOURCE

    def scan(self, root: Path) -> Found:
        return _scan(root)
