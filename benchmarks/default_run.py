"""The default `tcs-fewshot run --shots 5` from nothing: the 15-minute target on 2 CPU cores.

    python benchmarks/default_run.py

Runs the README's main job (5-way 5-shot, 600 tasks, the embedded emoji benchmark, every
default method) in a fresh, empty data home, so the emoji build and the teacher's pass over
every image are included, then runs it again into the same directory (a resume: nothing to
do) to show what is left once the data and features exist. Writes
benchmarks/results/default_run.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cpu_model, revision  # noqa: E402

TARGET_SECONDS = 15 * 60


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, user + system CPU seconds) of ``command`` as a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed with exit code {os.waitstatus_to_exitcode(status)}: {' '.join(command)}")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def main() -> None:
    rev = revision()  # the code that runs, not the checkout's state when the file is written
    executable = Path(sys.executable).with_name("tcs-fewshot")
    with tempfile.TemporaryDirectory(prefix="tcs-default-run-") as home:
        env = {**os.environ, "TCS_FEWSHOT_DATA": str(Path(home) / "data")}
        command = [str(executable), "run", "--shots", "5", "--out", str(Path(home) / "run"), "--no-progress"]
        first = timed(command, env)
        again = timed(command, env)
        load = os.getloadavg()[0]
        summary = (Path(home) / "run" / "summary.md").read_text()
    rows = [
        ("first run: emoji build + teacher pass over every image + 600 tasks x default methods", first),
        ("same command again (resume: everything stored)", again),
    ]
    lines = ["# The default run on this machine", "",
             f"Revision: `{rev}`. Machine: {cpu_model()}, {os.cpu_count()} cores. Command: `tcs-fewshot run --shots 5` "
             f"(5-way 5-shot, 600 tasks, emoji, default methods) in an empty data home.", "",
             f"Load average at the end: {load:.1f} (other jobs shared the cores; CPU seconds are the "
             "process's own, and their half is what it would need with both cores to itself).", "",
             "| what | wall seconds | CPU seconds | target (wall) | verdict |", "|---|---|---|---|---|"]
    for label, (seconds, cpu) in rows:
        verdict = "within" if seconds <= TARGET_SECONDS else "over"
        lines.append(f"| {label} | {seconds:.0f} | {cpu:.0f} | {TARGET_SECONDS} | {verdict} |")
    text = "\n".join(lines) + "\n\n## The run's summary.md\n\n" + summary + "\n"
    out = Path(__file__).resolve().parent / "results" / "default_run.md"
    out.write_text(text)
    print(text + f"wrote {out}")


if __name__ == "__main__":
    main()
