"""miniImageNet adapter on tiny fixtures of its three real layouts: all 100 classes, 3 images each."""

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from image_files import class_colour

from tcs_fewshot import (
    TaskSpec,
    TcsFewshotError,
    sample_tasks,
)
from tcs_fewshot.data.benchmarks import Benchmark
from tcs_fewshot.data.benchmarks.mini_imagenet import MiniImageNet
from tcs_fewshot.data.manifests import load_manifest

MANIFEST = load_manifest("mini_imagenet", "ravi")
SPLITS = MANIFEST["splits"]
PER_CLASS, SIDE = 3, 84
CSV_NAMES = {"train": "train", "val": "val", "test": "test"}
PICKLE_NAMES = {"train": "train", "val": "validation", "test": "test"}


def pixels(class_number: int, item: int) -> np.ndarray:
    """``(84, 84, 3)`` uint8: one colour per class plus noise, so raw-pixel NCM separates classes."""
    return class_colour(class_number, 10_000 + 100 * class_number + item, (SIDE, SIDE, 3))


def numbered_classes():
    return [(number, split, wnid) for number, (split, wnid) in enumerate(
        (split, wnid) for split in ("train", "val", "test") for wnid in SPLITS[split])]


def write_csv_layout(root):
    (root / "images").mkdir(parents=True)
    lines = {split: ["filename,label"] for split in SPLITS}
    for number, split, wnid in numbered_classes():
        for item in range(PER_CLASS):
            name = f"{wnid}{item + 1:08d}.jpg"  # Ravi's file names: wnid + 8-digit number
            Image.fromarray(pixels(number, item)).save(root / "images" / name, quality=95)
            lines[split].append(f"{name},{wnid}")
    for split, rows in lines.items():
        (root / f"{CSV_NAMES[split]}.csv").write_text("\n".join(rows) + "\n")
    return root


def write_folder_layout(root):
    for number, split, wnid in numbered_classes():
        (root / split / wnid).mkdir(parents=True)
        for item in range(PER_CLASS):
            Image.fromarray(pixels(number, item)).save(root / split / wnid / f"{wnid}_{item}.png")
    return root


def write_pickle_layout(root):
    root.mkdir(parents=True)
    for split in SPLITS:
        classes = [(number, wnid) for number, s, wnid in numbered_classes() if s == split]
        images = np.stack([pixels(number, item) for number, _ in classes for item in range(PER_CLASS)])
        class_dict = {wnid: list(range(k * PER_CLASS, (k + 1) * PER_CLASS)) for k, (_, wnid) in enumerate(classes)}
        with open(root / f"mini-imagenet-cache-{PICKLE_NAMES[split]}.pkl", "wb") as handle:
            pickle.dump({"image_data": images, "class_dict": class_dict}, handle, protocol=4)
    return root


LAYOUTS = {"csv": write_csv_layout, "folders": write_folder_layout, "pickle": write_pickle_layout}


def only_count_problem(report):
    """The fixtures hold 3 images where the manifest expects 600: exactly that must be reported."""
    assert report.problems, "a 3-image class must not pass as complete"
    assert all("600" in line for line in report.problems), report.problems
    assert "do not have 600 images" in report.problems[0] and "has 3" in report.problems[0]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_loads_the_ravi_split(tmp_path, layout):
    root = LAYOUTS[layout](tmp_path / "mini")
    assert isinstance(MiniImageNet(), Benchmark)
    data = MiniImageNet().load(root)
    index = data.index
    assert data.scheme == "ravi" and index.name == "mini_imagenet" and index.is_train is None
    assert [len(index.classes(s)) for s in ("train", "val", "test")] == [64, 16, 20]
    assert len(index.item_ids) == 100 * PER_CLASS
    assert set(index.classes("test")) == set(SPLITS["test"])
    number, _, wnid = numbered_classes()[70]
    first = index.item_ids[index.positions(wnid)[0]]
    image = data.load_image(first)
    assert image.mode == "RGB" and image.size == (SIDE, SIDE)
    # JPEG is lossy; the class colour must survive within a few levels.
    assert np.abs(np.asarray(image, dtype=int) - pixels(number, 0)).mean() < 4
    report = MiniImageNet().check(root)
    only_count_problem(report)
    assert report.facts["layout"] in ("csv", "split_folders", "learn2learn_pickle") and report.facts["classes"] == 100


def test_pickle_item_ids_and_memory_images(tmp_path):
    data = MiniImageNet().load(write_pickle_layout(tmp_path / "mini"))
    wnid = SPLITS["val"][2]
    assert data.index.item_ids[data.index.positions(wnid)].tolist() == [f"val/{wnid}/{row:05d}" for row in (6, 7, 8)]
    number = 64 + 2
    assert np.array_equal(np.asarray(data.load_image(f"val/{wnid}/00007")), pixels(number, 1))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    root = write_pickle_layout(tmp_path / "mini")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (shutil.copy, (str(root / "mini-imagenet-cache-test.pkl"), str(marker)))

    with open(root / "mini-imagenet-cache-test.pkl", "wb") as handle:
        pickle.dump({"image_data": Payload(), "class_dict": {}}, handle)
    with pytest.raises(TcsFewshotError, match="mini-imagenet-cache-test.pkl.*shutil.copy"):
        MiniImageNet().load(root)
    assert not marker.exists()


def test_missing_root_and_wrong_layout(tmp_path):
    report = MiniImageNet().check(tmp_path / "absent")
    assert len(report.problems) == 1
    assert "does not exist" in report.problems[0] and "Ravi & Larochelle" in report.problems[0]
    with pytest.raises(TcsFewshotError, match="does not exist"):
        MiniImageNet().load(tmp_path / "absent")
    (tmp_path / "odd" / "photos").mkdir(parents=True)
    report = MiniImageNet().check(tmp_path / "odd")
    assert len(report.problems) == 1 and "no miniImageNet layout" in report.problems[0]
    with pytest.raises(TcsFewshotError, match="no miniImageNet layout"):
        MiniImageNet().load(tmp_path / "odd")


def test_missing_class_empty_class_and_corrupt_image_are_named(tmp_path):
    root = write_folder_layout(tmp_path / "mini")
    gone, empty, damaged = SPLITS["train"][0], SPLITS["val"][0], SPLITS["test"][0]
    shutil.rmtree(root / "train" / gone)
    for image in (root / "val" / empty).iterdir():
        image.unlink()
    (root / "test" / damaged / f"{damaged}_1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    problems = MiniImageNet().check(root).problems
    assert any("missing on disk" in line and gone in line for line in problems)
    assert any("no images" in line and empty in line for line in problems)
    assert any("corrupt image" in line and f"{damaged}_1.png" in line for line in problems)
    with pytest.raises(TcsFewshotError, match=gone):
        MiniImageNet().load(root)


def test_csv_rows_without_images_and_classes_in_another_split(tmp_path):
    root = write_csv_layout(tmp_path / "mini")
    wnid = SPLITS["test"][5]
    (root / "images" / f"{wnid}00000002.jpg").unlink()
    problems = MiniImageNet().check(root).problems
    assert any("1 image(s) listed in 'test.csv' are missing" in line for line in problems)
    with pytest.raises(TcsFewshotError, match="listed in 'test.csv' are missing"):
        MiniImageNet().load(root)

    root = write_folder_layout(tmp_path / "moved")
    moved = SPLITS["train"][3]
    shutil.move(root / "train" / moved, root / "test" / moved)
    problems = MiniImageNet().check(root).problems
    assert any("another split" in line and moved in line for line in problems)


def test_unknown_scheme_is_an_error(tmp_path):
    with pytest.raises(TcsFewshotError, match="no split scheme 'vinyals'"):
        MiniImageNet().load(write_pickle_layout(tmp_path / "mini"), scheme="vinyals")


def test_tasks_run_through_the_evaluator_on_raw_pixels(tmp_path, ncm_on_raw_pixels):
    data = MiniImageNet().load(write_pickle_layout(tmp_path / "mini"))
    tasks = sample_tasks(data.index, TaskSpec(split="test", ways=5, shots=1, queries=2, seed=0), 5)
    records = ncm_on_raw_pixels(data, tasks)
    assert len(records) == 5 and records["failure"].isna().all() and (records["n_query"] == 10).all()
    assert (records["accuracy"] == 1.0).all(), "one colour per class: images must match their labels"
