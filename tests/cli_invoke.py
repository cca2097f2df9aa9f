"""Run the real console entry point in this process (fast), with click's CliRunner isolation.

``cli.entry_point`` is what the ``tcs-fewshot`` script runs: it maps user mistakes to one line
on stderr and exit code 2. Calling it here (rather than ``main`` with click's own handling)
gives the exit codes and messages a user sees; any other exception escapes to the test.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from tcs_fewshot.cli import entry_point


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """stderr lines that state an error (click adds 'Usage:'/'Try' lines around its one)."""
        return [line for line in self.stderr.splitlines()
                if line.strip().lower().startswith("error") or "Error" in line]


def invoke(args: list[str], cwd: str | os.PathLike | None = None) -> Outcome:
    """``tcs-fewshot ARGS`` through ``entry_point`` in this process, in ``cwd``."""
    runner = CliRunner()
    old_argv, old_cwd = sys.argv, os.getcwd()
    with runner.isolation() as (stdout, stderr, _):
        sys.argv = ["tcs-fewshot", *args]
        if cwd is not None:
            os.chdir(Path(cwd))
        try:
            entry_point()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
            sys.stdout.flush()
            sys.stderr.flush()
        return Outcome(code, stdout.getvalue().decode(errors="replace"), stderr.getvalue().decode(errors="replace"))
