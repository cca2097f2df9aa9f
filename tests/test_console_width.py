"""Tables and progress in logs (no terminal, width 80): numbers never wrap or get cut."""

import io

import pandas as pd
from rich.console import Console

from tcs_fewshot.runs.progress import RunProgress
from tcs_fewshot.reports.tables import rich_table


def _log_console(out):
    return Console(file=out, width=80, force_terminal=False)


def test_numbers_stay_on_one_line_in_a_narrow_log():
    table = pd.DataFrame({
        "method": ["tcs-with-a-rather-long-method-name", "kd"],
        "accuracy": ["45.77 ± 0.60", "44.10 ± 0.61"], "n": [600, 600],
        "fit (ms)": ["1234.5", "12.3"], "predict (ms)": ["3.2", "1.1"], "peak memory (MB)": ["512.25", "0.5"],
        "description": ["a long description that goes on and on over the width", "short"],
    })
    out = io.StringIO()
    _log_console(out).print(rich_table(table, title="5-way 5-shot"))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for number in ("45.77 ± 0.60", "44.10 ± 0.61", "1234.5", "512.25"):
        assert number in text, f"{number!r} was wrapped or cut:\n{text}"
    assert "…" not in text, "words fold rather than being cut"


def test_progress_without_a_terminal_prints_one_whole_line():
    out = io.StringIO()
    with RunProgress(["ncm"], 3, True, console=_log_console(out)) as bar:
        for _ in range(3):
            bar.advance([{"method": "ncm", "accuracy": 0.5, "failure": None}])
    text = out.getvalue()
    assert "…" not in text
    assert text.startswith("tasks 3/3  ncm 50.0±0.0"), text
