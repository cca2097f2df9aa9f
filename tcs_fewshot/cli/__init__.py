"""The ``tcs-fewshot`` command line: thin wrappers over library calls, one module per command group.

``run`` (and ``tasks``), ``report``/``compare``, ``benchmarks`` and ``data``, ``cache``, ``teacher``,
``methods`` and ``distill``; options several commands share are defined once in :mod:`.options`.
Exit codes: 0 success, 1 a method failed on some tasks (records kept), 2 bad usage or input.
"""

from __future__ import annotations

import os
import sys

# Before torch loads: spin-waiting OpenMP threads made teacher passes up to 100x slower when
# the other core was busy (measured on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

import tcs_fewshot.cli.cache as cache_commands  # noqa: E402
import tcs_fewshot.cli.data as data_commands  # noqa: E402
import tcs_fewshot.cli.distill as distill_command  # noqa: E402
import tcs_fewshot.cli.methods as methods_command  # noqa: E402
import tcs_fewshot.cli.report as report_commands  # noqa: E402
import tcs_fewshot.cli.run as run_commands  # noqa: E402
import tcs_fewshot.cli.teacher as teacher_commands  # noqa: E402
from tcs_fewshot.cli.output import console, show  # noqa: E402
from tcs_fewshot.errors import TcsFewshotError  # noqa: E402


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


for _command in (run_commands.run, report_commands.report, report_commands.compare, run_commands.export_tasks,
                 data_commands.list_benchmarks, data_commands.data, cache_commands.cache, teacher_commands.teacher,
                 methods_command.list_methods, distill_command.distill):
    main.add_command(_command)


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


__all__ = ["console", "entry_point", "main", "show"]

if __name__ == "__main__":  # python -m tcs_fewshot.cli, and torchrun -m tcs_fewshot.cli
    entry_point()
