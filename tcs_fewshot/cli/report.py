"""``tcs-fewshot report`` and ``tcs-fewshot compare``: tables of runs in the terminal, md, csv, latex or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from tcs_fewshot.cli.options import report_options
from tcs_fewshot.cli.output import show


def write_report(run_dirs, fmt, out, reference, ci, which: tuple[str, ...],
                 shown: tuple[str, ...] = ("summary", "paired")) -> None:
    """Print or write the tables of ``report``/``compare``: ``which`` in md, csv and latex, ``shown`` in the terminal."""
    from tcs_fewshot.reports.run_report import run_report, write_html
    from tcs_fewshot.reports.tables import format_tables, terminal_report

    if fmt == "html":
        click.echo(f"HTML report written to {write_html(run_dirs, out, reference, ci)}")
        return
    tables = run_report(run_dirs, reference, ci)
    if fmt is None:
        for renderable in terminal_report(tables.summary, tables.paired, tables.warnings, tables.notes, shown):
            show(renderable)
        return
    text = format_tables(tables.summary, tables.paired, fmt, which)
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"{fmt} written to {out}", err=True)
    else:
        click.echo(text, nl=False)
    for message in [*tables.warnings, *tables.notes]:
        click.echo(f"warning: {message}", err=True)


@click.command()
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
    write_report(run_dirs, fmt, out, reference, ci, which, ("summary", "paired") if show_paired is None else which)


@click.command()
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
    write_report(run_dirs, fmt, out, reference, ci, which)
