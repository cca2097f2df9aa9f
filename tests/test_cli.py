"""The command line: exit codes 0/1/2 and one-line errors, run as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_features, make_index

from tcs_fewshot import save_features_file

CLI = [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()"]


def run_cli(*args, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def features_file(tmp_path):
    index = make_index()
    path = tmp_path / "toy.npz"
    save_features_file(path, index, make_features(index))
    return path


def test_run_writes_tables_and_resumes(tmp_path, features_file):
    args = ["run", "--features", str(features_file), "--ways", "3", "--shots", "2", "--queries", "5",
            "--tasks", "40", "--out", str(tmp_path / "run"), "--no-progress"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "ncm" in first.stdout and "paired differences" in first.stdout
    for name in ("summary.md", "summary.csv", "paired.md", "manifest.json", "records.sqlite", "tasks.json.gz"):
        assert (tmp_path / "run" / name).exists()
    columns = ["method", "n", "failures", "accuracy", "ci95", "std"]
    first_table = pd.read_csv(tmp_path / "run" / "summary.csv")[columns]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert pd.read_csv(tmp_path / "run" / "summary.csv")[columns].equals(first_table)
    assert first_table["n"].eq(40).all() and first_table["accuracy"].gt(60).all()
    latex = run_cli("report", str(tmp_path / "run"), "--format", "latex")
    assert latex.returncode == 0 and r"\begin{tabular}" in latex.stdout and r"$\pm$" in latex.stdout
    csv = run_cli("report", str(tmp_path / "run"), "--paired", "--format", "csv", "--ci", "t")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("dataset,protocol,split")


def test_tasks_file_round_trip_through_the_cli(tmp_path, features_file):
    exported = run_cli("tasks", "--features", str(features_file), "--ways", "2", "--shots", "1", "--queries", "3",
                       "--tasks", "10", "--out", str(tmp_path / "t.json.gz"))
    assert exported.returncode == 0, exported.stderr
    used = run_cli("run", "--features", str(features_file), "--tasks-file", str(tmp_path / "t.json.gz"),
                   "--methods", "ncm", "--out", str(tmp_path / "run"), "--no-progress")
    assert used.returncode == 0, used.stderr
    assert "ways 2" in used.stdout and "shots 1" in used.stdout


def test_pfsl_protocol(tmp_path, features_file):
    result = run_cli("run", "--features", str(features_file), "--protocol", "pfsl", "--shots", "2", "--tasks", "3",
                     "--methods", "ncm,logreg", "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert table["protocol"].eq("pfsl").all() and table["n"].eq(3).all()
    assert table["method"].tolist() == ["ncm", "logreg"] and table["accuracy"].gt(80).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--ways", "9"], "9-way tasks need 9 classes but split 'test' of 'digits' has 5"),
        (["run", "--queries", "400"], "lower --queries to at most"),
        (["run", "--split", "val"], "has no split 'val'; choose one of: test, train"),
        (["run", "--methods", "ncm,magic"], "unknown method 'magic'"),
        (["run", "--features", "missing.npz"], "features file 'missing.npz' does not exist"),
        (["run", "--shots", "0"], "Invalid value for '--shots'"),
        (["report", "nowhere"], "'nowhere' is not a run directory"),
        (["run", "--tasks-file", "nope.json"], "task file 'nope.json' does not exist"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, args, message):
    extra = ["--benchmark", "digits", "--no-progress"] if args[0] == "run" else ["--format=md"]
    result = run_cli(*args, *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip().startswith("error") or "Error" in line]) == 1


def test_bad_features_file_is_named(tmp_path):
    np.savez(tmp_path / "bad.npz", ids=np.array(["a", "b"]), labels=np.array(["x", "y"]))
    result = run_cli("run", "--features", str(tmp_path / "bad.npz"), "--no-progress")
    assert result.returncode == 2 and "lacks array(s) features" in result.stderr


def test_help_has_examples():
    for command in ("run", "report", "tasks"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "Example: tcs-fewshot" in result.stdout


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(ids=np.array(["a", "b"]), labels=np.array(["x", "y"]), features=np.array([["p"], ["q"]])), "must be numeric"),
        (dict(ids=np.array(["a", "b"]), labels=np.array(["x", "y"]), features=np.ones((2, 3)), split=np.array(["test"])),
         "'split' has shape (1,) but 'ids' has (2,)"),
        (dict(ids=np.array(["a", "b"]), labels=np.array(["x", "y"]), features=np.ones((2, 3)), split=np.array(["", ""])),
         "every 'split' entry is empty"),
    ],
)
def test_malformed_features_files(tmp_path, arrays, message):
    np.savez(tmp_path / "f.npz", **arrays)
    result = run_cli("run", "--features", str(tmp_path / "f.npz"), "--no-progress")
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_non_npz_file_is_named(tmp_path):
    (tmp_path / "f.npz").write_text("hello")
    result = run_cli("run", "--features", str(tmp_path / "f.npz"), "--no-progress")
    assert result.returncode == 2 and "is not a readable .npz features file" in result.stderr


def test_tasks_file_fixes_the_shape(tmp_path, features_file):
    run_cli("tasks", "--features", str(features_file), "--ways", "2", "--tasks", "3", "--queries", "2",
            "--out", str(tmp_path / "t.json"))
    result = run_cli("run", "--features", str(features_file), "--tasks-file", str(tmp_path / "t.json"),
                     "--shots", "3", "--no-progress")
    assert result.returncode == 2 and "--tasks-file fixes the tasks; drop --shots" in result.stderr


def test_reference_must_be_a_method_and_is_checked_first(tmp_path):
    result = run_cli("run", "--benchmark", "digits", "--methods", "ncm", "--reference", "logreg",
                     "--out", str(tmp_path / "r"), "--no-progress")
    assert result.returncode == 2 and "--reference 'logreg' is not among --methods ncm" in result.stderr
    assert not (tmp_path / "r").exists()


def test_default_run_is_the_embedded_emoji_benchmark(tmp_path):
    result = run_cli("run", "--tasks", "20", "--teacher", "pixels", "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert table["dataset"].eq("emoji").all() and table["n"].eq(20).all()
    assert table["accuracy"].between(20, 100).all(), "raw pixels carry some signal, 5-way chance is 20%"


def test_benchmarks_and_data_commands(tmp_path):
    listing = run_cli("benchmarks")
    assert listing.returncode == 0
    for name in ("emoji", "glyphs", "cub", "mini_imagenet", "tiered_imagenet", "cifar_fs", "fc100", "omniglot"):
        assert name in listing.stdout
    missing = run_cli("data", "check", "cub", "--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "CUB_200_2011.tgz" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run_cli("data", "check", "imagenet")
    assert unknown.returncode == 2 and "unknown benchmark 'imagenet'" in unknown.stderr
    no_archive = run_cli("data", "prepare", "emoji", "--archive", str(tmp_path / "x.tgz"))
    assert no_archive.returncode == 2 and "has no archive to prepare" in no_archive.stderr
    usable = run_cli("data", "check", "glyphs")
    assert usable.returncode == 0 and "usable" in usable.stdout


def test_users_own_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(6):
        colour = rng.integers(0, 255, size=3)
        (tmp_path / "images" / f"kind{c}").mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(colour + rng.normal(0, 10, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"kind{c}" / f"{i}.png")
    (tmp_path / "split.json").write_text('{"train": ["kind0", "kind1"], "test": ["kind2", "kind3", "kind4", "kind5"]}')
    result = run_cli("run", "--benchmark", "folder", "--root", str(tmp_path / "images"), "--split-file",
                     str(tmp_path / "split.json"), "--ways", "3", "--shots", "2", "--queries", "3", "--tasks", "10",
                     "--teacher", "pixels", "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert table["n"].eq(10).all() and table.set_index("method")["accuracy"]["ncm"] > 90, "one colour per class"
    no_root = run_cli("run", "--benchmark", "folder", "--no-progress")
    assert no_root.returncode == 2 and "--benchmark folder needs --root" in no_root.stderr


def test_folder_from_a_csv_and_data_check_on_it(tmp_path):
    from PIL import Image

    rows = ["path,label"]
    for c in range(5):
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * c, dtype=np.uint8)).save(tmp_path / f"{c}_{i}.png")
            rows.append(f"{c}_{i}.png,kind{c}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "split.json").write_text('{"train": ["kind0", "kind1"], "test": ["kind2", "kind3", "kind4"]}')
    check = run_cli("data", "check", "folder", "--root", str(tmp_path / "list.csv"), "--split-file",
                    str(tmp_path / "split.json"))
    assert check.returncode == 0, check.stderr
    result = run_cli("run", "--benchmark", "folder", "--root", str(tmp_path / "list.csv"), "--split-file",
                     str(tmp_path / "split.json"), "--ways", "3", "--shots", "1", "--queries", "2", "--tasks", "5",
                     "--methods", "ncm", "--teacher", "pixels", "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(tmp_path / "run" / "summary.csv")["accuracy"].eq(100).all()
    (tmp_path / "2_0.png").write_bytes(b"\x89PNG broken")
    damaged = run_cli("data", "check", "folder", "--root", str(tmp_path / "list.csv"))
    assert damaged.returncode == 2 and "2_0.png" in damaged.stderr


def test_run_with_the_offline_teacher_caches_its_features(tmp_path):
    """The default teacher (ImageNet MobileNetV2) embeds a user's folder once; a re-run reuses it."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in range(4):
        (tmp_path / "images" / f"kind{c}").mkdir(parents=True)
        for i in range(4):
            pixels = np.full((32, 32, 3), 60 * c, dtype=np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"kind{c}" / f"{i}.png")
    (tmp_path / "split.json").write_text('{"test": ["kind0", "kind1", "kind2", "kind3"]}')
    args = ["run", "--benchmark", "folder", "--root", str(tmp_path / "images"), "--split-file", str(tmp_path / "split.json"),
            "--ways", "4", "--shots", "1", "--queries", "3", "--tasks", "5", "--methods", "ncm", "--no-progress"]
    first = run_cli(*args, "--out", str(tmp_path / "one"))
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    embedding = manifest["config"]["data"]["embedding"]
    assert embedding["teacher"] == "torchvision:mobilenet_v2" and embedding["pretraining"] == "ImageNet-1k"
    cache = list((Path(os.environ["TCS_FEWSHOT_DATA"]) / "features").glob("**/meta.json"))
    assert cache, "teacher features are cached on disk"
    info = run_cli("cache", "info")
    assert info.returncode == 0 and "1280" in info.stdout


def test_fallbacks_are_recorded_in_the_manifest_and_reported(tmp_path, features_file):
    run = tmp_path / "run"
    result = run_cli("run", "--features", str(features_file), "--protocol", "pfsl", "--shots", "2", "--tasks", "2",
                     "--methods", "simpleshot", "--out", str(run), "--no-progress")
    assert result.returncode == 0, result.stderr
    fallbacks = json.loads((run / "manifest.json").read_text())["config"]["fallbacks"]
    assert fallbacks == ["simpleshot centres on each task's support mean (pFSL evaluates every class)"]
    shown = run_cli("report", str(run))
    assert shown.returncode == 0 and "support mean" in shown.stdout
    markdown = run_cli("report", str(run), "--format", "md")
    assert "fallback: simpleshot centres on each task's support mean" in markdown.stderr


def test_the_student_image_size_is_a_documented_default_not_read_from_the_data():
    from types import SimpleNamespace

    from tcs_fewshot.runs.experiment import RunConfig, silent_fallbacks
    from tcs_fewshot.models.students import DEFAULT_STUDENT_IMAGE_SIZE, build_student

    def no_image(item):
        raise AssertionError("the student's size must not come from an image")

    data = SimpleNamespace(index=SimpleNamespace(item_ids=np.array(["a/1.png"])), load_image=no_image)
    assert silent_fallbacks(RunConfig(methods=("tcs",)), {"tcs": "student"}, None, data) == []
    assert build_student(RunConfig().student).image_size == DEFAULT_STUDENT_IMAGE_SIZE == 64
