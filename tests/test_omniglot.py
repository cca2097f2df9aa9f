"""Omniglot adapter on a tiny tree in Lake's layout: all 1623 characters, 2 one-bit 105px PNGs each."""

import shutil

import numpy as np
import pytest
from PIL import Image

from tcs_fewshot import (
    TaskSpec,
    TcsFewshotError,
    sample_tasks,
)
from tcs_fewshot.data.benchmarks import Benchmark
from tcs_fewshot.data.benchmarks.omniglot import Omniglot
from tcs_fewshot.data.manifests import load_manifest

LAKE = load_manifest("omniglot", "lake")
VINYALS = load_manifest("omniglot", "vinyals")
# Lake's scheme: train = images_background, test = images_evaluation.
PART = {"train": "images_background", "test": "images_evaluation"}
CHARACTERS = [(number, PART[split], class_id) for number, (split, class_id) in enumerate(
    (split, class_id) for split in ("train", "test") for class_id in sorted(LAKE["splits"][split]))]
PER_CLASS, SIDE = 2, 105


def drawing(number: int, item: int) -> Image.Image:
    """A one-bit image: a fixed random stroke pattern per character, a few pixels flipped per drawing."""
    pattern = np.random.default_rng(number).random((SIDE, SIDE)) < 0.2
    flips = np.random.default_rng([number, item]).random((SIDE, SIDE)) < 0.01
    return Image.fromarray(~(pattern ^ flips)).convert("1")  # Omniglot: black strokes on white


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    for number, part, class_id in CHARACTERS:
        (root / part / class_id).mkdir(parents=True)
        for item in range(PER_CLASS):
            drawing(number, item).save(root / part / class_id / f"{number:04d}_{item + 1:02d}.png")
    return root


@pytest.fixture
def root(pristine, tmp_path):
    """A copy that a test may damage."""
    return shutil.copytree(pristine, tmp_path / "omniglot")


def test_lake_scheme_splits_background_from_evaluation(pristine):
    assert isinstance(Omniglot(), Benchmark)
    data = Omniglot().load(pristine)
    index = data.index
    assert data.scheme == "lake" and index.is_train is None and set(index.class_splits) == {"train", "test"}
    assert (len(index.classes("train")), len(index.classes("test"))) == (964, 659)
    assert len(index.item_ids) == 1623 * PER_CLASS
    number, part, class_id = CHARACTERS[1000]
    item_id = f"{part}/{class_id}/{number:04d}_02.png"
    assert index.labels[index.item_ids.tolist().index(item_id)] == class_id
    image = data.load_image(item_id)
    assert image.mode == "RGB" and image.size == (SIDE, SIDE)
    assert np.array_equal(np.asarray(image)[..., 0] > 0, np.asarray(drawing(number, 1)))


def test_vinyals_scheme(pristine):
    index = Omniglot().load(pristine, scheme="vinyals").index
    assert [len(index.classes(s)) for s in ("train", "val", "test")] == [1028, 172, 423]
    assert set(index.classes("val")) == set(VINYALS["splits"]["val"])


def test_check_reports_the_20_drawings_expected(pristine):
    report = Omniglot().check(pristine)
    assert report.problems == [
        f"1623 class(es) do not have 20 images, first '{next(iter(LAKE['splits'].values()))[0]}' has 2",
        "found 3246 images of the manifest's classes, expected 32460",
    ]
    assert report.facts["classes"] == 1623


def test_torchvision_omniglot_py_folder_is_accepted(root, tmp_path):
    wrapper = tmp_path / "torchvision"
    wrapper.mkdir()
    shutil.move(root, wrapper / "omniglot-py")
    data = Omniglot().load(wrapper)
    assert len(data.index.item_ids) == 1623 * PER_CLASS
    assert data.load_image(data.index.item_ids[0]).size == (SIDE, SIDE)


def test_missing_root_wrong_layout_and_missing_part(root, tmp_path):
    report = Omniglot().check(tmp_path / "absent")
    assert len(report.problems) == 1 and "does not exist" in report.problems[0] and "Lake et al. 2015" in report.problems[0]
    with pytest.raises(TcsFewshotError, match="does not exist"):
        Omniglot().load(tmp_path / "absent")
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "images_background.zip").write_bytes(b"PK")
    report = Omniglot().check(tmp_path / "zips")
    assert len(report.problems) == 1 and "neither images_background/ nor images_evaluation/" in report.problems[0]
    shutil.rmtree(root / "images_evaluation")
    problems = Omniglot().check(root).problems
    assert problems[0] == (
        f"'{root / 'images_evaluation'}' is missing; extract images_evaluation.zip of "
        f"{Omniglot.source} into '{root}'"
    )
    with pytest.raises(TcsFewshotError, match="images_evaluation' is missing"):
        Omniglot().load(root, scheme="vinyals")


def test_missing_class_empty_class_corrupt_image_and_wrong_part(root):
    gone, empty, damaged = CHARACTERS[3], CHARACTERS[1200], CHARACTERS[500]
    shutil.rmtree(root / gone[1] / gone[2])
    for path in (root / empty[1] / empty[2]).iterdir():
        path.unlink()
    (root / damaged[1] / damaged[2] / f"{damaged[0]:04d}_01.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    moved = "Bengali"  # a background alphabet put under images_evaluation
    shutil.move(root / "images_background" / moved, root / "images_evaluation" / moved)
    problems = Omniglot().check(root).problems
    assert any("missing on disk" in line and gone[2] in line for line in problems)
    assert any("no images" in line and empty[2] in line for line in problems)
    assert any("corrupt image" in line and f"{damaged[2]}/{damaged[0]:04d}_01.png" in line for line in problems)
    assert any("another split" in line and f"'{moved}/" in line for line in problems)
    with pytest.raises(TcsFewshotError, match=r"2 class\(es\) of the omniglot manifest have no images"):
        Omniglot().load(root)


def test_tasks_run_through_the_evaluator_on_raw_pixels(pristine, ncm_on_raw_pixels):
    data = Omniglot().load(pristine, scheme="vinyals")
    tasks = sample_tasks(data.index, TaskSpec(split="test", ways=5, shots=1, queries=1, seed=0), 5)
    # Features of the drawn items only: all 3246 images as 33075-d rows would take 430 MB.
    ids = sorted({i for task in tasks for i in [*task.support_ids, *task.query_ids]})
    records = ncm_on_raw_pixels(data, tasks, ids)
    assert len(records) == 5 and records["failure"].isna().all() and (records["n_query"] == 5).all()
    assert (records["accuracy"] == 1.0).all(), "one stroke pattern per character: images must match their labels"
