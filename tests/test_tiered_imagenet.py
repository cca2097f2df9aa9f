"""tieredImageNet adapter on tiny image-folder fixtures: all 608 classes, 2 JPEGs each."""

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
from tcs_fewshot.data.benchmarks.tiered_imagenet import TieredImageNet
from tcs_fewshot.data.manifests import load_manifest

MANIFEST = load_manifest("tiered_imagenet", "ren")
SPLITS = MANIFEST["splits"]
PER_CLASS, SIZE = 2, (20, 16)  # (width, height) pixels
CLASSES = [(number, split, wnid) for number, (split, wnid) in enumerate(
    (split, wnid) for split in ("train", "val", "test") for wnid in SPLITS[split])]


def image(class_number: int, item: int) -> Image.Image:
    """One colour per class (plus noise), so raw-pixel NCM can tell the classes apart."""
    return Image.fromarray(class_colour(class_number, 50_000 + 10 * class_number + item, (SIZE[1], SIZE[0], 3)))


def write_tree(root, split_folders=True):
    for number, split, wnid in CLASSES:
        folder = root / split / wnid if split_folders else root / wnid
        folder.mkdir(parents=True)
        for item in range(PER_CLASS):
            image(number, item).save(folder / f"{wnid}_{item:04d}.JPEG", quality=95)
    return root


def assert_only_count_problems(report):
    """Count mismatches, and nothing else, are reported when the manifest expects counts.

    tieredImageNet's classes differ in size; a manifest without expected counts has nothing
    to compare 2 images per class with, so the fixture must then pass the check.
    """
    expected = MANIFEST["expected"]
    if not (expected.get("images_per_class") or expected.get("images")):
        assert report.ok, report.problems
        return
    assert report.problems, "the fixture's counts must not pass as complete"
    for line in report.problems:
        assert "images" in line and ("do not have" in line or "expected" in line), line


def test_split_folders_load_with_the_ren_split(tmp_path):
    root = write_tree(tmp_path / "tiered")
    assert isinstance(TieredImageNet(), Benchmark)
    data = TieredImageNet().load(root)
    index = data.index
    assert data.scheme == "ren" and index.name == "tiered_imagenet" and index.is_train is None
    assert [len(index.classes(s)) for s in ("train", "val", "test")] == [351, 97, 160]
    assert len(index.item_ids) == 608 * PER_CLASS
    number, split, wnid = CLASSES[400]
    expected_ids = [f"{split}/{wnid}/{wnid}_{i:04d}.JPEG" for i in range(PER_CLASS)]
    assert index.item_ids[index.positions(wnid)].tolist() == expected_ids
    loaded = data.load_image(f"{split}/{wnid}/{wnid}_0001.JPEG")
    assert loaded.mode == "RGB" and loaded.size == SIZE
    assert np.abs(np.asarray(loaded, dtype=int) - np.asarray(image(number, 1), dtype=int)).mean() < 4
    report = TieredImageNet().check(root)
    assert_only_count_problems(report)
    assert report.facts["classes"] == 608 and report.facts["images"] == 608 * PER_CLASS


def test_flat_class_folders_and_easyfsl_images_folder(tmp_path):
    root = write_tree(tmp_path / "flat", split_folders=False)
    (root / "n99999999").mkdir()  # an ImageNet class outside tieredImageNet: ignored
    image(0, 0).save(root / "n99999999" / "x.JPEG")
    data = TieredImageNet().load(root)
    assert len(data.index.item_ids) == 608 * PER_CLASS and "n99999999" not in data.index.all_classes()
    report = TieredImageNet().check(root)
    assert_only_count_problems(report)
    assert report.facts["classes_not_in_manifest"] == 1

    shutil.move(root, tmp_path / "images")
    (tmp_path / "easyfsl").mkdir()
    shutil.move(tmp_path / "images", tmp_path / "easyfsl" / "images")
    data = TieredImageNet().load(tmp_path / "easyfsl")
    wnid = SPLITS["val"][0]
    assert data.index.item_ids[data.index.positions(wnid)][0] == f"images/{wnid}/{wnid}_0000.JPEG"
    assert data.load_image(f"images/{wnid}/{wnid}_0000.JPEG").size == SIZE


def test_missing_root_and_wrong_layout(tmp_path):
    report = TieredImageNet().check(tmp_path / "absent")
    assert len(report.problems) == 1 and "does not exist" in report.problems[0] and "Ren et al. 2018" in report.problems[0]
    with pytest.raises(TcsFewshotError, match="does not exist"):
        TieredImageNet().load(tmp_path / "absent")
    (tmp_path / "pkl").mkdir()
    (tmp_path / "pkl" / "train_images_png.pkl").write_bytes(b"")
    report = TieredImageNet().check(tmp_path / "pkl")
    assert len(report.problems) == 1 and "no tieredImageNet layout" in report.problems[0]
    with pytest.raises(TcsFewshotError, match="no tieredImageNet layout"):
        TieredImageNet().load(tmp_path / "pkl")


def test_missing_class_empty_class_corrupt_image_and_missing_split(tmp_path):
    root = write_tree(tmp_path / "tiered")
    gone, empty, damaged = SPLITS["test"][10], SPLITS["train"][20], SPLITS["val"][30]
    shutil.rmtree(root / "test" / gone)
    for path in (root / "train" / empty).iterdir():
        path.unlink()
    (root / "val" / damaged / f"{damaged}_0000.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    problems = TieredImageNet().check(root).problems
    assert any("missing on disk" in line and gone in line for line in problems)
    assert any("no images" in line and empty in line for line in problems)
    assert any("corrupt image" in line and f"{damaged}_0000.JPEG" in line for line in problems)
    with pytest.raises(TcsFewshotError, match=r"2 class\(es\) of the tiered_imagenet manifest have no images"):
        TieredImageNet().load(root)
    shutil.rmtree(root / "test")
    problems = TieredImageNet().check(root).problems
    assert any(f"'{root / 'test'}' is missing" in line for line in problems)
    with pytest.raises(TcsFewshotError, match="is missing"):
        TieredImageNet().load(root)


def test_tasks_run_through_the_evaluator_on_raw_pixels(tmp_path, ncm_on_raw_pixels):
    data = TieredImageNet().load(write_tree(tmp_path / "tiered", split_folders=False))
    tasks = sample_tasks(data.index, TaskSpec(split="test", ways=5, shots=1, queries=1, seed=0), 5)
    records = ncm_on_raw_pixels(data, tasks)
    assert len(records) == 5 and records["failure"].isna().all() and (records["n_query"] == 5).all()
    assert (records["accuracy"] == 1.0).all(), "one colour per class: images must match their labels"
