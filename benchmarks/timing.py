"""Helpers the benchmark scripts share: repeated timing and the machine they ran on."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls (time.perf_counter)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or ``unknown``."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "unknown")


def revision() -> str:
    """The git revision of this checkout (with ``-dirty`` when files differ), or ``unknown``."""
    import subprocess

    try:
        found = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent, timeout=30)
    except OSError:
        return "unknown"
    return found.stdout.strip() or "unknown"


def write_results(head: str, rows: list[tuple[str, ...]], notes: str, out: Path | None) -> None:
    """Print the results table (header, one row per measurement, notes); write it to ``out`` if given."""
    table = ["| measurement | ours | reference/target | ratio or verdict |", "|---|---|---|---|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    markdown = "\n".join([head, "", f"Revision: `{revision()}`.", "", *table, notes])
    print(markdown)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown)
        print(f"wrote {out}")
