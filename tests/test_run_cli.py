"""``tcs-fewshot run``: sweeps, TOML configs, --device, exit codes, and --help on every command."""

import io
import json
import subprocess
import sys
from dataclasses import fields, replace

import click
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tcs_fewshot.cli import main
from tcs_fewshot.runs.config import (
    check_values,
    config_toml,
    config_values,
    defaults,
    effective_config,
    load_config_file,
    run_config,
    toml_module,
    valid_keys,
)
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.experiment import RunConfig
from tcs_fewshot.runs.store import load_records
from tcs_fewshot.runs.sweep import default_sweep_dir, run_sweep
from tcs_fewshot.models.teachers import resolve_device

tomllib = toml_module()  # tomllib, or tomli on Python 3.10
CLI = [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()"]
# The CLI with one more method, 'flaky', that fails on every 1-shot task (one support item per class).
FLAKY_CLI = [sys.executable, "-c", """
import tcs_fewshot.methods.registry as registry
from tcs_fewshot.methods.probes import NearestClassMean

class Flaky(NearestClassMean):
    def fit(self, support, labels):
        if len(labels) == len(set(labels.tolist())):
            raise ValueError("needs two shots")
        return super().fit(support, labels)

registry.METHODS["flaky"] = registry.probe(Flaky, "fails on 1-shot tasks")
from tcs_fewshot.cli import entry_point
entry_point()
"""]
DIGITS = ["--benchmark", "digits", "--no-progress"]


def run_cli(*args, cwd=None, command=CLI):
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=300)


def manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def stored_rows(run_dir):
    """The stored records, in a fixed order: a recomputed row would change its timings."""
    return load_records(run_dir).sort_values(["task_index", "method"]).reset_index(drop=True)


def test_a_sweep_writes_one_run_directory_per_setting(tmp_path):
    result = run_cli("run", *DIGITS, "--tasks", "20", "--shots", "1,5", "--methods", "ncm,logreg",
                     "--out", str(tmp_path / "sweep"))
    assert result.returncode == 0, result.stderr
    for shots in (1, 5):
        run_dir = tmp_path / "sweep" / f"5way{shots}shot"
        spec = manifest(run_dir)["spec"]
        assert spec == {"protocol": "episodic", "split": "test", "ways": 5, "shots": shots, "queries": 15, "seed": 0}
        assert manifest(run_dir)["n_tasks"] == 20
        table = pd.read_csv(run_dir / "summary.csv")
        assert table["shots"].eq(shots).all() and table["n"].eq(20).all() and table["method"].tolist() == ["ncm", "logreg"]
        assert tomllib.loads((run_dir / "config.toml").read_text())["shots"] == shots
        assert f"5way{shots}shot: {run_dir}" in result.stdout, "each setting's summary is printed under its name"
    assert tomllib.loads((tmp_path / "sweep" / "config.toml").read_text())["shots"] == [1, 5]
    final = result.stdout.strip().splitlines()[-1]
    assert f"2 run directories under {tmp_path / 'sweep'} (5way1shot, 5way5shot)" in final
    assert f"tcs-fewshot report {tmp_path / 'sweep'};" in final
    report = run_cli("report", str(tmp_path / "sweep"), "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert pd.read_csv(io.StringIO(report.stdout))["shots"].tolist() == [1, 1, 5, 5]
    assert f"tcs-fewshot run --config {tmp_path / 'sweep' / 'config.toml'}" in final

    first = {shots: stored_rows(tmp_path / "sweep" / f"5way{shots}shot") for shots in (1, 5)}
    again = run_cli("run", *DIGITS, "--tasks", "20", "--shots", "1,5", "--methods", "ncm,logreg",
                    "--out", str(tmp_path / "sweep"))
    assert again.returncode == 0, again.stderr
    for shots in (1, 5):
        run_dir = tmp_path / "sweep" / f"5way{shots}shot"
        pd.testing.assert_frame_equal(stored_rows(run_dir), first[shots])  # resumed: nothing recomputed
        assert len(manifest(run_dir)["sessions"]) == 2


def test_a_ways_sweep_goes_to_the_default_parent_directory(tmp_path):
    result = run_cli("run", *DIGITS, "--tasks", "5", "--ways", "2,3", "--shots", "1", "--queries", "4",
                     "--methods", "ncm", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parent = tmp_path / "runs" / "digits-episodic-2+3way1shot4q-seed0-n5"
    assert sorted(path.name for path in parent.iterdir()) == ["2way1shot", "3way1shot", "config.toml"]
    for ways in (2, 3):
        spec = manifest(parent / f"{ways}way1shot")["spec"]
        assert (spec["ways"], spec["shots"], spec["queries"]) == (ways, 1, 4)
    assert default_sweep_dir(RunConfig(benchmark="digits", queries=4, tasks=5), [1], [2, 3]) == parent.relative_to(tmp_path)


def test_a_pfsl_sweep_over_shots(tmp_path):
    result = run_cli("run", *DIGITS, "--protocol", "pfsl", "--shots", "1,2", "--tasks", "2", "--methods", "ncm",
                     "--out", str(tmp_path / "pfsl"))
    assert result.returncode == 0, result.stderr
    for shots in (1, 2):
        spec = manifest(tmp_path / "pfsl" / f"{shots}shot")["spec"]
        assert spec["protocol"] == "pfsl" and spec["shots"] == shots and spec["ways"] is None
    several_ways = run_cli("run", *DIGITS, "--protocol", "pfsl", "--ways", "2,3", "--out", str(tmp_path / "w"))
    assert several_ways.returncode == 2 and "--ways does not apply to --protocol pfsl" in several_ways.stderr
    assert not (tmp_path / "w").exists()


def test_every_setting_is_checked_before_any_runs(tmp_path):
    result = run_cli("run", *DIGITS, "--ways", "5,9", "--tasks", "5", "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: 9-way tasks need 9 classes but split 'test' of 'digits' has 5; "
                                     "lower --ways to at most 5")
    assert not (tmp_path / "s").exists(), "the 5-way setting did not run first"


def test_a_config_file_with_command_line_overrides(tmp_path):
    (tmp_path / "sweep.toml").write_text(
        'benchmark = "digits"\nshots = [1, 2]\ntasks = 10\nmethods = ["ncm", "logreg"]\nqueries = 5\n'
        f'out = "{tmp_path / "from-file"}"\nno-progress = true\n'
    )
    result = run_cli("run", "--config", str(tmp_path / "sweep.toml"), "--tasks", "4", "--methods", "ncm",
                     "--out", str(tmp_path / "given"))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "from-file").exists(), "--out overrides the file's out"
    for shots in (1, 2):
        run_dir = tmp_path / "given" / f"5way{shots}shot"
        assert manifest(run_dir)["n_tasks"] == 4 and manifest(run_dir)["spec"]["queries"] == 5
        assert pd.read_csv(run_dir / "summary.csv")["method"].tolist() == ["ncm"]
        saved = tomllib.loads((run_dir / "config.toml").read_text())
        assert saved["tasks"] == 4 and saved["methods"] == ["ncm"] and saved["shots"] == shots
        assert saved["out"] == str(run_dir) and saved["benchmark"] == "digits" and "no_progress" not in saved


def test_a_saved_config_reruns_the_same_run_and_resumes(tmp_path):
    run_dir = tmp_path / "one"
    first = run_cli("run", *DIGITS, "--tasks", "10", "--shots", "2", "--methods", "ncm,logreg", "--out", str(run_dir))
    assert first.returncode == 0, first.stderr
    assert f"tcs-fewshot run --config {run_dir / 'config.toml'}" in first.stdout
    rows = stored_rows(run_dir)
    again = run_cli("run", "--config", str(run_dir / "config.toml"), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(stored_rows(run_dir), rows)
    assert len(manifest(run_dir)["sessions"]) == 2 and len(rows) == 20


def _features_file(tmp_path):
    from tcs_fewshot import save_features_file
    from tcs_fewshot.data.digits import load_digits_benchmark

    index, features = load_digits_benchmark()
    path = tmp_path / "digits.npz"
    save_features_file(path, index, features)
    return path


def test_a_saved_config_with_a_tasks_file_round_trips(tmp_path):
    features = _features_file(tmp_path)
    exported = run_cli("tasks", "--features", str(features), "--ways", "2", "--shots", "1", "--tasks", "6",
                       "--out", str(tmp_path / "t.json.gz"))
    assert exported.returncode == 0, exported.stderr
    first = run_cli("run", "--features", str(features), "--tasks-file", str(tmp_path / "t.json.gz"), "--methods",
                    "ncm", "--out", str(tmp_path / "r"), "--no-progress")
    assert first.returncode == 0, first.stderr
    saved = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert saved["tasks_file"] == str(tmp_path / "t.json.gz") and "shots" not in saved, "the tasks file fixes the shape"
    rows = stored_rows(tmp_path / "r")
    again = run_cli("run", "--config", str(tmp_path / "r" / "config.toml"), "--no-progress")
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(stored_rows(tmp_path / "r"), rows)


@pytest.mark.parametrize(
    "text, message",
    [
        ("shots = [1, 5", "error: config file 'c.toml' is not valid TOML: "),
        ("shot = 5", "error: config file 'c.toml': unknown key 'shot'; valid keys: benchmark, features, root, scheme,"),
        ('shots = "five"', ("error: config file 'c.toml': 'shots' must be an integer of at least 1 or a list of them, "
                            "e.g. [1, 5], got \"five\"")),
        ('tasks_file = "t.json"\nshots = 1', ("error: tasks_file in config file 'c.toml' fixes the tasks; drop 'shots' "
                                              "from config file 'c.toml'")),
    ],
)
def test_a_bad_config_file_gives_one_line_and_exit_2(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    result = run_cli("run", "--config", "c.toml", *DIGITS, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("shots = []", "'shots' must be an integer of at least 1 or a list of them"),
        ("ways = [5, 1]", "'ways' must be an integer of at least 2 or a list of them"),
        ("tasks = 0", "'tasks' must be an integer of at least 1, got 0"),
        ("seed = 1.5", "'seed' must be an integer of at least 0, got 1.5"),
        ("methods = 3", "'methods' must be a non-empty list of names, e.g. [\"ncm\", \"logreg\"], got 3"),
        ('protocol = "meta"', "'protocol' must be one of: episodic, pfsl, got \"meta\""),
        ('device = "gpu"', "'device' must be one of: auto, cpu, cuda, got \"gpu\""),
        ("fail_fast = 1", "'fail_fast' must be true or false, got 1"),
        ("benchmark = 7", "'benchmark' must be a string, got 7"),
        ("[run]\nshots = 1", "unknown key 'run'; valid keys: "),
        (b"shots = 1 # \xff", "is not UTF-8 text"),
    ],
)
def test_every_wrong_type_is_named(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(TcsFewshotError) as error:
        load_config_file(path)
    assert message in str(error.value) and str(error.value).startswith(f"config file '{path}'")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "nope.toml"], "error: config file 'nope.toml' does not exist"),
        (["--shots", "1,x"], "Invalid value for '--shots': give integers of at least 1, comma-separated"),
        (["--ways", "1,5"], "Invalid value for '--ways': give integers of at least 2"),
        (["--shots", ","], "Invalid value for '--shots'"),
        (["--device", "gpu"], "Invalid value for '--device'"),
        (["--tasks-file", "t.json", "--shots", "1,5"], "--tasks-file fixes the tasks; drop --shots"),
    ],
)
def test_bad_run_options_give_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli("run", *DIGITS, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "rror" in line]) == 1


def test_a_sweep_goes_on_past_a_failing_method_and_exits_1(tmp_path):
    result = run_cli("run", *DIGITS, "--tasks", "5", "--shots", "1,2", "--methods", "ncm,flaky",
                     "--out", str(tmp_path / "s"), command=FLAKY_CLI)
    assert result.returncode == 1, result.stderr
    assert "5 (task, method) runs failed in 5way1shot; see the failure column" in result.stderr
    one_shot = load_records(tmp_path / "s" / "5way1shot").set_index(["method", "task_index"])
    assert one_shot.loc["flaky", "failure"].str.contains("needs two shots").all(), "failures are recorded"
    assert one_shot.loc["ncm", "failure"].isna().all()
    two_shot = pd.read_csv(tmp_path / "s" / "5way2shot" / "summary.csv").set_index("method")
    assert two_shot["failures"].eq(0).all() and two_shot["n"].eq(5).all(), "the next setting still ran"
    assert "5way2shot: " in result.stdout

    passing = run_cli("run", *DIGITS, "--tasks", "5", "--shots", "2,3", "--methods", "flaky",
                      "--out", str(tmp_path / "ok"), command=FLAKY_CLI)
    assert passing.returncode == 0, passing.stderr
    single = run_cli("run", *DIGITS, "--tasks", "3", "--shots", "1", "--methods", "flaky",
                     "--out", str(tmp_path / "single"), command=FLAKY_CLI)
    assert single.returncode == 1 and "3 (task, method) runs failed; see the failure column" in single.stderr


def test_fail_fast_stops_the_sweep_and_keeps_how_to_resume(tmp_path):
    result = run_cli("run", *DIGITS, "--tasks", "5", "--shots", "1,2", "--methods", "flaky", "--fail-fast",
                     "--out", str(tmp_path / "s"), command=FLAKY_CLI)
    assert result.returncode == 1 and "stopped (--fail-fast): method 'flaky' failed on task 0" in result.stderr
    assert not (tmp_path / "s" / "5way2shot").exists()
    assert tomllib.loads((tmp_path / "s" / "5way1shot" / "config.toml").read_text())["shots"] == 1
    assert tomllib.loads((tmp_path / "s" / "config.toml").read_text())["shots"] == [1, 2]


def test_a_run_directory_and_a_sweep_directory_are_not_mixed_up(tmp_path):
    single = run_cli("run", *DIGITS, "--tasks", "3", "--methods", "ncm", "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    sweep_into_run = run_cli("run", *DIGITS, "--tasks", "3", "--shots", "1,2", "--out", str(tmp_path / "one"))
    assert sweep_into_run.returncode == 2 and "is the run directory of one setting" in sweep_into_run.stderr
    sweep = run_cli("run", *DIGITS, "--tasks", "3", "--shots", "1,2", "--methods", "ncm", "--out", str(tmp_path / "s"))
    assert sweep.returncode == 0, sweep.stderr
    run_into_sweep = run_cli("run", *DIGITS, "--tasks", "3", "--out", str(tmp_path / "s"))
    assert run_into_sweep.returncode == 2 and "holds other run directories" in run_into_sweep.stderr
    other = run_cli("run", *DIGITS, "--tasks", "4", "--shots", "2,3", "--methods", "ncm", "--out", str(tmp_path / "s"))
    assert other.returncode == 2 and "holds a sweep of another config (tasks was 3, now 4)" in other.stderr
    assert not (tmp_path / "s" / "5way3shot").exists(), "refused before any work"


def _image_folder(root, n_classes=4, per_class=5):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(n_classes):
        (root / f"kind{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((32, 32, 3), 60 * c, dtype=np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"kind{c}" / f"{i}.png")
    return root


def test_a_teacher_sweep_on_the_chosen_device(tmp_path):
    images = _image_folder(tmp_path / "images")
    (tmp_path / "split.json").write_text('{"test": ["kind0", "kind1", "kind2", "kind3"]}')
    args = ["run", "--benchmark", "folder", "--root", str(images), "--split-file", str(tmp_path / "split.json"),
            "--ways", "2,4", "--shots", "1,2", "--queries", "2", "--tasks", "3", "--methods", "ncm", "--no-progress"]
    result = run_cli(*args, "--device", "cpu", "--out", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    names = ["2way1shot", "2way2shot", "4way1shot", "4way2shot"]
    assert sorted(path.name for path in (tmp_path / "s").iterdir() if path.is_dir()) == names
    for name in names:
        embedding = manifest(tmp_path / "s" / name)["config"]["data"]["embedding"]
        assert embedding["teacher"] == "torchvision:mobilenet_v2"
        assert tomllib.loads((tmp_path / "s" / name / "config.toml").read_text())["device"] == "cpu"
    cuda = run_cli(*args, "--device", "cuda", "--out", str(tmp_path / "cuda"))
    if torch.cuda.is_available():
        assert cuda.returncode == 0, cuda.stderr
    else:
        assert cuda.returncode == 2 and "--device cuda, but torch sees no CUDA GPU" in cuda.stderr
        assert not (tmp_path / "cuda").exists()
    # The device is not part of a run's identity: the cpu run resumes under auto.
    auto = run_cli(*args, "--device", "auto", "--out", str(tmp_path / "s"))
    assert auto.returncode == 0, auto.stderr


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TcsFewshotError, match="unknown device 'tpu'; choose one of: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TcsFewshotError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_run_sweep_from_python(tmp_path):
    config = RunConfig(benchmark="digits", tasks=4, methods=("ncm",))
    seen = []
    results = run_sweep(config, shots=[1, 3], ways=[2, 3], out=tmp_path / "s",
                        on_result=lambda setting, result: seen.append((setting.ways, setting.shots)))
    assert seen == [(2, 1), (2, 3), (3, 1), (3, 3)]
    assert [result.run_dir.name for result in results] == ["2way1shot", "2way3shot", "3way1shot", "3way3shot"]
    assert all(len(result.summary) == 1 and result.failures == 0 for result in results)
    assert (results[0].run_dir / "summary.md").is_file() and (results[0].run_dir / "config.toml").is_file()
    single = run_sweep(config, out=tmp_path / "one")
    assert [result.run_dir for result in single] == [tmp_path / "one"]


def test_config_toml_round_trips_every_value():
    tables = {field.name: {"a key": {"nested": [1, 2.5e-05, "x"], "on": True}}
              for field in fields(RunConfig) if field.default_factory is dict}
    config = RunConfig(benchmark="folder", root='C:\\data\\"quoted" émoji\n', methods=("ncm", "logreg"), seed=2**63 - 1,
                       **tables)
    values = config_values(config, out="runs/x", shots=(1, 5), ways=(5,))
    parsed = check_values(tomllib.loads(config_toml(values)))
    assert all(parsed[name] == table for name, table in tables.items())
    assert run_config(effective_config(parsed)) == replace(config, shots=1)
    assert parsed["root"] == config.root and parsed["seed"] == 2**63 - 1 and parsed["shots"] == (1, 5)
    assert parsed["ways"] == (5,) and parsed["methods"] == ("ncm", "logreg") and parsed["out"] == "runs/x"
    assert effective_config(parsed) == {**defaults(), **parsed}
    assert "reference" not in parsed, "None is left out (TOML has no null)"


def test_run_option_defaults_match_the_config_defaults():
    """A config file and the command line start from the same values."""
    run = main.commands["run"]
    context = click.Context(run)
    names = {"n_tasks": "tasks"}
    options = [param for param in run.params if isinstance(param, click.Option)
               and names.get(param.name, param.name) in valid_keys()]
    assert len(options) >= 22, "the task, teacher, method and output options are config keys"
    for param in options:
        value = param.process_value(context, param.get_default(context))
        assert value == defaults()[names.get(param.name, param.name)], param.name


def _commands(group, path=()):
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def test_every_command_and_group_has_complete_help_with_an_example():
    runner = CliRunner()
    walked = list(_commands(main))
    assert {"run", "report", "tasks", "benchmarks", "data check", "data prepare", "cache info", "cache clear",
            "teacher import-onnx"} <= {" ".join(path) for path, _ in walked}
    for path, command in walked:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output and f"tcs-fewshot {' '.join(path)}".strip() in result.output, path
        assert command.help and command.help.strip().splitlines()[0], path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help and param.help.strip(), (path, param.name)
