"""Manifests: counts of the published splits, integrity, the Chen rule, and a reproducible build."""

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tcs_fewshot.data import manifests
from data_manifests.build.splits import build_all, main, write_manifests
from tcs_fewshot.data.manifests import (
    list_manifests,
    load_manifest,
    manifest_checksum,
    read_manifest,
)
from tcs_fewshot.errors import TcsFewshotError

REPO = Path(__file__).resolve().parents[1]
SPLITS_DIR = REPO / "data_manifests" / "sources"  # the published split files, copied with provenance

# The class counts of the published splits (REFERENCES.md), per (benchmark, scheme).
COUNTS = {
    ("cub", "chen"): {"train": 100, "val": 50, "test": 50},
    ("cub", "metadataset"): {"train": 140, "val": 30, "test": 30},
    ("cub", "official"): {"all": 200},
    ("mini_imagenet", "ravi"): {"train": 64, "val": 16, "test": 20},
    ("tiered_imagenet", "ren"): {"train": 351, "val": 97, "test": 160},
    ("cifar_fs", "bertinetto"): {"train": 64, "val": 16, "test": 20},
    ("fc100", "oreshkin"): {"train": 60, "val": 20, "test": 20},
    ("omniglot", "vinyals"): {"train": 1028, "val": 172, "test": 423},
    ("omniglot", "lake"): {"train": 964, "test": 659},
}


@pytest.mark.parametrize("key", sorted(COUNTS), ids="/".join)
def test_manifest_loads_with_published_counts(key):
    manifest = load_manifest(*key)
    assert (manifest["benchmark"], manifest["scheme"]) == key
    assert {split: len(classes) for split, classes in manifest["splits"].items()} == COUNTS[key]
    assert manifest["expected"]["classes"] == sum(COUNTS[key].values())
    assert manifest["checksum"] == manifest_checksum(manifest)
    assert manifest["provenance"] and all(len(entry["sha256"]) == 64 for entry in manifest["provenance"])
    assert {entry["kind"] for entry in manifest["provenance"]} <= {"verbatim", "derived"}
    assert manifest["pretraining_overlap"] and manifest["class_id"] and manifest["citation"]
    classes = [c for split in manifest["splits"].values() for c in split]
    assert len(classes) == len(set(classes)), "splits must be disjoint"


def test_list_manifests_has_every_benchmark():
    assert set(COUNTS) <= set(list_manifests())


def test_expected_images():
    expected = {"classes": 200, "images": 11788, "images_per_class": None}
    assert load_manifest("cub", "official")["expected"] == expected
    assert load_manifest("mini_imagenet", "ravi")["expected"]["images_per_class"] == 600
    assert load_manifest("cifar_fs", "bertinetto")["expected"]["images"] == 60000
    assert load_manifest("omniglot", "lake")["expected"]["images"] == 1623 * 20


def test_chen_rule_reproduces_chen_split():
    every = sorted(load_manifest("cub", "official")["splits"]["all"])
    chen = load_manifest("cub", "chen")["splits"]
    assert chen == {"train": every[0::2], "val": every[1::4], "test": every[3::4]}
    assert [c[:3] for c in chen["train"][:3]] == ["001", "003", "005"]
    assert [c[:3] for c in chen["val"][:3]] == ["002", "006", "010"]
    assert [c[:3] for c in chen["test"][:3]] == ["004", "008", "012"]
    metadataset = load_manifest("cub", "metadataset")["splits"]
    assert sorted(c for split in metadataset.values() for c in split) == every


def test_official_scheme_names_the_image_split():
    assert load_manifest("cub", "official")["image_split"]["file"].endswith("train_test_split.txt")
    assert load_manifest("cub", "chen")["image_split"] is None


def test_extra_maps():
    mini = load_manifest("mini_imagenet", "ravi")
    assert set(mini["class_names"]) == {c for split in mini["splits"].values() for c in split}
    tiered = load_manifest("tiered_imagenet", "ren")
    parents = {split: {tiered["superclasses"][c] for c in classes} for split, classes in tiered["splits"].items()}
    assert [len(parents[s]) for s in ("train", "val", "test")] == [20, 6, 8]
    assert set(tiered["superclass_names"]) == set(tiered["superclasses"].values())
    fc100 = load_manifest("fc100", "oreshkin")
    assert {s: len(v) for s, v in fc100["superclass_splits"].items()} == {"train": 12, "val": 4, "test": 4}
    for split, classes in fc100["splits"].items():
        assert {fc100["superclasses"][c] for c in classes} == set(fc100["superclass_splits"][split])
    lake = load_manifest("omniglot", "lake")
    zips = lake["alphabets"]
    assert sorted(zips.values()).count("images_background") == 30 and len(zips) == 50
    assert all(zips[c.split("/")[0]] == "images_background" for c in lake["splits"]["train"])
    assert all(zips[c.split("/")[0]] == "images_evaluation" for c in lake["splits"]["test"])


def test_leakage_recorded_for_imagenet_subsets():
    for key in [("mini_imagenet", "ravi"), ("tiered_imagenet", "ren"), ("cub", "chen")]:
        assert load_manifest(*key)["pretraining_overlap"][0]["dataset"] == "ImageNet-1k"
    assert "43" in load_manifest("cub", "chen")["pretraining_overlap"][0]["note"]


def test_tampered_manifest_is_named(tmp_path):
    tampered = tmp_path / "chen.json"
    manifest = json.loads((REPO / "data_manifests" / "cub" / "chen.json").read_text())
    splits = manifest["splits"]
    splits["test"][0], splits["train"][0] = splits["train"][0], splits["test"][0]
    tampered.write_text(json.dumps(manifest))
    with pytest.raises(TcsFewshotError, match="chen.json' was modified") as error:
        read_manifest(tampered)
    assert "\n" not in str(error.value) and str(tampered) in str(error.value)


def test_tampered_manifest_in_the_package_is_named(tmp_path, monkeypatch):
    copy = tmp_path / "data_manifests"
    shutil.copytree(REPO / "data_manifests", copy)
    path = copy / "omniglot" / "lake.json"
    path.write_text(path.read_text().replace('"Angelic/character01"', '"Angelic/character99"', 1))
    monkeypatch.setattr(manifests, "_root", lambda: copy)
    with pytest.raises(TcsFewshotError, match="lake.json' was modified"):
        load_manifest("omniglot", "lake")
    load_manifest("omniglot", "vinyals")  # the others still load


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "is not a tcs-fewshot manifest"),
    ({"version": 2}, "has version 2"),
    ({"splits": {}}, "has no splits"),
])
def test_foreign_or_newer_manifest_refused(tmp_path, change, message):
    manifest = load_manifest("cub", "chen") | change
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(TcsFewshotError, match=message):
        read_manifest(path)
    path.write_text("{not json")
    with pytest.raises(TcsFewshotError, match="not valid JSON"):
        read_manifest(path)


def test_unknown_benchmark_or_scheme_lists_what_exists():
    with pytest.raises(TcsFewshotError, match=r"manifests exist for: .*cub.*mini_imagenet"):
        load_manifest("imagenet", "x")
    with pytest.raises(TcsFewshotError, match="choose one of: chen, metadataset, official"):
        load_manifest("cub", "ravi")


def test_builder_reproduces_committed_manifests(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0  # reads data_manifests/sources by default
    written = sorted(tmp_path.rglob("*.json"))
    assert {(p.parent.name, p.stem) for p in written} == set(COUNTS)
    for path in written:
        committed = REPO / "data_manifests" / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), f"{committed} differs from a fresh build"


def _doctored_splits(tmp_path):
    copy = tmp_path / "splits"
    shutil.copytree(SPLITS_DIR, copy)
    for path in [copy, *copy.rglob("*")]:  # the shared copy is read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def test_builder_stops_when_the_chen_rule_fails(tmp_path):
    splits = _doctored_splits(tmp_path)
    val = splits / "cub200" / "chen_closerlook" / "val.json"
    classes = json.loads(val.read_text())
    val.write_text(json.dumps(classes[1:] + classes[:1]))
    with pytest.raises(TcsFewshotError, match="Chen et al. sort rule"):
        build_all(splits)


def test_builder_stops_when_the_readme_counts_disagree(tmp_path, capsys):
    splits = _doctored_splits(tmp_path)
    readme = splits / "README.md"
    text = readme.read_text().replace("| 1028 / 172 / 423 characters |", "| 1028 / 171 / 423 characters |")
    readme.write_text(text)
    assert main([str(splits), "--out", str(tmp_path / "out")]) == 2
    assert "omniglot/vinyals/val.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_builder_output_is_sorted_json(tmp_path):
    path = write_manifests(build_all(SPLITS_DIR)[:1], tmp_path)[0]
    text = path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def test_installed_wheel_carries_the_manifests(tmp_path):
    """A non-editable install must find the manifests without the repository beside it."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "tcs_fewshot", source / "tcs_fewshot", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "data_manifests", source / "data_manifests", ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    wheel = next((tmp_path / "dist").glob("*.whl"))
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # Print where the manifests were read from: the development install's finder could
    # otherwise resolve tcs_fewshot.manifests to this repository and hide a wheel without them.
    probe = ("from tcs_fewshot.data import manifests as m; "
             "print(m._root(), len(m.load_manifest('cub', 'chen')['splits']['train']))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == [str(tmp_path / "site" / "tcs_fewshot" / "manifests"), "100"]


def test_nothing_reads_files_outside_the_repository():
    """A fresh clone with no sibling folders must run: no code or test names ``../shared``."""
    outside = re.compile(r"""parents?(\[\d\])?\s*/\s*["']shared["']|\.\./shared|/work/shared""")
    this_file = Path(__file__).resolve()
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("tcs_fewshot", "tests", "benchmarks")
        for path in (REPO / folder).rglob("*.py")
        if path.resolve() != this_file and outside.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert (SPLITS_DIR / "README.md").is_file()
