"""Omniglot (Lake et al. 2015): 1623 handwritten characters of 50 alphabets, 20 drawings each.

Layout, as Lake's ``images_background.zip`` and ``images_evaluation.zip`` extract:
``root/images_background/<Alphabet>/<characterNN>/*.png`` (30 alphabets) and
``root/images_evaluation/...`` (20 alphabets). torchvision's ``root/omniglot-py/`` wrapper
folder is accepted too. Class ids are ``<Alphabet>/<characterNN>``; item ids are paths
relative to the folder holding ``images_background``. Images are 105x105 one-bit PNGs,
returned as RGB.

Schemes: ``lake`` (train = background alphabets, test = evaluation alphabets) and ``vinyals``
(1028/172/423 characters, as torchmeta and Snell et al. use). Vinyals et al.'s augmentation of
each character by rotations of 90, 180 and 270 degrees into new classes is NOT applied: the
classes are the 1623 characters themselves, so results are not comparable with numbers
measured on the 4x-rotated class set.
"""

from __future__ import annotations

from pathlib import Path

from tcs_fewshot.data.benchmarks.scan import (
    Found,
    ScannedBenchmark,
    class_folders,
    file_loader,
)
from tcs_fewshot.errors import TcsFewshotError

PARTS = ("images_background", "images_evaluation")
# The split of the default (lake) scheme that each zip is: check() flags an alphabet in the wrong one.
LAKE_SPLIT = {"images_background": "train", "images_evaluation": "test"}
SOURCE = "Omniglot (Lake et al. 2015), images_background.zip and images_evaluation.zip of brendenlake/omniglot"


def _base(root: Path) -> Path:
    """The folder holding ``images_background``: ``root`` itself or torchvision's ``omniglot-py``."""
    for base in (root, root / "omniglot-py"):
        if any((base / part).is_dir() for part in PARTS):
            return base
    raise TcsFewshotError(
        f"'{root}' holds neither images_background/ nor images_evaluation/; extract {SOURCE} there"
    )


def _scan(root: Path) -> Found:
    base = _base(root)
    found = Found([], [], file_loader(base), {}, facts={"layout": "lake_zips"})
    for part in PARTS:
        if not (base / part).is_dir():
            found.problems.append(f"'{base / part}' is missing; extract {part}.zip of {SOURCE} into '{base}'")
            continue
        for alphabet in class_folders(base / part):
            for character, images in class_folders(base / part / alphabet).items():
                class_id = f"{alphabet}/{character}"
                found.counts[class_id] = len(images)
                found.split_of[class_id] = LAKE_SPLIT[part]
                found.item_ids += [path.relative_to(base).as_posix() for path in images]
                found.labels += [class_id] * len(images)
                found.paths += images
    return found


class Omniglot(ScannedBenchmark):
    """Omniglot adapter (see the module docstring; rotations are not added as classes)."""

    name = "omniglot"
    schemes = ("lake", "vinyals")
    description = "Omniglot, 1623 characters x 20 drawings; lake (background/evaluation) or vinyals split, no rotations"
    source = SOURCE

    def scan(self, root: Path) -> Found:
        return _scan(root)
