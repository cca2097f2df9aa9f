"""CIFAR-FS (Bertinetto et al. 2019, 64/16/20 classes) and FC100 (Oreshkin et al. 2018, 60/20/20
classes by superclass), both read from the CIFAR-100 python archive (Krizhevsky 2009).

Layout: ``root/cifar-100-python/{train,test,meta}`` (or those three files directly in ``root``),
as ``cifar-100-python.tar.gz`` extracts. ``train``/``test`` are pickles with ``b"data"``
``(n, 3072)`` uint8 (1024 red, then green, then blue values, rows of 32 pixels) and
``b"fine_labels"``; ``meta`` has ``b"fine_label_names"``. Both few-shot benchmarks pool the
train and test images of each class (600 per class), so there is no per-image split
(``is_train`` is None). Item ids are ``train/<row>`` or ``test/<row>``; images (32x32 RGB)
come from memory. The pickles are read with only numpy and container types allowed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tcs_fewshot.data.benchmarks.scan import (
    Found,
    ScannedBenchmark,
    load_data_pickle,
    memory_loader,
)
from tcs_fewshot.errors import TcsFewshotError

ARCHIVE = "cifar-100-python"
PARTS = ("train", "test")
CIFAR100 = "CIFAR-100 (Krizhevsky 2009), its 'CIFAR-100 python version' archive cifar-100-python.tar.gz"


def _archive_dir(root: Path) -> Path:
    directory = root / ARCHIVE if (root / ARCHIVE).is_dir() else root
    missing = [part for part in (*PARTS, "meta") if not (directory / part).is_file()]
    if missing:
        raise TcsFewshotError(
            f"'{directory / missing[0]}' is missing; extract {CIFAR100} into '{root}' "
            f"(it makes {ARCHIVE}/train, test and meta)"
        )
    return directory


def _scan(root: Path) -> Found:
    """Read the archive into memory: ``(n, 32, 32, 3)`` uint8 images per part, fine label names."""
    directory = _archive_dir(root)
    meta = load_data_pickle(directory / "meta", encoding="bytes")
    try:
        names = [name.decode() if isinstance(name, bytes) else str(name) for name in meta[b"fine_label_names"]]
    except (KeyError, TypeError):
        raise TcsFewshotError(
            f"'{directory / 'meta'}' has no b'fine_label_names'; it is not CIFAR-100's meta file"
        ) from None
    found = Found([], [], None, {name: 0 for name in names}, facts={"layout": ARCHIVE})
    arrays = {}
    for part in PARTS:
        batch = load_data_pickle(directory / part, encoding="bytes")
        data = batch.get(b"data") if isinstance(batch, dict) else None
        labels = np.asarray(batch.get(b"fine_labels", []) if isinstance(batch, dict) else [])
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise TcsFewshotError(
                f"'{directory / part}' is not a CIFAR-100 batch (b'data' (n, 3072) uint8 with one b'fine_labels' each)"
            )
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(names):
            raise TcsFewshotError(f"'{directory / part}' has fine labels outside the {len(names)} names of meta")
        # Channel-major rows -> (n, 32, 32, 3), the layout PIL reads.
        arrays[part] = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        found.item_ids += [f"{part}/{row:05d}" for row in range(len(data))]
        found.labels += [names[label] for label in labels.tolist()]
    for label in found.labels:
        found.counts[label] += 1
    found.loader = memory_loader(arrays)
    return found


class _Cifar100FewShot(ScannedBenchmark):
    """A few-shot benchmark whose classes are CIFAR-100 fine classes (subclasses set the split)."""

    name: str
    schemes: tuple[str, ...]
    description: str
    source: str

    def scan(self, root: Path) -> Found:
        return _scan(root)



class CIFARFS(_Cifar100FewShot):
    name = "cifar_fs"
    schemes = ("bertinetto",)
    description = "CIFAR-FS, 100 CIFAR-100 classes x 600 images (32 px), Bertinetto et al. 64/16/20 split"
    source = f"CIFAR-FS (Bertinetto et al. 2019), made from {CIFAR100}"


class FC100(_Cifar100FewShot):
    name = "fc100"
    schemes = ("oreshkin",)
    description = "FC100, 100 CIFAR-100 classes x 600 images (32 px), Oreshkin et al. 60/20/20 split by superclass"
    source = f"FC100 (Oreshkin et al. 2018), made from {CIFAR100}"
