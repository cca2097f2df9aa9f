"""The embedded glyphs benchmark, built for real at small size from the installed Noto fonts."""

import hashlib
import json
import re
import unicodedata

import numpy as np
import pytest

from tcs_fewshot import (
    FeatureSet,
    NearestClassMean,
    TaskSpec,
    TcsFewshotError,
    evaluate,
    sample_tasks,
)
from tcs_fewshot.data.benchmarks.base import Benchmark
from tcs_fewshot.data.benchmarks.glyphs import Glyphs
from data_manifests.build.glyphs import (
    FONT_PACKAGES,
    build_manifest,
    default_path,
)
from tcs_fewshot.data.benchmarks.glyphs_render import GlyphRenderer, locate_fonts

SMALL = {"renderings": 6, "max_classes_per_script": 6, "progress": False}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("glyphs")
    return root, Glyphs(**SMALL).load(root)


def pixels(data):
    """``(n_items, 32 * 32)`` float32 ink in [0, 1], read through the adapter's image loader."""
    ids = data.index.item_ids
    return FeatureSet(ids, np.stack([1 - np.asarray(data.load_image(i).convert("L"), np.float32).ravel() / 255 for i in ids]))


def test_small_build_has_nonblank_images_of_the_expected_shape(small):
    root, data = small
    assert isinstance(Glyphs(), Benchmark) and Glyphs.schemes == ("scripts",)
    assert data.scheme == "scripts" and data.index.is_train is None
    assert len(data.index.item_ids) == 9 * 6 * 6  # 9 scripts x 6 letters x 6 renderings
    for item_id, label in zip(data.index.item_ids.tolist(), data.index.labels.tolist()):
        assert re.fullmatch(r"[A-Z][a-z]+/U\+[0-9A-F]{4,5}/\d", item_id) and item_id.rsplit("/", 1)[0] == label
    image = data.load_image(data.index.item_ids[0])
    assert image.mode == "RGB" and image.size == (32, 32)
    ink = pixels(data).features
    assert (ink.max(axis=1) > 0.5).all()  # every image has solid ink
    assert (ink.reshape(-1, 32, 32)[:, [0, -1], :].max() == 0)  # centred, nothing clipped at the edges
    build = data.manifest["build"]
    assert build["counts"] == {"classes": 54, "images": 324, "renderings_per_class": 6, "train": 18, "val": 12, "test": 24}
    assert all(font["matches_manifest"] for font in build["fonts"])
    assert [p.name for p in root.iterdir()] == [data.root.name]  # no temporary folder left behind


def test_builds_are_deterministic_and_fonts_can_come_from_a_folder(small, tmp_path):
    _, first = small
    font_dir = tmp_path / "fonts"
    font_dir.mkdir()
    for name, path in locate_fonts(first.manifest["provenance"]).items():
        (font_dir / name).symlink_to(path)
    second = Glyphs(**SMALL, font_dir=font_dir).load(tmp_path / "again")
    assert second.manifest["build"]["images_sha256"] == first.manifest["build"]["images_sha256"]
    assert np.array_equal(second.index.item_ids, first.index.item_ids)
    assert second.manifest["build"]["images_sha256"] == hashlib.sha256(
        np.load(second.root / "images.npy").tobytes()
    ).hexdigest()


def test_classes_are_distinct_and_renderings_differ(small):
    _, data = small
    fonts = data.manifest["provenance"]
    renderer = GlyphRenderer(locate_fonts(fonts), size=32)
    seen, features = {}, pixels(data)
    for class_id in data.index.all_classes():
        script, code = class_id.split("/")
        for image in renderer.reference(int(code[2:], 16), data.manifest["scripts"][script]["fonts"]):
            digest = hashlib.sha256(image.tobytes()).hexdigest()
            assert seen.setdefault(digest, class_id) == class_id, f"{class_id} renders like {seen[digest]}"
        rows = features.rows(data.index.item_ids[data.index.positions(class_id)])
        assert len({row.tobytes() for row in rows}) == len(rows)  # every rendering differs


def test_committed_manifest_splits_scripts_disjointly():
    manifest = json.loads(default_path().read_text(encoding="utf-8"))
    split_scripts = {split: {c.split("/")[0] for c in classes} for split, classes in manifest["splits"].items()}
    assert set(split_scripts) == {"train", "val", "test"}
    assert not (split_scripts["train"] & split_scripts["val"] or split_scripts["train"] & split_scripts["test"]
                or split_scripts["val"] & split_scripts["test"])
    all_classes = [c for classes in manifest["splits"].values() for c in classes]
    assert len(all_classes) == len(set(all_classes)) >= 400
    assert min(len(classes) for classes in manifest["splits"].values()) >= 20  # 20-way tasks in every split
    for class_id in all_classes:
        script, code = class_id.split("/")
        char = chr(int(code[2:], 16))
        assert unicodedata.category(char) in ("Lu", "Ll", "Lo") and not unicodedata.decomposition(char)
        assert manifest["scripts"][script]["split"] in ("train", "val", "test")
    assert {font["package"] for font in manifest["provenance"]} == set(FONT_PACKAGES)


def test_committed_manifest_is_what_the_builder_derives_from_the_installed_fonts():
    committed = json.loads(default_path().read_text(encoding="utf-8"))
    derived = json.loads(json.dumps(build_manifest()))
    committed["derivation"].pop("python"), derived["derivation"].pop("python")
    if derived["derivation"]["unicode_version"] == committed["derivation"]["unicode_version"]:
        assert derived == committed
    else:  # another Python's Unicode database: the font facts still agree
        assert derived["provenance"] == committed["provenance"]


def test_second_load_reuses_the_build(small, monkeypatch):
    root, first = small
    stamp = (first.root / "build.json").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt although a build exists")

    monkeypatch.setattr("tcs_fewshot.data.benchmarks.glyphs.build_images", no_rebuild)
    again = Glyphs(**SMALL).load(root)
    assert again.index.fingerprint == first.index.fingerprint
    assert (first.root / "build.json").stat().st_mtime_ns == stamp
    report = Glyphs(**SMALL).check(root)
    assert report.ok and report.facts["built"] is True


def test_missing_fonts_give_one_error_naming_the_packages(tmp_path):
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    with pytest.raises(TcsFewshotError, match=r"pip install fontpkg-noto-kufi-arabic==\S+ .*fontpkg-noto-serif==") as error:
        Glyphs(**SMALL, font_dir=empty).load(tmp_path / "home")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())
    report = Glyphs(**SMALL, font_dir=empty).check(tmp_path / "home")
    assert not report.ok and "pip install" in report.problems[0]


def copy_build(data, root):
    """A copy of the build of ``data`` under ``root`` (the root of another cache); returns its folder."""
    target = root / data.root.name
    target.mkdir(parents=True)
    for name in ("images.npy", "items.txt", "build.json"):
        (target / name).write_bytes((data.root / name).read_bytes())
    return target


def test_damaged_build_is_reported(small, tmp_path):
    _, data = small
    copy = tmp_path / "copy"
    target = copy_build(data, copy)
    with open(target / "images.npy", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x01")
    report = Glyphs(**SMALL).check(copy)
    assert not report.ok and "damaged" in report.problems[0]


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(TcsFewshotError, match="no split scheme 'alphabets'"):
        Glyphs(**SMALL).load(tmp_path, scheme="alphabets")
    with pytest.raises(TcsFewshotError, match="no script 'Klingon'"):
        Glyphs(**SMALL, scripts=["Klingon"]).load(tmp_path)


def test_tasks_run_through_the_evaluator_with_ncm_on_pixels(small):
    _, data = small
    tasks = sample_tasks(data.index, TaskSpec(split="test", ways=5, shots=1, queries=5, seed=0), 30)
    assert {c.split("/")[0] for task in tasks for c in task.classes} <= set(data.manifest["rules"]["script_split"]["test"])
    records = evaluate(tasks, {"ncm": NearestClassMean()}, pixels(data), measure_memory=False)
    assert len(records) == 30 and ("failure" not in records or records["failure"].isna().all())
    assert records["accuracy"].mean() > 0.4  # chance is 0.2


def swapped_fonts(data, folder):
    """``folder`` holding the fonts of ``data``, but the upright Noto Sans in place of its italic."""
    fonts = locate_fonts(data.manifest["provenance"])
    folder.mkdir()
    for name, path in fonts.items():
        (folder / name).symlink_to(path)
    swapped = "NotoSans-Italic[wdth,wght].ttf"
    (folder / swapped).unlink()
    (folder / swapped).symlink_to(fonts["NotoSans[wdth,wght].ttf"])
    return swapped


def test_a_build_from_other_fonts_is_never_reused(small, tmp_path):
    _, first = small
    root = tmp_path / "cache"
    reference = copy_build(first, root)
    swapped = swapped_fonts(first, tmp_path / "fonts")
    with pytest.warns(UserWarning, match=re.escape(f"differ from the manifest's, first '{swapped}'")):
        second = Glyphs(**SMALL, font_dir=tmp_path / "fonts").load(root)
    assert second.root.parent == root and second.root != reference
    assert not {font["file"]: font for font in second.manifest["build"]["fonts"]}[swapped]["matches_manifest"]
    assert second.manifest["build"]["images_sha256"] != first.manifest["build"]["images_sha256"]
    assert Glyphs(**SMALL, font_dir=tmp_path / "fonts").check(root).facts["built"] is True
    again = Glyphs(**SMALL).load(root)  # the installed fonts still find the reference build
    assert again.root == reference and again.manifest["build"]["images_sha256"] == first.manifest["build"]["images_sha256"]


@pytest.mark.parametrize("damage", ["corrupt build.json", "truncated images.npy", "no images_file_sha256"])
def test_a_damaged_build_is_a_problem_for_check_and_rebuilt_by_load(small, tmp_path, damage):
    _, data = small
    root = tmp_path / "cache"
    target = copy_build(data, root)
    if damage == "corrupt build.json":
        (target / "build.json").write_text("{not json")
    elif damage == "truncated images.npy":
        (target / "images.npy").write_bytes((target / "images.npy").read_bytes()[:1000])
    else:
        build = json.loads((target / "build.json").read_text())
        del build["images_file_sha256"]
        (target / "build.json").write_text(json.dumps(build))
    report = Glyphs(**SMALL).check(root)
    assert not report.ok and len(report.problems) == 1 and "\n" not in report.problems[0]
    assert f"glyphs build '{target}' is damaged" in report.problems[0] and "delete that folder" in report.problems[0]
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    with pytest.raises(TcsFewshotError, match="is damaged"):  # cannot rebuild without the fonts
        Glyphs(**SMALL, font_dir=empty).load(root)
    with pytest.warns(UserWarning, match="is damaged .* rebuilding it"):
        again = Glyphs(**SMALL).load(root)
    assert again.root == target and again.manifest["build"]["images_sha256"] == data.manifest["build"]["images_sha256"]
    assert Glyphs(**SMALL).check(root).ok and [p.name for p in root.iterdir()] == [target.name]


def test_a_folder_in_the_way_of_a_build_is_never_replaced(small, tmp_path):
    _, data = small
    (tmp_path / data.root.name).mkdir()
    (tmp_path / data.root.name / "notes.txt").write_text("mine")
    with pytest.raises(TcsFewshotError, match="holds files that are not a glyphs build"):
        Glyphs(**SMALL).load(tmp_path)
    assert (tmp_path / data.root.name / "notes.txt").read_text() == "mine"


def test_an_unwritable_root_is_a_problem_before_rendering(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    report = Glyphs(**SMALL).check(blocker / "glyphs")
    assert not report.ok and len(report.problems) == 1 and "writable" in report.problems[0]

    def no_render(*args, **kwargs):
        raise AssertionError("rendered before finding that the root cannot be written")

    monkeypatch.setattr(GlyphRenderer, "render", no_render)
    with pytest.raises(TcsFewshotError, match="writable") as error:
        Glyphs(**SMALL).load(blocker / "glyphs")
    assert "\n" not in str(error.value) and str(blocker) in str(error.value)


def test_pfsl_split_keeps_a_face_on_one_side_and_leaves_the_index_as_it_was(tmp_path):
    # Thai has 10 faces: with 20 renderings, renderings 2j and 2j+1 are face j with other jitters.
    data = Glyphs(renderings=20, scripts=("Thai",), max_classes_per_script=3, progress=False).load(tmp_path)
    index, split = data.index, data.image_split
    assert index.is_train is None and split.shape == index.item_ids.shape
    pairs = split.reshape(3, 10, 2)
    assert (pairs[..., 0] == pairs[..., 1]).all(), "both renderings of a face on one side"
    assert (pairs[..., 0].sum(axis=1) == 5).all(), "half the faces of each letter are train faces"
    again = Glyphs(renderings=20, scripts=("Thai",), max_classes_per_script=3, progress=False).load(tmp_path)
    assert np.array_equal(again.image_split, split)
    assert data.manifest["image_split"]["train_images"] == 30 and data.manifest["image_split"]["fewest_train_images"] == 10
    pfsl = data.index_for("pfsl")
    assert np.array_equal(pfsl.is_train, split) and pfsl.fingerprint != index.fingerprint
    task = sample_tasks(pfsl, TaskSpec(protocol="pfsl", shots=5, seed=0), 1).tasks[0]
    assert len(task.support_ids) == 15 and len(task.query_ids) == 30
    assert not set(task.support_ids) & set(task.query_ids)
