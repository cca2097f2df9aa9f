"""Fuzzed command lines: whatever a user types, exit 0 or 2, one error line, never a traceback.

Every example runs the real entry point in this process (tests/cli_invoke.py) in a fresh
working directory, on the bundled digits benchmark with at most 4 tasks, so each is fast.
An exception other than SystemExit escapes ``invoke`` and fails the test with its traceback.
"""

import json
import tempfile
from pathlib import Path

import pytest
from cli_invoke import Outcome, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Benchmarks that build themselves on first use take minutes: never let the fuzzer reach them.
SLOW_BENCHMARKS = {"emoji", "glyphs"}

# What the OS can hand a program as an argument: no NUL (argv holds C strings); bytes that are
# not UTF-8 arrive as lone surrogates (Python's surrogateescape). Config files may hold anything.
garbage = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10),
    st.binary(max_size=8).filter(lambda data: b"\x00" not in data).map(lambda data: data.decode("utf-8", "surrogateescape")),
)
any_text = st.text(max_size=10)


def mostly(valid, invalid):
    """``valid`` nine times in ten, so that whole command lines are often valid and really run."""
    return st.integers(0, 9).flatmap(lambda draw: invalid if draw == 9 else valid)


small_int = st.integers(-3, 12).map(str)
odd_numbers = st.sampled_from(["1,5", "2,,3", ",", "1e3", "0x10", " 3", "-0", "٣", "3.0", "99999999999999999999999",
                               "9223372036854775808", "nan", "2,3,2"])
number_like = st.one_of(small_int, odd_numbers, garbage)
ways = mostly(st.sampled_from(["2", "3", "5", "2,3"]), number_like)
shots = mostly(st.sampled_from(["1", "2", "5", "1,2"]), number_like)
queries = mostly(st.integers(1, 6).map(str), number_like)
seed = mostly(st.integers(0, 2**63 - 1).map(str), number_like)
n_tasks = mostly(st.integers(1, 3).map(str), st.sampled_from(["", "x", "1.5", "0", "-1", "-99999999999999999999"]))
benchmark = mostly(st.just("digits"), st.one_of(
    st.sampled_from(["cub", "folder", "omniglot", "mini_imagenet", "DIGITS"]),
    garbage.filter(lambda name: name.strip().lower() not in SLOW_BENCHMARKS)))
methods = mostly(st.lists(st.sampled_from(["ncm", "simpleshot", "logreg"]), min_size=1, max_size=3, unique=True)
                 .map(",".join),
                 st.one_of(st.lists(st.sampled_from(["ncm", "magic", "", " ", "NCM"]), max_size=4).map(",".join),
                           garbage))
protocol = mostly(st.sampled_from(["episodic", "pfsl"]), st.one_of(st.sampled_from(["PFSL", ""]), garbage))
split = mostly(st.sampled_from(["test", "train"]), st.one_of(st.just("val"), garbage))


def check(outcome: Outcome) -> None:
    """Exit 0, or exit 2 with exactly one error line; no traceback either way."""
    everything = outcome.stdout + outcome.stderr
    assert "Traceback" not in everything, everything
    assert outcome.exit_code in (0, 2), (outcome.exit_code, everything)
    if outcome.exit_code == 2:
        assert len(outcome.error_lines()) == 1, outcome.stderr


def run_in_fresh_directory(args: list[str]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="tcs-fuzz-") as cwd:
        return invoke(args, cwd=cwd)


@FUZZ
@given(ways=ways, shots=shots, queries=queries, tasks=n_tasks, seed=seed, methods=methods, benchmark=benchmark,
       protocol=protocol, split=split)
def test_run_with_random_option_values(ways, shots, queries, tasks, seed, methods, benchmark, protocol, split):
    outcome = run_in_fresh_directory([
        "run", "--benchmark", benchmark, "--ways", ways, "--shots", shots, "--queries", queries, "--tasks", tasks,
        "--seed", seed, "--methods", methods, "--protocol", protocol, "--split", split, "--no-progress",
    ])
    check(outcome)


RUN_OPTIONS = ["--ways", "--shots", "--queries", "--seed", "--methods", "--protocol", "--split", "--scheme",
               "--root", "--split-file", "--features", "--tasks-file", "--out", "--ci", "--reference", "--fail-fast",
               "--teacher", "--teacher-weights", "--device", "--config", "--executor", "--chunk-size", "--address",
               "--help", "--"]


@FUZZ
@given(tokens=st.lists(st.one_of(st.sampled_from(RUN_OPTIONS), small_int, garbage, odd_numbers), max_size=8))
def test_run_with_random_argument_lists(tokens):
    # Always digits and few tasks, so a valid list is fast; --benchmark/--tasks/ray never come from the fuzzer.
    tokens = [token for token in tokens if token.strip().lower() not in {*SLOW_BENCHMARKS, "ray"}]
    check(run_in_fresh_directory(["run", "--benchmark", "digits", "--tasks", "2", "--no-progress", *tokens]))


CONFIG_KEYS = ["benchmark", "features", "protocol", "split", "ways", "shots", "queries", "tasks", "seed", "methods",
               "ci", "reference", "device", "teacher", "tasks_file", "out", "fail_fast", "no_progress", "split-file",
               "unknown_key", "Shots"]
toml_scalar = st.one_of(st.integers(-3, 2**64), st.booleans(), any_text, st.floats(allow_nan=True),
                        st.sampled_from(["ncm", "digits", "pfsl", "t", "cpu"]))
toml_value = st.one_of(toml_scalar, st.lists(st.one_of(st.integers(-2, 9), any_text), max_size=3))


def toml_line(key: str, value) -> str:
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}"
    if isinstance(value, float):
        return f"{key} = {value!r}"  # nan, inf, -inf and 1e+300 are TOML too
    if isinstance(value, list):
        return f"{key} = [{', '.join(json.dumps(item) for item in value)}]"
    return f"{key} = {json.dumps(value)}"


@FUZZ
@given(content=st.one_of(
    any_text,
    st.binary(max_size=40).map(lambda data: data.decode("latin-1")),
    st.dictionaries(st.sampled_from(CONFIG_KEYS), toml_value, max_size=5)
    .map(lambda table: "\n".join(toml_line(key, value) for key, value in table.items())),
))
def test_run_with_a_garbage_config_file(content):
    with tempfile.TemporaryDirectory(prefix="tcs-fuzz-") as cwd:
        Path(cwd, "config.toml").write_text(content, encoding="utf-8", errors="surrogatepass")
        # The command line fixes what would make a valid config slow (benchmark, task count, sweep size).
        outcome = invoke(["run", "--config", "config.toml", "--benchmark", "digits", "--tasks", "2", "--ways", "3",
                          "--shots", "1", "--methods", "ncm", "--no-progress"], cwd=cwd)
    check(outcome)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    outcome = invoke(["run", "--benchmark", "digits", "--tasks", "3", "--methods", "ncm,simpleshot",
                      "--out", str(run_dir), "--no-progress"])
    assert outcome.exit_code == 0, outcome.stderr
    return run_dir


@FUZZ
@given(use_run=st.booleans(), extra_dirs=st.lists(garbage, max_size=2),
       tokens=st.lists(st.one_of(st.sampled_from(["--format", "md", "csv", "latex", "tex", "--paired", "--summary",
                                                  "--reference", "ncm", "simpleshot", "nope", "--ci", "t", "normal",
                                                  "--out", "--"]), garbage), max_size=6))
def test_report_with_random_arguments(finished_run, use_run, extra_dirs, tokens):
    if "html" in " ".join(tokens).lower():
        tokens = [token for token in tokens if "html" not in token.lower()]  # a browser-sized report: not here
    run_dirs = [str(finished_run)] if use_run else []
    check(run_in_fresh_directory(["report", *run_dirs, *extra_dirs, *tokens]))


@FUZZ
@given(ways=mostly(st.sampled_from(["2", "3", "5"]), number_like), shots=mostly(st.sampled_from(["1", "5"]), number_like),
       queries=queries, tasks=n_tasks, seed=seed, protocol=protocol, split=split,
       out=mostly(st.sampled_from(["t.json.gz", "t.json", "sub/t.json"]), st.one_of(garbage, st.just("."))))
def test_tasks_with_random_option_values(ways, shots, queries, tasks, seed, protocol, split, out):
    check(run_in_fresh_directory(["tasks", "--benchmark", "digits", "--ways", ways, "--shots", shots, "--queries",
                                  queries, "--tasks", tasks, "--seed", seed, "--protocol", protocol, "--split", split,
                                  "--out", out]))


def test_a_valid_fuzzed_shape_really_runs():
    """The checks above are not vacuous: a valid command exits 0 and writes its records."""
    with tempfile.TemporaryDirectory(prefix="tcs-fuzz-") as cwd:
        outcome = invoke(["run", "--benchmark", "digits", "--ways", "3", "--shots", "1", "--tasks", "2",
                          "--methods", "ncm", "--out", "r", "--no-progress"], cwd=cwd)
        assert outcome.exit_code == 0, outcome.stderr
        assert (Path(cwd) / "r" / "records.sqlite").is_file()
    bad = run_in_fresh_directory(["run", "--benchmark", "digits", "--ways", "nine", "--no-progress"])
    assert bad.exit_code == 2 and len(bad.error_lines()) == 1 and "--ways" in bad.stderr
