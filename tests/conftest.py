import os
import tempfile

import numpy as np
import pytest

from tcs_fewshot import FeatureSet, LabelIndex

# Tests never read or fill the user's benchmark cache, and never reach a model hub.
os.environ["TCS_FEWSHOT_DATA"] = tempfile.mkdtemp(prefix="tcs-fewshot-test-data-")
os.environ["HF_HUB_OFFLINE"] = "1"
# With the other core busy, OpenMP's spin-waiting made one MobileNetV2 pass 100x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_index(n_classes=12, per_class=25, splits=("train", "val", "test"), name="toy", with_train_flags=True):
    """A label index of ``n_classes`` x ``per_class`` items, classes dealt round-robin to splits."""
    ids = [f"c{c:02d}/img{i:03d}.png" for c in range(n_classes) for i in range(per_class)]
    labels = [f"class_{c:02d}" for c in range(n_classes) for _ in range(per_class)]
    class_splits = {split: [f"class_{c:02d}" for c in range(n_classes) if c % len(splits) == k]
                    for k, split in enumerate(splits)}
    is_train = [i % 2 == 0 for c in range(n_classes) for i in range(per_class)] if with_train_flags else None
    return LabelIndex.from_items(ids, labels, class_splits, is_train=is_train, name=name)


def make_features(index, dim=16, separation=3.0, seed=0):
    """Gaussian features whose class means differ, so probes beat chance."""
    rng = np.random.default_rng(seed)
    classes = {c: rng.normal(size=dim) * separation for c in index.all_classes()}
    features = np.stack([classes[label] for label in index.labels.tolist()]) + rng.normal(size=(len(index.labels), dim))
    return FeatureSet(index.item_ids, features)


@pytest.fixture
def toy_index():
    return make_index()


@pytest.fixture
def toy_features(toy_index):
    return make_features(toy_index)


def raw_pixel_features(data, ids=None) -> FeatureSet:
    """Each image of ``data`` (a ``BenchmarkData``) as one float32 row of its RGB pixels; ``ids`` default all items."""
    ids = data.index.item_ids if ids is None else ids
    return FeatureSet(ids, np.stack([np.asarray(data.load_image(i), dtype=np.float32).ravel() for i in ids]))


@pytest.fixture
def ncm_on_raw_pixels():
    """``records(data, tasks, ids=None)``: the evaluator's records of NCM on ``data``'s raw pixels.

    The adapter tests' end-to-end check: a loader that mixed up images and labels would not
    reach 100% on images of one colour (or stroke pattern) per class.
    """
    from tcs_fewshot import NearestClassMean, evaluate

    def records(data, tasks, ids=None):
        return evaluate(tasks, {"ncm": NearestClassMean()}, inputs=raw_pixel_features(data, ids), measure_memory=False)

    return records
