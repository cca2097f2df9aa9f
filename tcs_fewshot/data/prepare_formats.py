"""What each benchmark's archives hold, and where their parts go (used by :mod:`tcs_fewshot.data.prepare`).

A :class:`Format` says, for one benchmark, which published md5 an archive should have (read
from torchvision's dataset classes, never retyped), how to find the benchmark's entries in
what was extracted (``collect``: moves them into the staging folder and names them), and
which extracted files torchvision also publishes an md5 for (``inner_md5``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tcs_fewshot.errors import TcsFewshotError

SPLITS = ("train", "val", "test")
WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class Published:
    """A published md5 and where it was read (``torchvision.datasets.CIFAR100.tgz_md5``)."""

    md5: str
    source: str


@dataclass(frozen=True)
class Format:
    """How one benchmark's archives are laid out.

    Attributes:
        expects: The files a user passes, for messages (``cifar-100-python.tar.gz``).
        collect: ``(extracted, loose, new) -> entries``: move the benchmark's parts from the
            extracted tree (and ``loose`` files given as they are, such as pickles or CSVs) into
            ``new``; returns the top-level names to place under the root.
        published: ``(archive, member names) -> Published | None``.
        inner_md5: ``new -> {relative path: Published}`` for extracted files with a published md5.
        no_checksum: Why there is no published md5 to compare with, when there is none.
        required: How many ``--archive`` files at least.
        loose: Suffixes of files taken as they are (``.pkl``, ``.csv``); every other file is an archive.
    """

    expects: str
    collect: Callable[[Path, list[Path], Path], list[str]]
    published: Callable[[Path, list[str]], Published | None] = lambda archive, names: None
    inner_md5: Callable[[Path], dict[str, Published]] = lambda new: {}
    no_checksum: str = ""
    required: int = 1
    loose: tuple[str, ...] = ()


def _find_dirs(top: Path, test: Callable[[Path], bool], depth: int = 3) -> list[Path]:
    """Folders at most ``depth`` levels under ``top`` (itself included) that pass ``test``, shallowest first."""
    found, level = [], [top]
    for _ in range(depth + 1):
        found += [folder for folder in level if test(folder)]
        level = [child for folder in level if folder.is_dir() for child in sorted(folder.iterdir()) if child.is_dir()]
    return found


def _one_dir(top: Path, test: Callable[[Path], bool], what: str, expects: str) -> Path:
    found = _find_dirs(top, test) if top.is_dir() else []
    if not found:
        raise TcsFewshotError(f"the archives hold no {what}; pass {expects}")
    return found[0]


def _place(source: Path, new: Path, name: str) -> str:
    """Move (same file system: a rename) ``source`` to ``new/name``."""
    shutil.move(str(source), str(new / name))
    return name


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when ``source`` shares the file system (no copy of a large pickle), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# --- CIFAR-100 (CIFAR-FS, FC100) ----------------------------------------------------------------

def _cifar_class():
    from torchvision.datasets import CIFAR100

    return CIFAR100


def _cifar_collect(extracted: Path, loose: list[Path], new: Path) -> list[str]:
    folder_name = _cifar_class().base_folder
    parts = ("train", "test", "meta")
    found = _one_dir(extracted, lambda d: all((d / p).is_file() for p in parts),
                     f"{folder_name}/train, test and meta", "cifar-100-python.tar.gz")
    if found.name == folder_name:
        return [_place(found, new, folder_name)]
    (new / folder_name).mkdir()
    for part in parts:
        shutil.move(str(found / part), str(new / folder_name / part))
    return [folder_name]


def _cifar_published(archive: Path, names: list[str]) -> Published | None:
    cifar = _cifar_class()
    return Published(cifar.tgz_md5, "torchvision.datasets.CIFAR100.tgz_md5")


def _cifar_inner(new: Path) -> dict[str, Published]:
    cifar = _cifar_class()
    listed = [*cifar.train_list, *cifar.test_list, [cifar.meta["filename"], cifar.meta["md5"]]]
    return {f"{cifar.base_folder}/{name}": Published(md5, "torchvision.datasets.CIFAR100 (train_list, test_list, meta)")
            for name, md5 in listed}


CIFAR = Format("cifar-100-python.tar.gz (the CIFAR-100 python version)", _cifar_collect, _cifar_published, _cifar_inner)


# --- Omniglot -----------------------------------------------------------------------------------

OMNIGLOT_PARTS = ("images_background", "images_evaluation")


def _omniglot_collect(extracted: Path, loose: list[Path], new: Path) -> list[str]:
    expects = "images_background.zip and images_evaluation.zip (--archive twice)"
    return [_place(_one_dir(extracted, lambda d, p=part: d.name == p, f"{part}/ folder", expects), new, part)
            for part in OMNIGLOT_PARTS]


def _omniglot_published(archive: Path, names: list[str]) -> Published | None:
    from torchvision.datasets import Omniglot

    tops = {name.replace("\\", "/").split("/")[0] for name in names}
    for part, md5 in Omniglot.zips_md5.items():
        if part in tops or archive.name == f"{part}.zip":
            return Published(md5, f"torchvision.datasets.Omniglot.zips_md5['{part}']")
    return None


OMNIGLOT = Format("images_background.zip and images_evaluation.zip", _omniglot_collect, _omniglot_published,
                  required=2, no_checksum="torchvision publishes md5s only for images_background.zip and "
                  "images_evaluation.zip")


# --- miniImageNet -------------------------------------------------------------------------------

PICKLE = re.compile(r"mini-imagenet-cache-(train|val|validation|test)\.pkl")


def _mini_collect(extracted: Path, loose: list[Path], new: Path) -> list[str]:
    pickles = {path.name: path for path in [*extracted.rglob("*.pkl"), *loose] if PICKLE.fullmatch(path.name)}
    if pickles:
        for name, path in pickles.items():
            if path in loose:
                _link_or_copy(path, new / name)
            else:
                shutil.move(str(path), str(new / name))
        return sorted(pickles)
    expects = ("mini-imagenet-cache-{train,val,test}.pkl, or a tar of images/ with Ravi's train.csv, val.csv "
               "and test.csv (inside it or as --archive files)")
    images = _one_dir(extracted, lambda d: (d / "images").is_dir(), "images/ folder", expects)
    entries = [_place(images / "images", new, "images")]
    csvs = {path.name: path for path in extracted.rglob("*.csv")}
    csvs.update({path.name: path for path in loose if path.suffix == ".csv"})
    for split in SPLITS:
        name = f"{split}.csv"
        if name not in csvs:
            raise TcsFewshotError(f"no {name} in the archives; pass Ravi's split CSVs as well: {expects}")
        if csvs[name] in loose:
            _link_or_copy(csvs[name], new / name)
        else:
            shutil.move(str(csvs[name]), str(new / name))
        entries.append(name)
    return entries


MINI = Format("mini-imagenet-cache-{train,val,test}.pkl, or a tar of images/ plus train.csv, val.csv, test.csv",
              _mini_collect, no_checksum="miniImageNet has no published checksum (torchvision has no miniImageNet)",
              loose=(".pkl", ".csv"))


# --- tieredImageNet -----------------------------------------------------------------------------

def _has_wnids(folder: Path) -> bool:
    return any(child.is_dir() and WNID.fullmatch(child.name) for child in folder.iterdir())


def _tiered_collect(extracted: Path, loose: list[Path], new: Path) -> list[str]:
    splits = _find_dirs(extracted, lambda d: all((d / s).is_dir() for s in SPLITS))
    if splits:
        return [_place(splits[0] / split, new, split) for split in SPLITS]
    classes = _find_dirs(extracted, _has_wnids)
    if classes:
        return [_place(classes[0], new, "images")]
    if list(extracted.rglob("*_images_png.pkl")):
        raise TcsFewshotError(
            "this tar holds Ren's *_images_png.pkl files, which this version does not decode; "
            "pass a tar of train/, val/, test/ folders of <wnid>/ images"
        )
    raise TcsFewshotError("the archive holds neither train/, val/, test/ nor <wnid>/ image folders; "
                          "pass a tar of tieredImageNet's class folders")


TIERED = Format("a tar of train/, val/, test/ (or <wnid>/) image folders", _tiered_collect,
                no_checksum="tieredImageNet has no published checksum (torchvision has no tieredImageNet)")


# --- CUB-200-2011 -------------------------------------------------------------------------------

def _cub_collect(extracted: Path, loose: list[Path], new: Path) -> list[str]:
    found = _one_dir(extracted, lambda d: (d / "images.txt").is_file(), "CUB_200_2011/images.txt", "CUB_200_2011.tgz")
    return [_place(found, new, "CUB_200_2011")]


CUB = Format("CUB_200_2011.tgz", _cub_collect,
             no_checksum="torchvision has no CUB-200-2011 class, so no published md5 to compare with")

FORMATS = {"cifar_fs": CIFAR, "fc100": CIFAR, "omniglot": OMNIGLOT, "mini_imagenet": MINI,
           "tiered_imagenet": TIERED, "cub": CUB}
