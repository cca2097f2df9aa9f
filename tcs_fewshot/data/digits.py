"""A tiny demo benchmark that every machine has: scikit-learn's bundled 8x8 digits.

1,797 images of 10 digit classes, shipped inside scikit-learn (no download). Classes 0-4
form the ``train`` split, 5-9 the ``test`` split; items at even positions of the bundled
order are the "official" train images for the pFSL protocol. Features are the 64 raw
pixel intensities scaled to [0, 1]: a stand-in until teacher features are available,
so the evaluator can run end to end on a fresh machine.
"""

from __future__ import annotations

import numpy as np

from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.features import FeatureSet


def load_digits_benchmark() -> tuple[LabelIndex, FeatureSet]:
    """The digits :class:`LabelIndex` and its ``(1797, 64)`` pixel :class:`FeatureSet`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    item_ids = np.asarray([f"digits/{position:04d}" for position in range(len(digits.target))])
    labels = np.asarray([f"digit_{int(target)}" for target in digits.target])
    index = LabelIndex.from_items(
        item_ids,
        labels,
        class_splits={
            "train": [f"digit_{d}" for d in range(5)],
            "test": [f"digit_{d}" for d in range(5, 10)],
        },
        is_train=np.arange(len(item_ids)) % 2 == 0,
        name="digits",
    )
    return index, FeatureSet(item_ids, digits.data.astype(np.float32) / 16.0)
