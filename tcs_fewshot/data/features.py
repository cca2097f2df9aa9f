"""Fixed features looked up by item id, and the ``.npz`` features file format.

A features file holds ``ids`` ``(n,)`` str, ``labels`` ``(n,)`` str and ``features``
``(n, d)`` float, plus optionally ``split`` ``(n,)`` str (the split of each item's class,
constant within a class) and ``is_train`` ``(n,)`` bool (official train/test split).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError


class FeatureSet:
    """A ``(n_items, dim)`` float32 matrix whose rows are addressed by item id."""

    def __init__(self, item_ids: Sequence[str] | np.ndarray, features: np.ndarray, check_finite: bool = True) -> None:
        """``check_finite=False`` skips reading every value: for sources that checked on write."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != len(item_ids):
            raise TcsFewshotError(
                f"features must be a (n_items, dim) matrix with one row per id; got shape "
                f"{features.shape} for {len(item_ids)} ids"
            )
        if check_finite and not np.isfinite(features).all():
            raise TcsFewshotError("features contain NaN or infinite values; recompute them")
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.features = features
        self._row_of = {item_id: row for row, item_id in enumerate(self.item_ids.tolist())}
        if len(self._row_of) != len(self.item_ids):
            raise TcsFewshotError("feature ids are not unique; give each item one row")

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def rows(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(len(item_ids), dim)`` float32 features of ``item_ids``, in that order."""
        try:
            return self.features[[self._row_of[item_id] for item_id in np.asarray(item_ids).tolist()]]
        except KeyError as error:
            raise TcsFewshotError(f"no features for item {error}; the features were computed on other data") from None

    def __call__(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return self.rows(item_ids)

    def mean(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(dim,)`` mean feature of ``item_ids`` (SimpleShot centres on the base-split mean)."""
        return self.rows(item_ids).mean(axis=0)


def save_features_file(
    path: str | os.PathLike, index: LabelIndex, features: FeatureSet
) -> None:
    """Write ``index`` and ``features`` (aligned by id) as one ``.npz`` features file."""
    split_of_class = {c: split for split, classes in index.class_splits.items() for c in classes}
    arrays = {
        "ids": index.item_ids,
        "labels": index.labels,
        "features": features.rows(index.item_ids),
        "split": np.asarray([split_of_class.get(label, "") for label in index.labels.tolist()]),
    }
    if index.is_train is not None:
        arrays["is_train"] = index.is_train
    np.savez_compressed(path, **arrays)


def load_features_file(path: str | os.PathLike, name: str | None = None) -> tuple[LabelIndex, FeatureSet]:
    """Read a features file into a :class:`LabelIndex` and its :class:`FeatureSet`."""
    path = Path(path)
    if not path.is_file():
        raise TcsFewshotError(f"features file '{path}' does not exist; pass an .npz with ids, labels, features")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single array, not an .npz archive")
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        reason = "not a numpy file" if "pickled" in str(error) else error
        raise TcsFewshotError(f"'{path}' is not a readable .npz features file ({reason})") from None
    missing = [key for key in ("ids", "labels", "features") if key not in arrays]
    if missing:
        raise TcsFewshotError(f"features file '{path}' lacks array(s) {', '.join(missing)}; it needs ids, labels, features")
    if arrays["features"].dtype.kind not in "fiub":
        raise TcsFewshotError(f"features file '{path}': 'features' has dtype {arrays['features'].dtype}; it must be numeric")
    for key in ("labels", "split", "is_train"):
        if key in arrays and arrays[key].shape != arrays["ids"].shape:
            raise TcsFewshotError(
                f"features file '{path}': '{key}' has shape {arrays[key].shape} but 'ids' has {arrays['ids'].shape}; "
                "give one entry per item"
            )
    class_splits = None
    if "split" in arrays:
        split_of_class: dict[str, str] = {}
        for label, split in sorted(set(zip(arrays["labels"].astype(str).tolist(), arrays["split"].astype(str).tolist()))):
            if split_of_class.setdefault(label, split) != split:
                raise TcsFewshotError(
                    f"features file '{path}': class '{label}' is in splits '{split_of_class[label]}' and "
                    f"'{split}'; a class belongs to one split"
                )
        class_splits = {}
        for label, split in split_of_class.items():
            if split:
                class_splits.setdefault(split, []).append(label)
        if not class_splits:
            raise TcsFewshotError(f"features file '{path}': every 'split' entry is empty; fill it or leave it out")
    index = LabelIndex.from_items(
        arrays["ids"],
        arrays["labels"],
        class_splits=class_splits,
        is_train=arrays.get("is_train"),
        name=name or path.stem,
    )
    return index, FeatureSet(index.item_ids, arrays["features"])
