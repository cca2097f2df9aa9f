"""CUB-200-2011 adapter on a tiny tree in the official layout, written here (2 JPEGs per class)."""

import shutil
from pathlib import Path

import pytest
from PIL import Image

from tcs_fewshot.data.benchmarks import cub as cub_module
from tcs_fewshot.data.benchmarks.base import Benchmark, BenchmarkData
from tcs_fewshot.data.benchmarks.cub import CUB
from tcs_fewshot.data.manifests import load_manifest
from tcs_fewshot.errors import TcsFewshotError

CLASSES = load_manifest("cub", "official")["splits"]["all"]  # the 200 folder names
PER_CLASS = 2  # image 1 of a class is official train, image 2 test


def make_cub(parent: Path) -> Path:
    """Write ``parent/CUB_200_2011`` with 200 class folders of ``PER_CLASS`` 6x4 JPEGs each."""
    base = parent / "CUB_200_2011"
    images, labels, split, classes = [], [], [], []
    for class_id, folder in enumerate(sorted(CLASSES), start=1):
        classes.append(f"{class_id} {folder}")
        (base / "images" / folder).mkdir(parents=True)
        for k in range(1, PER_CLASS + 1):
            image_id = len(images) + 1
            path = f"{folder}/{folder[4:]}_{k:04d}.jpg"
            Image.new("RGB", (6, 4), (class_id, 10 * k, 0)).save(base / "images" / path, "JPEG")
            images.append(f"{image_id} {path}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {int(k == 1)}")
    for name, lines in [("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", classes)]:
        (base / name).write_text("\n".join(lines) + "\n")
    return base


@pytest.fixture
def cub_root(tmp_path):
    make_cub(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def tiny_expected(monkeypatch):
    """Manifests whose expected image total is the tiny tree's (11,788 for the real dataset)."""
    def small(benchmark, scheme):
        manifest = load_manifest(benchmark, scheme)
        manifest["expected"]["images"] = len(CLASSES) * PER_CLASS
        return manifest

    monkeypatch.setattr(cub_module, "load_manifest", small)


def one_line(problems):
    assert problems and all("\n" not in p for p in problems)
    return " | ".join(problems)


@pytest.mark.parametrize("scheme, sizes", [
    ("chen", {"train": 100, "val": 50, "test": 50}),
    ("metadataset", {"train": 140, "val": 30, "test": 30}),
    ("official", {"all": 200}),
])
def test_load_each_scheme(cub_root, scheme, sizes):
    data = CUB().load(cub_root, scheme)
    index = data.index
    assert {split: len(index.classes(split)) for split in sizes} == sizes
    assert len(index.item_ids) == 200 * PER_CLASS and index.is_train.sum() == 200
    first = min(CLASSES)
    assert index.item_ids[0] == f"{first}/{first[4:]}_0001.jpg" and index.labels[0] == first
    assert index.is_train[0] and not index.is_train[1]
    assert data.scheme == scheme and data.manifest["scheme"] == scheme
    assert data.root == cub_root / "CUB_200_2011"


def test_default_scheme_is_chen_and_root_may_be_the_dataset_folder(cub_root):
    assert isinstance(CUB(), Benchmark) and CUB.schemes[0] == "chen"
    assert CUB().load(cub_root / "CUB_200_2011").scheme == "chen"
    with pytest.raises(TcsFewshotError, match="no split scheme 'ravi'.*chen, metadataset, official"):
        CUB().load(cub_root, "ravi")


def test_images_load_lazily(cub_root, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    data = CUB().load(cub_root)
    assert isinstance(data, BenchmarkData) and opened == []
    image = data.images([data.index.item_ids[3]])[0]
    assert image.mode == "RGB" and image.size == (6, 4)
    assert opened == [cub_root / "CUB_200_2011" / "images" / data.index.item_ids[3]]


def test_check_is_ok_except_the_total_count(cub_root):
    report = CUB().check(cub_root)
    assert report.problems == [f"found {200 * PER_CLASS} images of the manifest's classes, expected 11788"]
    assert report.facts["classes"] == 200 and report.facts["train_images"] == 200


def test_check_ok_with_matching_expected(cub_root, tiny_expected):
    report = CUB().check(cub_root / "CUB_200_2011")
    assert report.ok, report.problems


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    assert f"'{missing}' does not exist" in one_line(CUB().check(missing).problems)
    with pytest.raises(TcsFewshotError, match="does not exist.*CUB_200_2011.tgz"):
        CUB().load(missing)


def test_wrong_layout_without_images_txt(cub_root):
    (cub_root / "CUB_200_2011" / "images.txt").unlink()
    assert "no CUB_200_2011/images.txt under" in one_line(CUB().check(cub_root).problems)
    with pytest.raises(TcsFewshotError, match="tcs-fewshot data prepare cub"):
        CUB().load(cub_root)


def test_missing_text_file_is_named(cub_root):
    (cub_root / "CUB_200_2011" / "train_test_split.txt").unlink()
    assert "train_test_split.txt' is missing" in one_line(CUB().check(cub_root).problems)


def test_text_files_that_disagree(cub_root):
    labels = cub_root / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("1 1\n", "1 2\n", 1))
    with pytest.raises(TcsFewshotError, match="image 1 .* do not belong together"):
        CUB().load(cub_root)


def test_manifest_class_missing_on_disk(cub_root, tiny_expected):
    gone = sorted(CLASSES)[7]
    shutil.rmtree(cub_root / "CUB_200_2011" / "images" / gone)
    problems = one_line(CUB().check(cub_root).problems)
    assert f"missing on disk, first '{gone}'" in problems and "listed in images.txt are missing" in problems
    with pytest.raises(TcsFewshotError, match=f"{gone}.*tcs-fewshot data check cub"):
        CUB().load(cub_root)


def test_empty_class_folder(cub_root, tiny_expected):
    empty = sorted(CLASSES)[3]
    for image in (cub_root / "CUB_200_2011" / "images" / empty).iterdir():
        image.unlink()
    assert f"have no images, first '{empty}'" in one_line(CUB().check(cub_root).problems)
    with pytest.raises(TcsFewshotError, match="2 image.s. listed in images.txt are missing"):
        CUB().load(cub_root)


def test_corrupt_jpeg_is_named(cub_root, tiny_expected):
    data = CUB().load(cub_root)
    broken = cub_root / "CUB_200_2011" / "images" / data.index.item_ids[5]
    broken.write_bytes(broken.read_bytes()[:20])
    problems = CUB().check(cub_root).problems
    assert len(problems) == 1 and f"corrupt image '{broken}'" in one_line(problems)
    with pytest.raises(TcsFewshotError, match=f"image '{broken}' is corrupt"):
        data.load_image(data.index.item_ids[5])  # the index loaded before; the image fails when read
