"""Fault injection: SIGKILL a real run at random moments, resume it, and lose nothing.

Three passes of the same ``tcs-fewshot run`` (the bundled digits benchmark, thousands of
(task, method) rows), each a subprocess, as a user runs it:

1. Reference: one uninterrupted run.
2. Kills: start the run, SIGKILL it at a random moment (by time, which can fall in start-up,
   or after a random number of newly stored rows), check the store (readable, every stored
   task whole), and start it again (a resume), at least ``--kills`` times; then let it finish.
3. Ray: the same run with ``--executor ray``; Ray worker processes of this run are SIGKILLed
   while they compute chunks, and the run must finish by itself (Ray reruns lost chunks).

Passes 2 and 3 must give records identical to the reference in every column but the
timing and memory ones, with no duplicate and no missing (task, method) row.

Run: ``/work/main/.venv/bin/python benchmarks/fault_injection.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from timing import cpu_model, write_results  # benchmarks/timing.py, beside this script

from tcs_fewshot.runs.store import load_records

DEFAULT_OUT = Path(__file__).parent / "results" / "fault_injection.md"
CLI = [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()"]
TIMING_COLUMNS = ["fit_seconds", "predict_seconds", "peak_memory_mb"]
SEED = 0


def stored_rows(run_dir: Path) -> int:
    """Rows in the run's store now (0 before it exists), read without disturbing the writer."""
    try:
        connection = sqlite3.connect(f"file:{run_dir / 'records.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def comparable(records: pd.DataFrame) -> pd.DataFrame:
    return records.drop(columns=TIMING_COLUMNS).sort_values(["task_index", "method"]).reset_index(drop=True)


def check_store(run_dir: Path, n_methods: int) -> bool:
    """The store opens, has no duplicate pair, and every stored task has all its methods."""
    if not (run_dir / "records.sqlite").exists():
        return True
    records = load_records(run_dir)
    whole = records.groupby("task_index")["method"].count().eq(n_methods).all()
    return bool(whole and not records.duplicated(["task_index", "method"]).any())


def kill_pass(args: list[str], run_dir: Path, n_rows: int, n_methods: int, kills: int,
              rng: np.random.Generator) -> dict:
    """SIGKILL the run at least ``kills`` times at random moments, resuming each time; then finish."""
    facts = {"kills": 0, "by_time": 0, "by_rows": 0, "mid_run": 0, "starts": 0, "stores_whole": 0,
             "finished_before_kill": False}
    while facts["kills"] < kills:
        before = stored_rows(run_dir)
        if before >= n_rows:
            break  # finished early: the rest of the kills would land on a finished run
        process = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        facts["starts"] += 1
        started = time.monotonic()
        if rng.random() < 0.3:  # a random moment in time: start-up, manifest, store creation, a task
            deadline, target = started + rng.uniform(0.2, 6.0), None
        else:  # after a random number of new rows: always mid-run
            deadline, target = started + 600, before + int(rng.integers(1, max(2, n_rows // (kills + 2))))
        while process.poll() is None and time.monotonic() < deadline:
            if target is not None and stored_rows(run_dir) >= target:
                break
            time.sleep(0.002)
        if process.poll() is not None:
            if process.returncode != 0:
                raise SystemExit(f"the run failed (code {process.returncode}): {process.stderr.read().decode()[-500:]}")
            facts["finished_before_kill"] = True  # too few rows left for this kill's moment
            process.stderr.close()
            return facts
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        after = stored_rows(run_dir)
        facts["kills"] += 1
        facts["by_time" if target is None else "by_rows"] += 1
        facts["mid_run"] += after > before
        facts["stores_whole"] += check_store(run_dir, n_methods)
    final = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    facts["starts"] += 1
    if final.returncode != 0:
        raise SystemExit(f"the resumed run failed: {final.stderr[-500:]}")
    return facts


def descendants(root: int) -> list[int]:
    """PIDs whose chain of parents reaches ``root`` (read from /proc)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = []
    for pid in parent:
        ancestor = parent.get(pid)
        while ancestor not in (None, 0, 1):
            if ancestor == root:
                found.append(pid)
                break
            ancestor = parent.get(ancestor)
    return found


def busy_ray_workers(root: int) -> list[int]:
    """Ray workers of the run started as ``root`` that are computing a chunk right now."""
    busy = []
    for pid in descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::_run_chunk"):
            busy.append(pid)
    return busy


def ray_pass(args: list[str], run_dir: Path, n_rows: int, worker_kills: int, rng: np.random.Generator) -> dict:
    """Run on a local Ray started by the run itself; SIGKILL busy workers of it while rows come in."""
    process = subprocess.Popen([*CLI, *args, "--executor", "ray", "--chunk-size", "16"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    facts = {"worker_kills": 0, "rows_at_kills": []}
    spacing = n_rows // (worker_kills + 2)
    next_target = int(rng.integers(spacing // 2, spacing)) + 1
    while process.poll() is None and facts["worker_kills"] < worker_kills:
        rows = stored_rows(run_dir)
        workers = busy_ray_workers(process.pid) if rows >= next_target else []
        if workers:
            os.kill(int(rng.choice(workers)), signal.SIGKILL)
            facts["worker_kills"] += 1
            facts["rows_at_kills"].append(rows)
            next_target = rows + spacing
        time.sleep(0.01)
    stderr = process.communicate()[1].decode(errors="replace")
    facts["exit_code"] = process.returncode
    facts["worker_died_messages"] = stderr.count("worker died") + stderr.count("Worker crashed") + \
        stderr.count("WorkerCrashedError") + stderr.count("SYSTEM_ERROR")
    if process.returncode != 0:
        raise SystemExit(f"the Ray run failed (code {process.returncode}): {stderr[-800:]}")
    return facts


def compare(reference: pd.DataFrame, run_dir: Path, methods: list[str], n_tasks: int) -> dict:
    records = load_records(run_dir)
    pairs = set(zip(records["task_index"], records["method"]))
    expected = {(task, method) for task in range(n_tasks) for method in methods}
    return {
        "rows": len(records),
        "duplicates": int(records.duplicated(["task_index", "method"]).sum()),
        "missing": len(expected - pairs),
        "identical": comparable(records).equals(comparable(reference)),
    }


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def header(command: str, quick: bool, args: list[str]) -> str:
    return "\n".join([
        "# Fault injection: SIGKILL, resume, nothing lost" + (" (--quick: smaller run)" if quick else ""), "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores (shared with other jobs while this ran)",
        f"- Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}",
        f"- Command: `{command}`",
        f"- The run: `tcs-fewshot {shlex.join(args)}`",
    ])


NOTES = """
Notes:

- Kills "by time" land at a uniformly random moment 0.2-6 s after the process started, which
  includes start-up, opening the manifest and creating the store; kills "by rows" land right
  after a random number of newly stored rows, i.e. always mid-run, often mid-transaction.
- After every kill the store was opened and checked: readable, no duplicate (task, method),
  and every stored task has all its methods (one sqlite transaction per task).
- "identical" compares every column of the records except fit_seconds, predict_seconds and
  peak_memory_mb (accuracy, n_correct, task checksums, failures, ...), sorted by task and method.
- In the Ray pass the driver (the tcs-fewshot process) is never killed; Ray worker processes
  of that run (descendants of it whose title is `ray::_run_chunk`, i.e. busy computing a
  chunk) are. Ray reruns their chunks (max_retries 3); the driver stores each task once.
- Wall times are not a speed comparison: the passes ran one after another on a machine
  shared with other jobs, and the kill pass includes a start-up per resume.
- A session is recorded in the manifest once its run directory is opened; kills during
  start-up (imports, data loading) leave no session, which is why sessions < starts.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, no results file unless --out")
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs of the run in the kill pass (at least 10)")
    parser.add_argument("--worker-kills", type=int, default=3, help="Ray worker SIGKILLs in the Ray pass")
    parser.add_argument("--out", type=Path, help=f"markdown file to write (default {DEFAULT_OUT} when not --quick)")
    args = parser.parse_args()
    n_tasks = 300 if args.quick else 1500
    methods = ["ncm", "simpleshot", "logreg"]
    n_rows = n_tasks * len(methods)
    rng = np.random.default_rng(SEED)
    run_args = ["run", "--benchmark", "digits", "--ways", "5", "--shots", "1", "--queries", "5",
                "--tasks", str(n_tasks), "--methods", ",".join(methods), "--no-progress"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcs-fault-injection-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        reference = subprocess.run([*CLI, *run_args, "--out", str(tmp / "reference")], capture_output=True, text=True,
                                   check=False)
        if reference.returncode != 0:
            raise SystemExit(f"the reference run failed: {reference.stderr[-500:]}")
        reference_seconds = time.perf_counter() - started
        reference_records = load_records(tmp / "reference")

        started = time.perf_counter()
        killed = kill_pass([*run_args, "--out", str(tmp / "killed")], tmp / "killed", n_rows, len(methods),
                           args.kills, rng)
        kill_seconds = time.perf_counter() - started
        result = compare(reference_records, tmp / "killed", methods, n_tasks)
        sessions = len(json.loads((tmp / "killed" / "manifest.json").read_text())["sessions"])

        started = time.perf_counter()
        on_ray = ray_pass([*run_args, "--out", str(tmp / "ray")], tmp / "ray", n_rows, args.worker_kills, rng)
        ray_seconds = time.perf_counter() - started
        ray_result = compare(reference_records, tmp / "ray", methods, n_tasks)

    rows += [
        ("reference run, uninterrupted", f"{len(reference_records):,} rows ({n_tasks:,} tasks x {len(methods)} methods)",
         "-", f"{reference_seconds:.0f} s"),
        ("SIGKILLs of the run", (f"{killed['kills']} ({killed['by_time']} at a random time, {killed['by_rows']} "
                                 f"after random rows; {killed['mid_run']} after the killed session stored rows)"),
         ">= 10", verdict(killed["kills"] >= 10)),
        ("starts (first + resumes)", (f"{killed['starts']} (1 + {killed['starts'] - 1} resumes); "
                                      f"{sessions} sessions in the manifest"), "-", f"{kill_seconds:.0f} s in all"),
        ("store checked after each kill: readable, every task whole", f"{killed['stores_whole']} of {killed['kills']}",
         f"{killed['kills']} of {killed['kills']}", verdict(killed["stores_whole"] == killed["kills"])),
        ("killed + resumed: rows", f"{result['rows']:,}", f"{n_rows:,}", verdict(result["rows"] == n_rows)),
        ("killed + resumed: duplicate / missing (task, method)", f"{result['duplicates']} / {result['missing']}",
         "0 / 0", verdict(result["duplicates"] == 0 and result["missing"] == 0)),
        ("killed + resumed: records identical to the reference (timings excluded)", str(result["identical"]),
         "True", verdict(result["identical"])),
        ("Ray: busy workers SIGKILLed mid-chunk", f"{on_ray['worker_kills']} (at {', '.join(map(str, on_ray['rows_at_kills']))} rows)",
         ">= 1", verdict(on_ray["worker_kills"] >= 1)),
        ("Ray: run finished by itself", f"exit code {on_ray['exit_code']}", "0", f"{ray_seconds:.0f} s"),
        ("Ray: rows, duplicate / missing", f"{ray_result['rows']:,}, {ray_result['duplicates']} / {ray_result['missing']}",
         f"{n_rows:,}, 0 / 0",
         verdict(ray_result["rows"] == n_rows and ray_result["duplicates"] == 0 and ray_result["missing"] == 0)),
        ("Ray: records identical to the reference (timings excluded)", str(ray_result["identical"]), "True",
         verdict(ray_result["identical"])),
    ]
    command = shlex.join([sys.executable, *sys.argv])
    write_results(header(command, args.quick, [*run_args, "--out", "DIR"]), rows, NOTES,
                  args.out or (None if args.quick else DEFAULT_OUT))
    if any(row[3] == "FAILED" for row in rows):
        raise SystemExit("something was lost: see the table")


if __name__ == "__main__":
    main()
