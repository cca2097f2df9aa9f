"""ImageFolderBenchmark on tiny ImageFolder trees and CSVs written here with PIL."""

import json

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
from tcs_fewshot.data.benchmarks.folder import ImageFolderBenchmark

N_CLASSES, PER_CLASS, SIZE = 10, 4, (12, 10)  # SIZE is (width, height) in pixels


def class_image(class_number: int, item: int) -> Image.Image:
    """A solid colour per class plus a little per-image noise: classes separable on raw pixels."""
    return Image.fromarray(class_colour(class_number, 1000 * class_number + item, (SIZE[1], SIZE[0], 3), spread=8))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "pets"
    for c in range(N_CLASSES):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(PER_CLASS):
            class_image(c, i).save(root / f"class{c:02d}" / f"img{i}.png")
    return root


@pytest.fixture
def csv_file(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    rows = ["path,label"]
    for c in range(4):
        for i in range(3):
            class_image(c, i).save(folder / f"{c}_{i}.jpg", quality=95)
            rows.append(f"shots/{c}_{i}.jpg,kind{c}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "list.csv"


def test_tree_loads_with_a_seeded_recorded_split(tree):
    assert isinstance(ImageFolderBenchmark(tree), Benchmark)
    data = ImageFolderBenchmark(tree).load()
    index = data.index
    assert index.name == "pets" and data.scheme == "custom" and index.is_train is None
    assert len(index.item_ids) == N_CLASSES * PER_CLASS
    assert "class03/img1.png" in index.item_ids.tolist()
    assert {split: len(index.classes(split)) for split in ("train", "val", "test")} == {"train": 6, "val": 2, "test": 2}
    record = data.manifest["split"]
    assert (record["seed"], record["fractions"]) == (0, [0.64, 0.16, 0.2]) and "default_rng(seed)" in record["rule"]
    image = data.load_image("class03/img1.png")
    assert image.mode == "RGB" and image.size == SIZE
    assert np.array_equal(np.asarray(image), np.asarray(class_image(3, 1)))


def test_seeded_split_is_deterministic_disjoint_and_depends_on_the_seed(tree):
    first = ImageFolderBenchmark(tree, seed=3).load().index.class_splits
    again = ImageFolderBenchmark(tree, seed=3).load().index.class_splits
    other = ImageFolderBenchmark(tree, seed=4).load().index.class_splits
    assert first == again
    assert first != other
    members = [c for classes in first.values() for c in classes]
    assert len(members) == len(set(members)) == N_CLASSES


def test_fractions_are_validated(tree):
    with pytest.raises(TcsFewshotError, match="fractions"):
        ImageFolderBenchmark(tree, fractions=(0.5, 0.5, 0.5))
    data = ImageFolderBenchmark(tree, fractions=(0.5, 0.5, 0.0)).load()
    assert len(data.index.classes("train")) == 5 and data.index.classes("test") == ()


def test_split_file_is_used_and_an_absent_class_is_an_error(tree, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(
        {"train": ["class00", "class01", "class02"], "val": ["class03"], "test": ["class04", "class05"]}
    ))
    data = ImageFolderBenchmark(tree, split_file=split_file).load()
    assert data.index.classes("val") == ("class03",)
    assert data.manifest["split"]["rule"] == "split file" and len(data.manifest["split"]["sha256"]) == 64
    split_file.write_text(json.dumps({"train": ["class00"], "val": [], "test": ["lizard"]}))
    benchmark = ImageFolderBenchmark(tree, split_file=split_file)
    with pytest.raises(TcsFewshotError, match="'lizard'"):
        benchmark.load()
    report = benchmark.check()
    assert not report.ok and any("lizard" in line and str(split_file) in line for line in report.problems)
    split_file.write_text(json.dumps({"train": ["class00"], "test": ["class00"]}))
    with pytest.raises(TcsFewshotError, match="more than once"):
        ImageFolderBenchmark(tree, split_file=split_file).load()


def test_csv_with_relative_paths(csv_file):
    data = ImageFolderBenchmark(csv_file, fractions=(0.5, 0.25, 0.25)).load()
    assert data.index.name == "list"
    assert sorted(data.index.all_classes()) == ["kind0", "kind1", "kind2", "kind3"]
    assert data.load_image("shots/2_1.jpg").size == SIZE
    assert ImageFolderBenchmark(csv_file).check().ok


def test_unreadable_csv_rows_are_named(csv_file):
    with open(csv_file, "a") as handle:
        handle.write("only-one-field\nghost.jpg,kind0\n")
    report = ImageFolderBenchmark(csv_file).check()
    assert report.problems == [f"2 unreadable row(s) in '{csv_file}', first line 14 (not 'path,label'); fix or remove them"]
    with pytest.raises(TcsFewshotError, match="line 14"):
        ImageFolderBenchmark(csv_file).load()


def test_empty_and_binary_csv_files_are_problems(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    expected = f"'{empty}' lists no images; write one 'path,label' row per image"
    assert ImageFolderBenchmark(empty).check().problems == [expected]
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    problems = ImageFolderBenchmark(binary).check().problems
    assert len(problems) == 1 and "is not a UTF-8 CSV" in problems[0]
    with pytest.raises(TcsFewshotError, match="is not a UTF-8 CSV"):
        ImageFolderBenchmark(binary).load()


def test_check_good_and_bad_input(tree, tmp_path):
    good = ImageFolderBenchmark(tree).check()
    assert good.ok, good.problems
    assert good.facts["classes"] == N_CLASSES and good.facts["images"] == N_CLASSES * PER_CLASS
    assert (good.facts["train_classes"], good.facts["val_classes"], good.facts["test_classes"]) == (6, 2, 2)

    missing = ImageFolderBenchmark(tmp_path / "nowhere").check()
    assert len(missing.problems) == 1 and "does not exist" in missing.problems[0]
    with pytest.raises(TcsFewshotError, match="does not exist"):
        ImageFolderBenchmark(tmp_path / "nowhere").load()

    flat = tmp_path / "flat"
    flat.mkdir()
    class_image(0, 0).save(flat / "a.png")
    assert "no class folders" in ImageFolderBenchmark(flat).check().problems[0]

    (tree / "class_empty").mkdir()
    (tree / "class01" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = ImageFolderBenchmark(tree).check()
    assert any("have no images" in line and "class_empty" in line for line in report.problems)
    assert any("corrupt image" in line and "class01/img2.png" in line for line in report.problems)
    # The empty folder holds nothing to draw, so loading ignores it (check still reports it).
    assert "class_empty" not in ImageFolderBenchmark(tree).load().index.all_classes()


def test_tasks_run_through_the_evaluator_on_raw_pixels(tree, ncm_on_raw_pixels):
    data = ImageFolderBenchmark(tree).load()
    tasks = sample_tasks(data.index, TaskSpec(split="train", ways=5, shots=1, queries=3, seed=0), 4)
    records = ncm_on_raw_pixels(data, tasks)
    assert len(records) == 4 and records["failure"].isna().all()
    assert (records["n_query"] == 15).all()
    # One colour per class: a loader that mixed up images and labels would not reach 100%.
    assert (records["accuracy"] == 1.0).all()
