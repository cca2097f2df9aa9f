"""The TCS study on the emoji test split: every row on the same tasks, gap closed and paired CIs.

    python benchmarks/distill_study.py --tasks 600 --shots 1,5 --epochs 12 \
        --out benchmarks/results/distill_study_emoji.md [--pfsl-repeats 5]

It runs the toolkit's own commands, so every number comes from ``tcs-fewshot run``:
one sweep over ``--shots`` with the teacher probes, the ImageNet student (NCM, fine-tuning,
per-task KD and TCS, the per-task ablations) and the students distilled on the base split with
CE, KD, FitNets and TCS (each scored by NCM and by per-task TCS), all under one ``distill``
table (the choice made on the validation split by ``distill_val.py``). Then it writes one
markdown file: accuracy with the 95% CI over tasks, the gap each method closed between
``student-ncm`` and the teacher's ``ncm`` (delta-method CI), and the paired difference of the
best TCS student against the best of the CE-, KD- and FitNets-distilled students.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import cpu_model, revision  # noqa: E402

from tcs_fewshot.reports.compare import load_runs  # noqa: E402
from tcs_fewshot.stats.accuracy import gap_closed, paired, summary  # noqa: E402

PROBES = ["ncm", "simpleshot", "logreg"]
IMAGENET_STUDENT = ["student-ncm", "finetune", "kd", "tcs", "tcs-random", "tcs-unrelated", "tcs-noselect"]
OBJECTIVES = ["kd", "fitnets", "ce", "tcs"]  # this order reuses students distill_val.py has cached
DISTILLED = [f"{method}@{objective}" for objective in OBJECTIVES for method in ("student-ncm", "tcs")]
BASELINES = [f"student-ncm@{objective}" for objective in ("ce", "kd", "fitnets")] + [f"tcs@{o}" for o in ("ce", "kd", "fitnets")]
TCS_ROWS = ["tcs", "student-ncm@tcs", "tcs@tcs"]


def run(command: list[str]) -> float:
    """Run a toolkit command, echoing it; seconds of wall time."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=False)  # exit 1 = some method failed on some tasks: records say which
    return time.perf_counter() - started


def table_for(records, label: str) -> list[str]:
    """Markdown lines: one row per method with accuracy, CI and gap closed."""
    table = summary(records)
    lines = [f"### {label}", "", "| method | accuracy ± 95% CI | n | gap closed (95% CI) | fit s/task |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        gap = ""
        if row.method not in ("ncm", "student-ncm") and {"ncm", "student-ncm"} <= set(table["method"]):
            g = gap_closed(records, row.method)
            gap = f"{g['ratio']:.0%} ({g['ci_low']:.0%} to {g['ci_high']:.0%})" if not g["no_gap"] else "no gap"
        lines.append(f"| {row.method} | {row.accuracy:.2f} ± {row.ci95:.2f} | {row.n} | {gap} | {row.fit_seconds:.3f} |")
    best_tcs = table[table["method"].isin(TCS_ROWS)].sort_values("accuracy").iloc[-1]["method"]
    best_base = table[table["method"].isin(BASELINES)].sort_values("accuracy").iloc[-1]["method"]
    difference = paired(records, reference=best_base)
    row = difference[difference["method"] == best_tcs].iloc[0]
    lines += ["", f"Best TCS row `{best_tcs}` minus the best distilled baseline `{best_base}`: "
                  f"{row['difference']:+.2f} points (95% CI {row['ci_low']:+.2f} to {row['ci_high']:+.2f}, "
                  f"{row['n_pairs']} paired tasks, {row['wins']} wins, {row['losses']} losses).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--distill", default="{}", help="JSON: the run's distill table beside epochs")
    parser.add_argument("--pfsl-repeats", type=int, default=0, help="also pFSL at 5 shots with this many repeats")
    parser.add_argument("--work", type=Path, default=Path("runs/distill_study"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    table = {"epochs": args.epochs, **json.loads(args.distill)}
    config = args.work / "study.toml"
    config.write_text("[distill]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
    methods = ",".join(PROBES + IMAGENET_STUDENT + DISTILLED)
    commands, seconds = [], {}
    episodic = ["tcs-fewshot", "run", "--config", str(config), "--shots", args.shots, "--tasks", str(args.tasks),
                "--methods", methods, "--no-progress", "--out", str(args.work / "episodic")]
    commands.append(episodic)
    seconds["episodic"] = run(episodic)
    sections = []
    for found in load_runs([args.work / "episodic"]):
        shots = found.manifest.get("config", {}).get("shots", found.label)
        sections += table_for(found.records, f"5-way {shots}-shot, {args.tasks} test tasks")
    if args.pfsl_repeats:
        pfsl = ["tcs-fewshot", "run", "--config", str(config), "--protocol", "pfsl", "--shots", "5",
                "--tasks", str(args.pfsl_repeats), "--methods", methods, "--no-progress", "--out", str(args.work / "pfsl")]
        commands.append(pfsl)
        seconds["pfsl"] = run(pfsl)
        sections += table_for(load_runs([args.work / "pfsl"])[0].records, f"pFSL, 5 shots, {args.pfsl_repeats} repeats")
    text = "\n".join([
        "# TCS study: emoji test split", "",
        f"Revision {revision()}; machine: {cpu_model()}, 2 cores shared with other jobs.",
        f"Command: `python benchmarks/distill_study.py --tasks {args.tasks} --shots {args.shots} --epochs {args.epochs}"
        f"{' --distill ' + repr(args.distill) if args.distill != '{}' else ''}"
        f"{' --pfsl-repeats ' + str(args.pfsl_repeats) if args.pfsl_repeats else ''}"
        f"{' --out ' + str(args.out) if args.out else ''}`, which ran:", "",
        *[f"    {' '.join(c)}" for c in commands], "",
        f"Distill table (every `@objective` row): `{table}`. Wall time: "
        + ", ".join(f"{k} {v / 60:.0f} min" for k, v in seconds.items()) + ".", "",
        "Gap closed = (method - student-ncm) / (ncm - student-ncm) over paired tasks; "
        "`ncm` is the teacher (MobileNetV2, 224 px, 599 MFLOPs), `student-ncm` the ImageNet MobileNetV2 at 64 px "
        "(49 MFLOPs) without adaptation.", "", *sections])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
