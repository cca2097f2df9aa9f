"""``tcs-fewshot run`` (evaluate methods on identical tasks, sweeps) and ``tcs-fewshot tasks`` (export them)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from tcs_fewshot.cli.options import (
    ci_option,
    comma_list,
    device_option,
    image_options,
    student_option,
    student_weights_option,
    task_options,
    teacher_option,
    teacher_weights_option,
)
from tcs_fewshot.cli.output import console, show
from tcs_fewshot.defaults import DEFAULT_METHODS

# ``run`` parameters whose config key differs from their name.
CONFIG_KEYS = {"n_tasks": "tasks"}


@click.command()
@task_options(sweep=True)
@teacher_option("Embedding of benchmark images: a teacher spec (timm:<name>, torchvision:<name>, "
                "checkpoint:<path>), cached after one pass, or 'pixels'. A timm ViT takes options after @: "
                "pool=cls|mean|cls+mean and block=N, e.g. timm:vit_small_patch14_dinov2@block=11.")
@teacher_weights_option
@device_option("Where the teacher embeds images and student methods train; auto is cuda when torch sees "
               "a GPU. Cached features are reused whichever device computed them.")
@click.option("--methods", callback=comma_list, default=",".join(DEFAULT_METHODS), show_default=True,
              help="Comma-separated method names ('tcs-fewshot methods' lists them; on --features, digits or the pixels teacher the default is ncm,simpleshot,logreg); <method>@<objective> runs a "
                   "student method on the student distilled on the base split (student-ncm@tcs, made once and cached).")
@student_option("Student of the student methods (tcs, kd, fitnets, finetune, ...): torchvision:<name>, "
                "timm:<name>, conv4, conv4-<channels> or resnet12.")
@click.option("--student-init", type=click.Choice(["pretrained", "scratch", "checkpoint"]), default=None,
              help="pretrained (default for torchvision/timm students: local weights only), scratch (default for "
                   "conv4/resnet12, seeded by --seed) or checkpoint (with --student-checkpoint).")
@student_weights_option("A local weights file (.pth/.safetensors state dict) for a pretrained student.")
@click.option("--student-checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Start the student methods from this checkpoint ('tcs-fewshot distill').")
@click.option("--student-image-size", type=click.IntRange(min=8), default=None,
              help="Student input side in px (default: the checkpoint's, else 64 for the default student "
                   "(49 MFLOPs, 12x cheaper than the teacher) and 84 for the others).")
@click.option("--student-views", type=click.IntRange(min=0), default=4, show_default=True,
              help="Augmented views per support image for student methods (one cached teacher pass each).")
@image_options
@click.option("--transductive", is_flag=True,
              help="TCS also fits its coordinates on, and mimics the teacher on, the unlabelled query images (recorded).")
@click.option("--tasks-file", type=click.Path(dir_okay=False), default=None,
              help="Evaluate on the tasks of this file instead of sampling.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<features>-<shape>-seed<seed>-n<tasks>); for a sweep, the parent "
                   "of one run directory per setting (5way1shot, ...). Re-running resumes.")
@ci_option
@click.option("--reference", default=None, help="Method that paired differences are taken against (default: first).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first method failure (records kept).")
@click.option("--skip-check", is_flag=True,
              help="Run even when the benchmark's check fails (layout, counts against its manifest); "
                   "recorded in the manifest.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help='A TOML file with the same keys as these options (shots = [1, 5], methods = ["ncm", "logreg"]); '
                   "options given here override it. Each run directory saves its own config.toml.")
@click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where tasks are computed: this process, or Ray workers (pip install 'tcs-fewshot[ray]'); "
                   "this process stores every row either way, and a run resumes on either.")
@click.option("--address", default=None,
              help="With --executor ray: the cluster to join (auto, host:port, ray://host:port); "
                   "default a local Ray on this machine's cores.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="Tasks per unit of work sent to a worker (default 1 local, 8 ray).")
def run(config_file: str | None, executor_name: str, address: str | None, chunk_size: int | None, **options) -> None:
    """Evaluate methods on identical tasks; write records, manifest, tables and config.toml.

    A comma list in --shots or --ways (or a list in --config) sweeps their cartesian
    product: one run directory per setting under --out. Re-running the same command, or
    --config with a saved config.toml, resumes: finished tasks are kept. Exit code 1 when
    a method failed on some tasks (every setting still runs; records kept), 2 on bad input.

    \b
    Example: tcs-fewshot run --shots 5 --tasks 600 --methods ncm,logreg
    Sweep:   tcs-fewshot run --shots 1,5 --ways 5,20 --out runs/sweep
    Config:  tcs-fewshot run --config sweep.toml --tasks 100
    Resume:  tcs-fewshot run --config runs/sweep/config.toml
    TCS:     tcs-fewshot run --methods ncm,student-ncm,student-ncm@tcs,student-ncm@kd,tcs@tcs
    Own:     tcs-fewshot run --student-checkpoint students/emoji-tcs.pt --methods tcs,kd,fitnets,finetune,ncm

    Student methods' training and options go in a config file: training = {steps = 50,
    train_layers = "last-2", head_lr = 0.01, backbone_lr = 1e-4}, method_options = {tcs = {components = 16}}
    and distill = {epochs = 8} (the base-split distillation of <method>@<objective>).
    """
    from tcs_fewshot.runs.sweep import CONFIG_FILE, run_configured

    context = click.get_current_context()
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    given = {CONFIG_KEYS.get(name, name): value for name, value in options.items()
             if context.get_parameter_source(name) in explicit}
    results = run_configured(given, config_file, executor=(executor_name, address, chunk_size),
                             on_result=_show_result, on_setting=_show_setting)
    if len(results) > 1:
        parent = results[0].run_dir.parent
        names = ", ".join(result.run_dir.name for result in results)
        click.echo(f"{len(results)} run directories under {parent} ({names}); every setting in one table: "
                   f"tcs-fewshot report {parent}{_compare_hint(parent)}; resume: tcs-fewshot run --config "
                   f"{parent / CONFIG_FILE}")
    else:
        run_dir = results[0].run_dir
        click.echo(f"records, manifest and tables in {run_dir}; a table: tcs-fewshot report {run_dir} "
                   f"[--paired] [--format latex]; resume: tcs-fewshot run --config {run_dir / CONFIG_FILE}")
    failures = sum(result.failures for result in results)
    if failures:
        failed = [result.run_dir.name for result in results if result.failures] if len(results) > 1 else []
        where = f" in {', '.join(failed)}" if failed else ""
        click.echo(f"{failures} (task, method) runs failed{where}; see the failure column in the records", err=True)
        sys.exit(1)


def _show_result(setting, result) -> None:
    """Print one run's summary and paired differences (settings shared by every row as the title)."""
    from tcs_fewshot.reports.tables import rich_table, without_constant_settings
    from tcs_fewshot.runs.run_tables import readable_paired, readable_summary

    narrow, described = without_constant_settings(readable_summary(result.summary))
    show(rich_table(narrow, title=described))
    differences = readable_paired(result.paired)
    if len(differences):
        narrow, described = without_constant_settings(differences)
        show(rich_table(narrow, title=f"paired differences: {described}"))
    for line in result.gap_lines:
        click.echo(f"gap closed: {line}")


def _show_setting(setting, result) -> None:
    """Print one setting of a sweep: its name and run directory, then its tables."""
    click.echo(f"\n{result.run_dir.name}: {result.run_dir}")
    _show_result(setting, result)


def _compare_hint(sweep_dir: Path) -> str:
    """How to see a sweep's settings side by side, when this version has a ``compare`` command."""
    root = click.get_current_context().find_root().command
    return f"; side by side: tcs-fewshot compare {sweep_dir}" if "compare" in getattr(root, "commands", {}) else ""


@click.command("tasks")
@task_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Task file (.json or .json.gz).")
def export_tasks(benchmark, root, scheme, split_file, features, protocol, split, ways, shots, queries, n_tasks, seed, out) -> None:
    """Write a task file that other projects can evaluate on (ids, labels, checksums).

    'tcs-fewshot run --tasks-file FILE' evaluates on exactly these tasks.

    \b
    Example: tcs-fewshot tasks --shots 1 --tasks 600 --out tasks-1shot.json.gz
    """
    from tcs_fewshot.data.tasks import TaskSpec
    from tcs_fewshot.runs.experiment import RunConfig
    from tcs_fewshot.runs.task_export import export_tasks as export

    spec = TaskSpec(protocol=protocol, split=split, ways=ways, shots=shots, queries=queries, seed=seed)
    data = RunConfig(benchmark=benchmark, root=root, scheme=scheme, split_file=split_file, features=features)
    checksum = export(data, spec, n_tasks, Path(out))
    console.print(f"{n_tasks} tasks ({spec.describe()}) written to {out}; checksum {checksum}")
