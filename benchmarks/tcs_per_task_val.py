"""Choose per-task TCS training (train_layers, backbone_lr, head_lr) on the validation split.

    python benchmarks/tcs_per_task_val.py --tasks 30 --out benchmarks/results/tcs_per_task_val_emoji.md

Per-task TCS fine-tunes the run's student on each task's support set. With ``train_layers =
head`` the student is frozen and only the projector and classifier train; with ``last-N`` its
last N blocks train too, at ``backbone_lr``. This script runs ``tcs-fewshot run --split val``
once per grid point (each a run directory of its own, all on the same validation tasks) with
``student-ncm`` and ``tcs`` (and ``finetune``, the same training without the teacher), and
writes each row's accuracy and its paired difference against the default (``head``, head_lr
0.01). Test tasks never choose anything: the chosen row is what ``run``'s ``training`` table
should hold for the test split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
from timing import cpu_model, revision  # noqa: E402

from tcs_fewshot.reports.compare import load_runs  # noqa: E402
from tcs_fewshot.stats.accuracy import paired, summary  # noqa: E402

# name -> the run's [training] table; the first row is the default every other row is paired with.
GRID = {
    "head / head_lr 0.01": {},
    "head / head_lr 0.003": {"head_lr": 0.003},
    "head / head_lr 0.03": {"head_lr": 0.03},
    "last-1 / backbone_lr 1e-4": {"train_layers": "last-1", "backbone_lr": 1e-4},
    "last-1 / backbone_lr 1e-3": {"train_layers": "last-1", "backbone_lr": 1e-3},
    "last-2 / backbone_lr 1e-4": {"train_layers": "last-2", "backbone_lr": 1e-4},
}
METHODS = "student-ncm,finetune,tcs"


def toml_table(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma-separated grid names (default: all)")
    parser.add_argument("--work", type=Path, default=Path("runs/tcs_per_task_val"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(GRID)
    unknown = [name for name in names if name not in GRID]
    if unknown:
        parser.error(f"unknown grid name {unknown[0]!r}; choose from: {', '.join(GRID)}")
    default = next(iter(GRID))
    if default not in names:
        names.insert(0, default)  # every row is paired with the default
    rev = revision()
    rows, paired_rows, commands = [], [], []
    reference_records = None
    for position, name in enumerate(names):
        work = args.work / f"grid{list(GRID).index(name)}"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "config-in.toml"
        config.write_text(toml_table("training", GRID[name]) if GRID[name] else "")
        command = ["tcs-fewshot", "run", "--config", str(config), "--split", "val", "--shots", str(args.shots),
                   "--tasks", str(args.tasks), "--methods", METHODS, "--no-progress", "--out", str(work / "run")]
        commands.append(f"{' '.join(command)}    # {name}: training {GRID[name] or 'defaults'}")
        print("$", commands[-1], flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        records = load_runs([work / "run"])[0].records
        table = summary(records).set_index("method")
        for method in ("finetune", "tcs"):
            row = table.loc[method]
            rows.append(f"| {name} | {method} | {row.accuracy:.2f} ± {row.ci95:.2f} | {int(row.n)} | {row.fit_seconds:.2f} |")
        if position == 0:
            rows.insert(0, f"| (any) | student-ncm | {table.loc['student-ncm'].accuracy:.2f} ± "
                           f"{table.loc['student-ncm'].ci95:.2f} | {int(table.loc['student-ncm'].n)} | 0 |")
            reference_records = records[records["method"] == "tcs"].assign(method="tcs (default)")
        else:
            both = records[records["method"] == "tcs"].assign(method=f"tcs ({name})")
            difference = paired(pd.concat([reference_records, both]), reference="tcs (default)").iloc[0]
            paired_rows.append(f"| {name} | {difference['difference']:+.2f} ({difference['ci_low']:+.2f} to "
                               f"{difference['ci_high']:+.2f}) | {difference['wins']}/{difference['losses']} |")
        print(rows[-1], f"({seconds:.0f} s)", flush=True)
    text = "\n".join([
        "# Per-task TCS training chosen on the emoji validation split", "",
        f"Revision {rev}; machine: {cpu_model()}, 2 cores shared with other jobs.",
        f"Command: `python benchmarks/tcs_per_task_val.py --tasks {args.tasks} --shots {args.shots}"
        f"{' --only ' + repr(args.only) if args.only else ''}{' --out ' + str(args.out) if args.out else ''}`, which ran:", "",
        *[f"    {c}" for c in commands], "",
        f"{args.tasks} validation tasks, 5-way {args.shots}-shot, 15 queries; the default student (ImageNet "
        "MobileNetV2, 64 px); every row the same tasks. `fit s/task` is the mean fitting time per task.", "",
        "| training | method | accuracy ± 95% CI | n | fit s/task |", "|---|---|---|---|---|", *rows, "",
        "Per-task `tcs` against the default (`head / head_lr 0.01`), paired over the same tasks:", "",
        "| training | tcs − default (95% CI) | wins/losses |", "|---|---|---|", *paired_rows, ""])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
