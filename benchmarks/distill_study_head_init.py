"""How the regression head starts decides what base-split TCS does: the test study with ``head_init``.

    python benchmarks/distill_study_head_init.py --tasks 600 --shots 1,5 \
        --out benchmarks/results/distill_study_head_init_emoji.md

Three runs of ``tcs-fewshot run`` on the same emoji test tasks, each with its own ``distill``
table (12 epochs, mimicking alone, as ``distill_study.py``): the committed setting (random
heads; FitNets, the best baseline there), and ``head_init = "ridge"`` with the coordinate
count the validation split chose (``components = 1280``, i.e. the full rank) and with the
default 64. Runs resume, so a finished run is only read again. The table gives accuracy, the
gap closed between ``student-ncm`` and the teacher's ``ncm`` (delta-method CI) and the paired
difference of the best TCS row against the best FitNets row.
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
from tcs_fewshot.stats.accuracy import gap_closed, paired, summary  # noqa: E402

BASE = {"epochs": 12, "ce_weight": 0.0}
FITNETS = ["student-ncm@fitnets", "tcs@fitnets"]
TCS = ["student-ncm@tcs", "tcs@tcs"]
RUNS = {  # name -> (distill table, methods)
    "random": ({**BASE, "head_init": "random"}, ["ncm", "student-ncm", *FITNETS]),
    "ridge1280": ({**BASE, "head_init": "ridge", "components": 1280}, ["ncm", "student-ncm", *FITNETS, *TCS]),
    "ridge64": ({**BASE, "head_init": "ridge"}, ["ncm", "student-ncm", *TCS]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--work", type=Path, default=Path("runs/distill_study_head_init"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rev = revision()
    args.work.mkdir(parents=True, exist_ok=True)
    commands, frames = [], []
    for name, (table, methods) in RUNS.items():
        config = args.work / f"{name}.toml"
        config.write_text("[distill]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
        command = ["tcs-fewshot", "run", "--config", str(config), "--shots", args.shots, "--tasks", str(args.tasks),
                   "--methods", ",".join(methods), "--no-progress", "--out", str(args.work / name)]
        commands.append(f"{' '.join(command)}    # distill table {table}")
        print("$", commands[-1], flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        print(f"({time.perf_counter() - started:.0f} s)", flush=True)
        for run in load_runs([args.work / name]):
            records = run.records
            keep = records["method"].isin(FITNETS + TCS) | (name == "random")  # ncm and student-ncm once
            frames.append(records[keep].assign(method=[m if m in ("ncm", "student-ncm") else f"{m} [{name}]"
                                                       for m in records[keep]["method"]]))
    records = pd.concat(frames, ignore_index=True)
    sections = []
    for shots, group in records.groupby("shots"):
        table = summary(group)
        lines = [f"### 5-way {shots}-shot, {args.tasks} test tasks", "",
                 "| method [distill table] | accuracy ± 95% CI | n | gap closed (95% CI) |", "|---|---|---|---|"]
        for row in table.itertuples():
            gap = ""
            if row.method not in ("ncm", "student-ncm"):
                g = gap_closed(group, row.method)
                gap = "no gap" if g["no_gap"] else f"{g['ratio']:.0%} ({g['ci_low']:.0%} to {g['ci_high']:.0%})"
            lines.append(f"| {row.method} | {row.accuracy:.2f} ± {row.ci95:.2f} | {row.n} | {gap} |")
        ranked = table.sort_values("accuracy")
        best_tcs = ranked[ranked["method"].str.contains("@tcs")].iloc[-1]["method"]
        best_fitnets = ranked[ranked["method"].str.contains("@fitnets")].iloc[-1]["method"]
        difference = paired(group, reference=best_fitnets)
        row = difference[difference["method"] == best_tcs].iloc[0]
        lines += ["", f"Best TCS row `{best_tcs}` minus the best FitNets row `{best_fitnets}`: "
                      f"{row['difference']:+.2f} points (95% CI {row['ci_low']:+.2f} to {row['ci_high']:+.2f}, "
                      f"{row['n_pairs']} paired tasks, {row['wins']} wins, {row['losses']} losses).", ""]
        sections += lines
    text = "\n".join([
        "# TCS study with the regression head started at least squares (emoji test split)", "",
        f"Revision {rev}; machine: {cpu_model()}, 2 cores shared with other jobs.",
        f"Command: `python benchmarks/distill_study_head_init.py --tasks {args.tasks} --shots {args.shots}"
        f"{' --out ' + str(args.out) if args.out else ''}`, which ran (each run resumes when complete):", "",
        *[f"    {c}" for c in commands], "",
        "Every `@objective` student: the ImageNet MobileNetV2 at 64 px distilled on the train split's 1,256 "
        "images for 12 epochs by mimicking alone (no cross-entropy), the other settings `DistillSettings` "
        "defaults; `[random]` heads start at PyTorch's init (the committed study's students), `[ridge…]` at "
        "the least-squares map (`head_init = \"ridge\"`), with `components` 1280 (full rank: the split's 1,256 "
        "images give at most 1,255) or 64. `student-ncm@X` scores the distilled student's own features by NCM; "
        "`tcs@X` runs per-task TCS on it. Gap closed = (method − student-ncm) / (ncm − student-ncm), `ncm` "
        "the teacher (MobileNetV2, 224 px).", "", *sections])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
