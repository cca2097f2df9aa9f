"""A fixed train/test image split per class for benchmarks without an official one (pFSL).

The pFSL protocol draws its K shots per class from the train images and queries the whole
test set (see :mod:`tcs_fewshot.data.tasks`). The embedded benchmarks have no official split,
so one is made here: inside each class, the *groups* (renderings of one instance: one emoji
in every style, one glyph face) are ordered by ``sha256("<salt>:<class>:<group>")`` and the
first ``ceil(n / 2)`` go to train, the rest to test. A group is never on both sides, so a
query is never its own emoji (or face) drawn again. sha256 rather than a random generator:
its output cannot change with a numpy release.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

RULE = ("per class, order its groups by sha256('<salt>:<class>:<group>') and give the first "
        "ceil(n/2) to train, the rest to test; a group is all renderings of one instance")


def train_groups(groups_by_class: Mapping[str, Sequence[str]], salt: str) -> dict[str, frozenset[str]]:
    """class -> the groups whose images are pFSL train images (the others are test images).

    Args:
        groups_by_class: class -> its groups (each group in one class only); order is ignored.
        salt: Names the split (``tcs-fewshot-emoji-pfsl-v1``): another salt is another split.
    """
    chosen = {}
    for name, groups in groups_by_class.items():
        ordered = sorted(set(groups), key=lambda group: hashlib.sha256(f"{salt}:{name}:{group}".encode()).hexdigest())
        chosen[name] = frozenset(ordered[: math.ceil(len(ordered) / 2)])
    return chosen


def split_flags(labels: Sequence[str], groups: Sequence[str], train: Mapping[str, frozenset[str]]) -> np.ndarray:
    """``(n_items,)`` bool: True where an item's group is a train group of its class."""
    return np.array([group in train.get(label, ()) for label, group in zip(labels, groups)], dtype=bool)


def describe(item_ids: Sequence[str], labels: Sequence[str], is_train: np.ndarray, salt: str) -> dict:
    """What a manifest records of a split: rule, salt, counts and a checksum over (item id, side)."""
    sides = sorted(f"{item_id} {'train' if flag else 'test'}" for item_id, flag in zip(item_ids, is_train))
    per_class: dict[str, list[int]] = {}
    for label, flag in zip(labels, is_train):
        per_class.setdefault(str(label), [0, 0])[0 if flag else 1] += 1
    return {
        "rule": RULE,
        "salt": salt,
        "train_images": int(np.sum(is_train)),
        "test_images": int(len(is_train) - np.sum(is_train)),
        "fewest_train_images": min((train for train, _ in per_class.values()), default=0),
        "fewest_test_images": min((test for _, test in per_class.values()), default=0),
        "checksum": hashlib.sha256("\n".join(sides).encode()).hexdigest(),
    }
