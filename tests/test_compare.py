"""Reports over several runs: run and sweep discovery, cross-run pairing, labels, leakage warnings."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import make_features, make_index

from tcs_fewshot import save_features_file
from tcs_fewshot.cli import entry_point
from tcs_fewshot.data.manifests import load_manifest
from tcs_fewshot.errors import RunDirectoryError, TcsFewshotError
from tcs_fewshot.reports.compare import compare_runs, load_runs
from tcs_fewshot.runs.experiment import RunConfig, run_experiment
from tcs_fewshot.reports.leakage import leakage_warning
from tcs_fewshot.runs.rundirs import find_runs
from tcs_fewshot.runs.store import RecordStore

CLI = [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()"]
SHAPE = {"ways": 3, "queries": 5, "tasks": 20}


@pytest.fixture
def cli(capsys, monkeypatch):
    """The console script in this process (a subprocess costs seconds of imports): (exit code, stdout, stderr)."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["tcs-fewshot", *map(str, args)])
        try:
            entry_point()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs on one features file: A (ncm), B (logreg) and both (ncm, logreg) on the same tasks; other
    tasks (seed 1); a sweep over shots 1 and 2 (ncm); each a run directory."""
    root = tmp_path_factory.mktemp("runs")
    features = root / "toy.npz"
    index = make_index()
    save_features_file(features, index, make_features(index, separation=0.4))  # hard enough to differ

    def run(name, methods, shots=2, seed=0):
        config = RunConfig(features=str(features), shots=shots, seed=seed, methods=methods, **SHAPE)
        return run_experiment(config, run_dir=root / name)

    made = {
        "A": run("A", ("ncm",)),
        "B": run("B", ("logreg",)),
        "both": run("both", ("ncm", "logreg")),
        "other_tasks": run("other_tasks", ("ncm",), seed=1),
        "sweep/shots2": run("sweep/shots2", ("ncm",), shots=2),
        "sweep/shots1": run("sweep/shots1", ("ncm",), shots=1),
    }
    return root, made


def test_find_runs_expands_sweeps_in_natural_order_once(runs, tmp_path):
    root, _ = runs
    assert find_runs([root / "A"]) == [root / "A"]
    assert find_runs([root / "sweep", root / "A", root / "sweep" / "shots1"]) == [
        root / "sweep" / "shots1", root / "sweep" / "shots2", root / "A"]
    for name in ("shots10", "shots2"):
        (tmp_path / "sweep" / name).mkdir(parents=True)
        (tmp_path / "sweep" / name / "manifest.json").write_text("{}")
    assert [path.name for path in find_runs([tmp_path / "sweep"])] == ["shots2", "shots10"]


@pytest.mark.parametrize("name, message", [
    ("missing", "is not a run directory (no manifest.json) nor a sweep of runs (does not exist)"),
    ("empty", "holds no run directories"),
])
def test_find_runs_refuses_what_is_neither_run_nor_sweep(tmp_path, name, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirectoryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_runs([tmp_path / name])
    with pytest.raises(RunDirectoryError, match="no run directory given"):
        find_runs([])


def test_a_run_without_records_is_named(runs, tmp_path):
    root, _ = runs
    (tmp_path / "started").mkdir()
    shutil.copy(root / "A" / "manifest.json", tmp_path / "started")
    RecordStore(tmp_path / "started" / "records.sqlite").close()  # created, no task finished yet
    with pytest.raises(RunDirectoryError, match="run '.*started' holds no records yet"):
        compare_runs([root / "A", tmp_path / "started"])


def test_methods_of_two_runs_pair_as_if_run_together(runs):
    root, made = runs
    summary, paired = compare_runs([root / "A", root / "B"], reference="ncm")
    together = made["both"].paired
    assert summary["method"].tolist() == ["ncm", "logreg"] and summary["run"].tolist() == ["A", "B"]
    assert summary["accuracy"].to_numpy() == pytest.approx(made["both"].summary["accuracy"].to_numpy())
    assert summary["network"].tolist() == ["teacher", "teacher"], "probes deploy the teacher (from the manifest)"
    assert summary["flops_per_image"].isna().all(), "a --features run has no teacher model to measure"
    columns = ["method", "reference", "n_pairs", "difference", "ci95", "wins", "losses"]
    assert len(paired) == 1 and paired["n_pairs"].iloc[0] == SHAPE["tasks"]
    pd.testing.assert_frame_equal(paired[columns], together[columns], check_dtype=False)


def test_a_method_in_two_runs_of_one_setting_gets_run_labels(runs):
    root, _ = runs
    summary, paired = compare_runs([root / "A", root / "both"], reference="ncm@A")
    assert summary["method"].tolist() == ["ncm@A", "ncm@both", "logreg"]
    same = paired.set_index("method").loc["ncm@both"]
    # The same probe on the same features and tasks: identical accuracies, paired on every task.
    assert same["n_pairs"] == SHAPE["tasks"] and same["difference"] == 0 and same["wins"] == same["losses"] == 0
    with pytest.raises(TcsFewshotError, match="reference 'ncm' is in several runs; choose one of: ncm@A, ncm@both"):
        compare_runs([root / "A", root / "both"], reference="ncm")


def test_runs_on_other_tasks_are_never_paired(runs):
    root, _ = runs
    message = (r"runs 'A' and 'other_tasks' were evaluated on different tasks \(task checksums \w{12} and \w{12}\), "
               r"so they cannot be paired; evaluate both on the same tasks with --tasks-file")
    with pytest.raises(TcsFewshotError, match=message):
        compare_runs([root / "A", root / "other_tasks"], reference="ncm@A")
    summary, paired = compare_runs([root / "A", root / "other_tasks"])
    assert summary["n"].tolist() == [SHAPE["tasks"]] * 2
    assert paired.empty and "'A' and 'other_tasks' were evaluated on different tasks" in paired.attrs["unpaired"][0]


def test_a_sweep_keeps_one_label_per_method_across_settings(runs):
    root, _ = runs
    summary, paired = compare_runs([root / "sweep"])
    assert summary[["shots", "method", "run"]].values.tolist() == [[1, "ncm", "sweep/shots1"], [2, "ncm", "sweep/shots2"]]
    assert paired.empty and paired.attrs["unpaired"] == []
    # Beside a run of a shared setting, the sweep's runs are labelled by the sweep, not per setting.
    summary, paired = compare_runs([root / "sweep", root / "A"], reference="ncm@A")
    assert summary["method"].tolist() == ["ncm@sweep", "ncm@sweep", "ncm@A"]
    assert paired["method"].tolist() == ["ncm@sweep"] and paired["shots"].tolist() == [2]
    assert paired["difference"].iloc[0] == 0


def provenance(benchmark, scheme, pretraining="ImageNet-1k", teacher="torchvision:mobilenet_v2"):
    """A run manifest's data provenance as experiment.load_inputs records it, from the real data manifest."""
    data = load_manifest(benchmark, scheme)
    embedding = {"teacher": teacher, "identity": "x", "pretraining": pretraining, "config": {}}
    return {"config": {"data": {"benchmark": benchmark, "scheme": scheme, "manifest_checksum": data["checksum"],
                                "pretraining_overlap": data["pretraining_overlap"], "embedding": embedding}}}


@pytest.mark.parametrize("benchmark, scheme, pretraining, expected", [
    ("mini_imagenet", "ravi", "ImageNet-1k", "the test classes included, is an ImageNet-1k class"),
    ("tiered_imagenet", "ren", "ImageNet-1k", "all 608 classes, the test classes included"),
    ("cub", "chen", "ImageNet-1k", "some CUB images are ImageNet images"),
    ("mini_imagenet", "ravi", "ImageNet-21k + ImageNet-1k", "pretrained on ImageNet-21k + ImageNet-1k"),
    ("mini_imagenet", "ravi", "ImageNet-12k", "covered by its pretraining on ImageNet-12k"),
    ("cub", "official", "LVD-142M", "covered by its pretraining on LVD-142M"),
    ("emoji", "subgroups", "LVD-142M", "web-trained teachers have likely seen these styles"),
    ("mini_imagenet", "ravi", "unknown", "Possible leakage: the pretraining data of teacher"),
])
def test_leakage_warning_when_the_teacher_saw_the_benchmark(benchmark, scheme, pretraining, expected):
    warning = leakage_warning(provenance(benchmark, scheme, pretraining))
    assert warning is not None and expected in warning and benchmark in warning
    assert "\n" not in warning


@pytest.mark.parametrize("benchmark, scheme, pretraining", [
    ("emoji", "subgroups", "ImageNet-1k"),      # ImageNet-1k has no emoji classes
    ("glyphs", "scripts", "ImageNet-1k"),       # no class in common
    ("cifar_fs", "bertinetto", "ImageNet-1k"),  # none known (not assessed)
    ("omniglot", "lake", "unknown"),
    ("mini_imagenet", "ravi", "OpenAI WIT-400M"),
])
def test_no_leakage_warning_without_a_recorded_overlap(benchmark, scheme, pretraining):
    assert leakage_warning(provenance(benchmark, scheme, pretraining)) is None


def test_no_leakage_warning_without_a_teacher(runs):
    root, _ = runs
    pixels = provenance("mini_imagenet", "ravi")
    pixels["config"]["data"]["embedding"] = "raw pixels, 16x16 RGB"
    assert leakage_warning(pixels) is None
    assert leakage_warning(load_runs([root / "A"])[0].manifest) is None  # a features file
    assert leakage_warning({"config": {"data": {"benchmark": "digits"}}}) is None


@pytest.fixture
def leaky_run(runs, tmp_path):
    """Run A, its manifest saying an ImageNet-1k teacher embedded miniImageNet."""
    root, _ = runs
    run = tmp_path / "leaky"
    shutil.copytree(root / "A", run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["data"] = provenance("mini_imagenet", "ravi")["config"]["data"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_cli_report_shows_tables_and_the_leakage_warning(leaky_run, cli):
    code, out, err = cli("report", leaky_run)
    assert code == 0, err
    assert "ncm" in out and "Leakage warning" in out and "have seen the novel" in out
    code, out, err = cli("report", leaky_run, "--format", "html")
    assert code == 0, err
    assert f"HTML report written to {leaky_run / 'report.html'}" in out
    page = (leaky_run / "report.html").read_text()
    assert 'id="leakage-warnings"' in page and "have seen the novel classes" in page
    code, out, err = cli("report", leaky_run, "--format", "md")
    assert code == 0 and out.startswith("| dataset") and "Leakage warning" in err


def test_cli_compare_tables_and_refusals(runs, tmp_path, cli):
    root, _ = runs
    code, out, err = cli("compare", root / "A", root / "B", "--reference", "ncm", "--format", "md")
    assert code == 0, err
    assert "## Summary" in out and "## Paired differences" in out and "| logreg   | ncm" in out
    code, out, err = cli("compare", root / "A", root / "B", "--format", "csv", "--out", tmp_path / "p.csv")
    assert code == 0 and pd.read_csv(tmp_path / "p.csv")["n_pairs"].tolist() == [SHAPE["tasks"]]
    code, out, err = cli("report", root / "A", root / "B", "--format", "html")
    assert code == 2 and "needs --out" in err
    code, out, err = cli("compare", root / "sweep")
    assert code == 0 and "shots" in out and "ncm" in out
    code, out, err = cli("report", root / "both", "--paired")
    assert code == 0 and "paired differences" in out and "accuracy" not in out and "wins/losses" in out
    code, out, err = cli("report", root / "both")
    assert code == 0 and "paired differences" in out and "accuracy" in out


def test_cli_refuses_pairing_other_tasks_in_one_line(runs):
    root, _ = runs
    refused = subprocess.run([*CLI, "compare", str(root / "A"), str(root / "other_tasks"), "--reference", "ncm@A"],
                             capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "'A' and 'other_tasks' were evaluated on different tasks" in refused.stderr and "--tasks-file" in refused.stderr


def test_report_and_compare_help_have_examples(cli):
    for command in ("report", "compare"):
        code, out, _ = cli(command, "--help")
        assert code == 0 and f"Example: tcs-fewshot {command}" in out


def test_summary_columns_and_units(runs):
    root, made = runs
    summary, _ = compare_runs([root / "both"], ci="t")
    expected = made["both"].summary
    assert np.allclose(summary["accuracy"], expected["accuracy"]) and summary["ci95"].gt(expected["ci95"]).all()
    assert {"run", "n", "failures", "fit_seconds", "predict_seconds", "peak_memory_mb"} <= set(summary.columns)
