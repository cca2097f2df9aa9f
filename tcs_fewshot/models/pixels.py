"""Raw-pixel features: the sanity baseline ("does the teacher know anything about this data?").

Nearest class mean on pixels is the floor every teacher must clear; it is also the fixed
embedding that lets image benchmarks run through the evaluator before any teacher is cached.
"""

from __future__ import annotations

import numpy as np

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.data.features import FeatureSet


def pixel_features(data: BenchmarkData, size: int = 16) -> FeatureSet:
    """``(n_items, 3 * size * size)`` float32 features in [0, 1]: each image resized to ``size`` px.

    Args:
        data: A loaded benchmark (images read through ``data.load_image``).
        size: Side in pixels of the bilinear-resized RGB image.
    """
    from PIL import Image

    item_ids = data.index.item_ids
    features = np.empty((len(item_ids), 3 * size * size), dtype=np.float32)
    for row, item_id in enumerate(item_ids.tolist()):
        image = data.load_image(item_id).resize((size, size), Image.BILINEAR)
        features[row] = np.asarray(image, dtype=np.float32).reshape(-1) / 255.0
    return FeatureSet(item_ids, features)
