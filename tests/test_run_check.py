"""``run`` checks the benchmark before spending time, refuses unusable data in one line, and records the check."""

import json

from cli_invoke import invoke
from test_cifar import write_archive
from test_tiered_imagenet import write_tree

SMALL = ["--teacher", "pixels", "--methods", "ncm", "--ways", "2", "--shots", "1", "--queries", "1",
         "--tasks", "2", "--no-progress"]


def session(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())["sessions"][-1]


def test_too_few_images_is_refused_in_one_line_and_skip_check_runs(tmp_path):
    root = write_archive(tmp_path / "cifar")  # 5 images per class where the manifest expects 600
    out = tmp_path / "run"
    refused = invoke(["run", "--benchmark", "cifar_fs", "--root", str(root), "--out", str(out), *SMALL])
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1, refused.stderr
    assert f"cifar_fs data at '{root}' is not usable: 100 class(es) do not have 600 images" in lines[0]
    assert f"'tcs-fewshot data check cifar_fs --root {root}' lists every problem" in lines[0]
    assert "--skip-check" in lines[0] and "Traceback" not in refused.stderr
    assert not out.exists()  # nothing computed, nothing written
    passed = invoke(["run", "--benchmark", "cifar_fs", "--root", str(root), "--out", str(out), "--skip-check", *SMALL])
    assert passed.exit_code == 0, passed.stderr
    check = session(out)["data_check"]
    assert check["skipped"] is True
    assert check["counts"] == {"train": {"classes": 64, "images": 320}, "val": {"classes": 16, "images": 80},
                               "test": {"classes": 20, "images": 100}}
    # The check is not part of the run's identity: the same run resumes with or without it.
    resumed = invoke(["run", "--benchmark", "cifar_fs", "--root", str(root), "--out", str(out), "--skip-check", *SMALL])
    assert resumed.exit_code == 0, resumed.stderr


def test_a_passing_check_and_its_counts_go_into_the_manifest(tmp_path):
    root = write_tree(tmp_path / "tiered")  # the tiered manifest has no expected counts: this passes
    out = tmp_path / "run"
    outcome = invoke(["run", "--benchmark", "tiered_imagenet", "--root", str(root), "--out", str(out), *SMALL])
    assert outcome.exit_code == 0, outcome.stderr
    check = session(out)["data_check"]
    assert check["ok"] is True and check["problems"] == [] and check["images_decoded"] is False
    assert check["facts"]["classes"] == 608 and check["facts"]["images"] == 1216
    assert check["counts"]["test"] == {"classes": 160, "images": 320}
    assert "skip_check" not in (out / "config.toml").read_text()  # session behaviour, not saved with the run


def test_run_does_not_decode_every_image_but_names_a_corrupt_one_when_read(tmp_path):
    """The check before a run is layout and counts; ``data check`` decodes, and ``run`` names the file."""
    from PIL import Image

    from tcs_fewshot.data.benchmarks.folder import ImageFolderBenchmark

    for number in range(3):
        (tmp_path / "images" / f"c{number}").mkdir(parents=True)
        for item in range(3):
            Image.new("RGB", (8, 8), (80 * number, 10 * item, 0)).save(tmp_path / "images" / f"c{number}" / f"{item}.png")
    broken = tmp_path / "images" / "c1" / "2.png"
    broken.write_bytes(broken.read_bytes()[:30])
    benchmark = ImageFolderBenchmark(tmp_path / "images")
    assert any(str(broken) in line for line in benchmark.check().problems)
    assert not benchmark.check(verify_images=False).problems
    (tmp_path / "split.json").write_text(json.dumps({"test": ["c0", "c1", "c2"]}))
    outcome = invoke(["run", "--benchmark", "folder", "--root", str(tmp_path / "images"), "--split-file",
                      str(tmp_path / "split.json"), "--out", str(tmp_path / "run"), *SMALL])
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.exit_code == 2 and len(lines) == 1 and str(broken) in lines[0], outcome.stderr
