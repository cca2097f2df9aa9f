"""``tcs-fewshot benchmarks`` (what exists, what is ready) and ``tcs-fewshot data check|prepare``."""

from __future__ import annotations

import sys

import click

from tcs_fewshot.cli.options import image_options, root_option, split_file_option
from tcs_fewshot.cli.output import console, show


@click.command("benchmarks")
def list_benchmarks() -> None:
    """List every benchmark, its split schemes, and whether it is ready on this machine.

    \b
    Example: tcs-fewshot benchmarks
    """
    from tcs_fewshot.data.benchmarks import benchmark_table, data_home
    from tcs_fewshot.reports.tables import rich_table

    table = benchmark_table()
    show(rich_table(table[["benchmark", "schemes", "status", "description"]]))
    console.print(f"default roots: {data_home()}/<benchmark> (set TCS_FEWSHOT_DATA to move them)")


@click.group()
def data() -> None:
    """Check and prepare benchmarks on disk (nothing is ever downloaded).

    \b
    Example: tcs-fewshot data prepare cub --archive ~/Downloads/CUB_200_2011.tgz
             tcs-fewshot data check cub
    """


@data.command("check")
@click.argument("benchmark")
@root_option()
@split_file_option("With folder: JSON {split: [class, ...]} (default: a seeded class split).")
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
