"""CUB-200-2011 (Wah et al. 2011): 200 bird species, 11,788 images, in Caltech's own layout.

As ``CUB_200_2011.tgz`` extracts (``root`` may be ``CUB_200_2011`` itself or its parent)::

    CUB_200_2011/images.txt               <image_id> <path under images/>
    CUB_200_2011/image_class_labels.txt   <image_id> <class_id>
    CUB_200_2011/train_test_split.txt     <image_id> <is_training_image>  (1 = train, 0 = test)
    CUB_200_2011/classes.txt              <class_id> <NNN.Class_Name>
    CUB_200_2011/images/<NNN.Class_Name>/*.jpg

Item ids are the paths of ``images.txt`` (``001.Black_footed_Albatross/Black_Footed_...jpg``),
labels the class folder names, ``is_train`` the official image split (for every scheme).
Schemes: ``chen`` (100/50/50 classes, the default), ``metadataset`` (140/30/30) and
``official`` (all 200 classes in one split ``all``: the pFSL protocol, which uses ``is_train``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tcs_fewshot.data.benchmarks.base import BenchmarkData, CheckReport
from tcs_fewshot.data.benchmarks.scan import (
    Found,
    check_found,
    choose_scheme,
    class_folders,
    file_loader,
    require_root,
)
from tcs_fewshot.data.images import ImageOptions
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.manifests import load_manifest
from tcs_fewshot.errors import TcsFewshotError

SOURCE = "CUB-200-2011 from Caltech (CUB_200_2011.tgz)"
FOLDER = "CUB_200_2011"
TABLES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _dataset_dir(root: str | os.PathLike) -> Path:
    """The folder holding ``images.txt``: ``root`` itself or ``root/CUB_200_2011``."""
    root = require_root(root, SOURCE)
    for base in (root, root / FOLDER):
        if (base / "images.txt").is_file():
            return base
    raise TcsFewshotError(
        f"no {FOLDER}/images.txt under '{root}'; point --root at the folder holding {FOLDER}/ extracted "
        f"from {SOURCE}, or run: tcs-fewshot data prepare cub --archive CUB_200_2011.tgz"
    )


def _table(path: Path) -> dict[str, str]:
    """The ``<id> <value>`` lines of a CUB text file, as id -> value."""
    if not path.is_file():
        raise TcsFewshotError(f"'{path}' is missing; re-extract {SOURCE}")
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if len(parts) == 1:
            raise TcsFewshotError(f"'{path}' line {number} is not '<id> <value>' ({line[:40]!r}); re-extract {SOURCE}")
        if parts:
            table[parts[0]] = parts[1].strip()
    return table


def _scan(root: str | os.PathLike) -> tuple[Found, list[bool]]:
    """What the text files list and the disk holds; also ``(n_images,)`` official train flags."""
    base = _dataset_dir(root)
    paths, labels, splits, classes = (_table(base / name) for name in TABLES)
    images = base / "images"
    if not images.is_dir():
        raise TcsFewshotError(f"'{images}' is missing; re-extract {SOURCE}")
    item_ids, is_train = list(paths.values()), []
    for image_id, path in paths.items():
        folder, named = path.split("/")[0], classes.get(labels.get(image_id, ""))
        if named != folder:  # text files of another release or edited by hand: labels would be wrong
            raise TcsFewshotError(
                f"image {image_id} '{path}' is class '{named}' in image_class_labels.txt/classes.txt but sits in "
                f"'{folder}'; the text files under '{base}' do not belong together, re-extract {SOURCE}"
            )
        if splits.get(image_id) not in ("0", "1"):
            raise TcsFewshotError(f"'{base / TABLES[2]}' has no 0/1 flag for image {image_id}; re-extract {SOURCE}")
        is_train.append(splits[image_id] == "1")
    found = Found(item_ids, [p.split("/")[0] for p in item_ids], file_loader(images), {}, facts={
        "layout": FOLDER, "train_images": sum(is_train), "test_images": len(is_train) - sum(is_train)})
    found.counts = {folder: len(files) for folder, files in class_folders(images).items()}
    files = [images / path for path in item_ids]
    present = [path.is_file() for path in files]
    found.paths = [path for path, ok in zip(files, present) if ok]
    if not all(present):
        first = files[present.index(False)]
        found.problems.append(
            f"{present.count(False)} image(s) listed in images.txt are missing, first '{first}'; re-extract {SOURCE}"
        )
    return found, is_train


class CUB:
    """CUB-200-2011 adapter (see the module docstring)."""

    name = "cub"
    schemes = ("chen", "metadataset", "official")
    description = "CUB-200-2011 birds, 200 classes, 11,788 images; chen 100/50/50, metadataset 140/30/30, official"
    source = SOURCE

    def check(self, root: str | os.PathLike, images: ImageOptions | None = None, verify_images: bool = True,
              scheme: str | None = None) -> CheckReport:
        """Text files, class folders and counts against the manifest, listed images present (and decodable by ``images``).

        Every scheme splits the same files, so ``scheme`` does not change what is checked.
        """
        report = CheckReport(self.name, Path(root).expanduser())
        return check_found(report, lambda: _scan(report.root)[0], load_manifest(self.name, "official"), SOURCE, images,
                           verify_images)

    def load(self, root: str | os.PathLike, scheme: str | None = None) -> BenchmarkData:
        """All 11,788 images, split by ``scheme`` (default ``chen``); images are read when asked for."""
        scheme = choose_scheme(self.schemes, scheme, self.name)
        manifest = load_manifest(self.name, scheme)
        found, is_train = _scan(root)
        if found.problems:
            raise TcsFewshotError(f"{found.problems[0]}; run: tcs-fewshot data check cub --root {root}")
        index = LabelIndex.from_items(found.item_ids, found.labels, manifest["splits"], is_train, name=f"cub/{scheme}")
        return BenchmarkData(index, scheme, found.loader, _dataset_dir(root), manifest)
