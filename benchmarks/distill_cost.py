"""Cost of base-split distillation, side by side in one run: TCS against KD online and KD from cached logits.

    TCS_FEWSHOT_DATA=... python benchmarks/distill_cost.py --epochs 1 --out benchmarks/results/tcs_cost_distill.md

Each configuration is ``tcs-fewshot distill`` in a fresh process (the default ImageNet student,
64 px, emoji train split, equal epochs, validation off), so peak memory is that process's peak
RSS (``ru_maxrss`` from ``os.wait4``: torch's CPU tensors included) and time is its wall time
(with user + system CPU seconds beside it). The teacher's features are cached once before the
clock (one untimed ``distill --objective tcs`` warm-up): TCS and cached KD read them, online KD
runs the teacher on every batch, as KD is usually implemented. Configurations alternate over
``--repeats`` rounds; the table gives medians and the ratios to online KD.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import cpu_model, revision  # noqa: E402

CONFIGS = {
    "tcs (cached teacher features)": ["--objective", "tcs"],
    "kd from cached logits": ["--objective", "kd"],
    "kd online (teacher on every batch)": ["--objective", "kd", "--online"],
}


def measured(command: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of ``command`` run as a fresh child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rev = revision()  # the code that runs, not the checkout's state when the file is written
    common = ["--epochs", str(args.epochs), "--set", "val_tasks=0"]
    with tempfile.TemporaryDirectory() as scratch:
        def command(extra: list[str]) -> list[str]:
            return ["tcs-fewshot", "distill", *extra, *common, "--out", str(Path(scratch) / "student.pt")]

        measured(command(["--objective", "tcs"]))  # fills the teacher-feature cache: not timed
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
        for _ in range(args.repeats):
            for name, extra in CONFIGS.items():
                results[name].append(measured(command(extra)))
                print(name, results[name][-1], flush=True)
    median = {name: tuple(statistics.median(r[i] for r in rows) for i in range(3)) for name, rows in results.items()}
    online = median["kd online (teacher on every batch)"]
    rows = [f"| {name} | {wall:.0f} | {cpu:.0f} | {rss:.0f} | {wall / online[0]:.2f}x | {rss / online[2]:.2f}x |"
            for name, (wall, cpu, rss) in median.items()]
    tcs = median["tcs (cached teacher features)"]
    verdict = (f"TCS against online KD: time {tcs[0] / online[0]:.2f}x (target at most 0.5x: "
               f"{'met' if tcs[0] / online[0] <= 0.5 else 'not met'}), peak memory {tcs[2] / online[2]:.2f}x "
               f"(target at most 0.75x: {'met' if tcs[2] / online[2] <= 0.75 else 'not met'}).")
    text = "\n".join([
        "# Cost of base-split distillation: TCS, KD online, KD from cached logits", "",
        f"Revision {rev}; machine: {cpu_model()}, {os.cpu_count()} cores (shared with other jobs: "
        f"load average {os.getloadavg()[0]:.1f} at the end).",
        f"Command: `python benchmarks/distill_cost.py --epochs {args.epochs} --repeats {args.repeats}"
        f"{' --out ' + str(args.out) if args.out else ''}`; each row runs "
        f"`tcs-fewshot distill <objective> {' '.join(common)}` in a fresh process.", "",
        f"Medians over {args.repeats} round(s); wall and CPU seconds for the whole process (data and model "
        "loading included, the same for every row), peak RSS of the process.", "",
        "| configuration | wall s | CPU s | peak RSS MB | time / online KD | memory / online KD |",
        "|---|---|---|---|---|---|", *rows, "", verdict, ""])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
