"""What a benchmark holds: item ids, their classes, and which classes form each split.

A :class:`LabelIndex` is all the task sampler needs; images or features are looked up
by item id later, so the same index serves raw images, cached teacher features and a
user's own inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tcs_fewshot.errors import TcsFewshotError


@dataclass(frozen=True, eq=False)
class LabelIndex:
    """Items of a dataset with their class, split membership and official train flag.

    Attributes:
        name: Human-readable dataset name (recorded, not part of the identity).
        item_ids: ``(n_items,)`` unique string ids (for images, the relative path).
        labels: ``(n_items,)`` class name of each item.
        class_splits: split name -> class names in that split (``base``/``val``/``novel``
            or ``train``/``val``/``test``). A dataset without splits has one, ``all``.
        is_train: ``(n_items,)`` bool, the dataset's official train/test image split
            (needed by the pFSL protocol), or ``None``.
        groups: ``(n_items,)`` str or ``None``. Items of one group are renderings of one instance
            (one emoji in several styles): episodic tasks never put a query in the group of a
            support item, so a method cannot match a query to its own copy.
    """

    name: str
    item_ids: np.ndarray
    labels: np.ndarray
    class_splits: Mapping[str, tuple[str, ...]]
    is_train: np.ndarray | None = None
    groups: np.ndarray | None = None

    @classmethod
    def from_items(
        cls,
        item_ids: Sequence[str] | np.ndarray,
        labels: Sequence[str] | np.ndarray,
        class_splits: Mapping[str, Sequence[str]] | None = None,
        is_train: Sequence[bool] | np.ndarray | None = None,
        name: str = "dataset",
        groups: Sequence[str] | np.ndarray | None = None,
    ) -> LabelIndex:
        """Build and validate an index; ids and labels are converted to strings."""
        ids = np.asarray([str(item) for item in item_ids])
        label_array = np.asarray([str(label) for label in labels])
        if ids.ndim != 1 or ids.shape != label_array.shape:
            raise TcsFewshotError(
                f"dataset '{name}': {len(ids)} item ids but {len(label_array)} labels; "
                "give exactly one label per item"
            )
        if len(ids) == 0:
            raise TcsFewshotError(f"dataset '{name}' has no items; check the data root")
        unique_ids, counts = np.unique(ids, return_counts=True)
        if len(unique_ids) != len(ids):
            duplicate = unique_ids[counts > 1][0]
            raise TcsFewshotError(
                f"dataset '{name}': item id '{duplicate}' occurs {counts.max()} times; "
                "item ids must be unique (use relative paths)"
            )
        present = set(np.unique(label_array).tolist())
        if class_splits is None:
            splits = {"all": tuple(sorted(present))}
        else:
            splits = {str(split): tuple(str(c) for c in classes) for split, classes in class_splits.items()}
        for split, classes in splits.items():
            missing = [c for c in classes if c not in present]
            if missing:
                raise TcsFewshotError(
                    f"dataset '{name}': split '{split}' names {len(missing)} class(es) with no items, "
                    f"first '{missing[0]}'; fix the split file or the data root"
                )
        train = None
        if is_train is not None:
            train = np.asarray(is_train, dtype=bool)
            if train.shape != ids.shape:
                raise TcsFewshotError(
                    f"dataset '{name}': is_train has {train.size} entries for {ids.size} items"
                )
        group_array = None
        if groups is not None:
            group_array = np.asarray([str(group) for group in groups])
            if group_array.shape != ids.shape:
                raise TcsFewshotError(f"dataset '{name}': groups has {group_array.size} entries for {ids.size} items")
        return cls(name=name, item_ids=ids, labels=label_array, class_splits=splits, is_train=train, groups=group_array)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the content (ids, labels, splits, train flags), independent of item order.

        Tasks are derived from this, so the same data listed in another order gives
        the same tasks, and changed data gives other tasks (and another checksum).
        """
        digest = hashlib.sha256()
        order = np.argsort(self.item_ids, kind="stable")
        train = self.is_train if self.is_train is not None else np.zeros(len(order), dtype=bool)
        for position in order:
            digest.update(f"{self.item_ids[position]}\t{self.labels[position]}\t{int(train[position])}\n".encode())
        splits = {split: sorted(classes) for split, classes in self.class_splits.items()}
        digest.update(json.dumps(splits, sort_keys=True).encode())
        digest.update(b"has_train_flags" if self.is_train is not None else b"")
        if self.groups is not None:
            digest.update(b"groups:" + "\n".join(self.groups[order].tolist()).encode())
        return digest.hexdigest()

    def classes(self, split: str) -> tuple[str, ...]:
        """Class names of ``split``, sorted; raises a clear error for an unknown split."""
        if split not in self.class_splits:
            known = ", ".join(sorted(self.class_splits))
            raise TcsFewshotError(f"dataset '{self.name}' has no split '{split}'; choose one of: {known}")
        return tuple(sorted(self.class_splits[split]))

    @cached_property
    def _members(self) -> dict[str, np.ndarray]:
        # One sort groups every class at once: O(n log n) even for 600k-item datasets.
        order = np.lexsort((self.item_ids, self.labels))
        classes, starts = np.unique(self.labels[order], return_index=True)
        bounds = np.append(starts, len(order))
        return {str(c): order[bounds[i] : bounds[i + 1]] for i, c in enumerate(classes)}

    def positions(self, class_name: str) -> np.ndarray:
        """``(n,)`` int64 positions of the items of ``class_name``, ordered by item id."""
        return self._members.get(class_name, np.empty(0, dtype=np.int64))

    def all_classes(self) -> tuple[str, ...]:
        """Every class that has items, sorted."""
        return tuple(self._members)

    def split_counts(self) -> dict[str, dict[str, int]]:
        """split -> ``{"classes": n, "images": m}`` (classes of the split; items of those classes)."""
        return {split: {"classes": len(classes), "images": sum(len(self.positions(c)) for c in classes)}
                for split, classes in self.class_splits.items()}
