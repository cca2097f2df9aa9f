"""CIFAR-FS and FC100 on a tiny CIFAR-100 python archive: all 100 classes, 3 train + 2 test images each."""

import io
import pickle
import struct

import numpy as np
import pytest

from image_files import class_colour

from tcs_fewshot import (
    TaskSpec,
    TcsFewshotError,
    sample_tasks,
)
from tcs_fewshot.data.benchmarks import Benchmark
from tcs_fewshot.data.benchmarks.cifar import CIFARFS, FC100
from tcs_fewshot.data.manifests import load_manifest

FS_SPLITS = load_manifest("cifar_fs", "bertinetto")["splits"]
FC_SPLITS = load_manifest("fc100", "oreshkin")["splits"]
# CIFAR-100's meta lists the fine names alphabetically; labels index this list.
NAMES = sorted(c for classes in FS_SPLITS.values() for c in classes)
PER_PART = {"train": 3, "test": 2}


def pixels(label: int, part: str, item: int) -> np.ndarray:
    """``(32, 32, 3)`` uint8: one colour per class plus noise."""
    return class_colour(label, [label, item, len(part)], (32, 32, 3))


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as the real archive (made with Python 2's cPickle) has."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_archive(root, names=NAMES, skip_label=None):
    """``root/cifar-100-python/{train,test,meta}`` as in the real archive (Python 2 protocol-2 pickles).

    Rows are interleaved across classes, like the real files; ``skip_label`` gets no images.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, per_class in PER_PART.items():
        labels = [label for item in range(per_class) for label in range(len(names)) if label != skip_label]
        items = [item for item in range(per_class) for label in range(len(names)) if label != skip_label]
        # Channel-major rows: the 1024 red values, then green, then blue.
        data = np.stack([pixels(label, part, item).transpose(2, 0, 1).reshape(-1) for label, item in zip(labels, items)])
        batch = {b"batch_label": f"{part} batch".encode(), b"filenames": [b"x.png"] * len(labels),
                 b"fine_labels": labels, b"coarse_labels": [label // 5 for label in labels], b"data": data}
        (folder / part).write_bytes(py2_pickle(batch))
    meta = {b"fine_label_names": [n.encode() for n in names],
            b"coarse_label_names": [f"super{k}".encode() for k in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return root


@pytest.fixture
def root(tmp_path):
    return write_archive(tmp_path / "cifar")


@pytest.mark.parametrize("adapter, sizes, splits", [(CIFARFS, [64, 16, 20], FS_SPLITS), (FC100, [60, 20, 20], FC_SPLITS)])
def test_both_benchmarks_pool_train_and_test_images(root, adapter, sizes, splits):
    assert isinstance(adapter(), Benchmark)
    data = adapter().load(root)
    index = data.index
    assert index.name == adapter.name and data.scheme == adapter.schemes[0] and index.is_train is None
    assert [len(index.classes(s)) for s in ("train", "val", "test")] == sizes
    assert set(index.classes("test")) == set(splits["test"])
    assert len(index.item_ids) == 100 * 5
    name = splits["val"][1]
    assert [i.split("/")[0] for i in index.item_ids[index.positions(name)]] == ["test"] * 2 + ["train"] * 3
    report = adapter().check(root)
    assert report.problems == [
        f"100 class(es) do not have 600 images, first '{next(iter(splits.values()))[0]}' has 5",
        "found 500 images of the manifest's classes, expected 60000",
    ]
    assert report.facts["classes"] == 100 and report.facts["layout"] == "cifar-100-python"


def test_images_come_back_as_the_32px_rgb_pictures_written(root):
    data = CIFARFS().load(root)
    label = NAMES.index("dolphin")
    # Row of (train, item 2, dolphin): rows are item-major, 100 classes per item.
    image = data.load_image(f"train/{2 * 100 + label:05d}")
    assert image.mode == "RGB" and image.size == (32, 32)
    assert np.array_equal(np.asarray(image), pixels(label, "train", 2))
    assert data.index.labels[data.index.item_ids.tolist().index(f"train/{2 * 100 + label:05d}")] == "dolphin"


def test_archive_files_directly_in_root_are_accepted(root):
    data = CIFARFS().load(root / "cifar-100-python")
    assert len(data.index.item_ids) == 500


def test_missing_root_wrong_layout_and_missing_part(tmp_path, root):
    report = FC100().check(tmp_path / "absent")
    assert len(report.problems) == 1 and "does not exist" in report.problems[0] and "Oreshkin" in report.problems[0]
    with pytest.raises(TcsFewshotError, match="does not exist"):
        CIFARFS().load(tmp_path / "absent")
    (tmp_path / "odd").mkdir()
    report = CIFARFS().check(tmp_path / "odd")
    assert len(report.problems) == 1 and "cifar-100-python.tar.gz" in report.problems[0]
    (root / "cifar-100-python" / "test").unlink()
    with pytest.raises(TcsFewshotError, match=r"cifar-100-python/test' is missing"):
        CIFARFS().load(root)


def test_missing_class_empty_class_and_corrupt_file_are_named(tmp_path):
    renamed = [("porpoise" if n == "dolphin" else n) for n in NAMES]
    problems = CIFARFS().check(write_archive(tmp_path / "renamed", names=renamed)).problems
    assert any("missing on disk" in line and "'dolphin'" in line for line in problems)
    with pytest.raises(TcsFewshotError, match="'dolphin'"):
        CIFARFS().load(tmp_path / "renamed")

    problems = FC100().check(write_archive(tmp_path / "empty", skip_label=NAMES.index("whale"))).problems
    assert any("have no images" in line and "'whale'" in line for line in problems)

    root = write_archive(tmp_path / "damaged")
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    problems = CIFARFS().check(root).problems
    assert len(problems) == 1 and f"'{train}' is not a readable data pickle" in problems[0]


def test_tasks_run_through_the_evaluator_on_raw_pixels(root, ncm_on_raw_pixels):
    data = FC100().load(root)
    tasks = sample_tasks(data.index, TaskSpec(split="test", ways=5, shots=1, queries=4, seed=0), 6)
    records = ncm_on_raw_pixels(data, tasks)
    assert len(records) == 6 and records["failure"].isna().all() and (records["n_query"] == 20).all()
    assert (records["accuracy"] == 1.0).all(), "one colour per class: images must match their labels"
