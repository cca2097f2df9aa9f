"""pFSL on the emoji benchmark at 5 shots: the teacher probes and the ImageNet student per task.

    python benchmarks/distill_study_pfsl.py --repeats 5 --out benchmarks/results/distill_study_pfsl_emoji.md

Under pFSL every class is evaluated (each on its held-out images), so students distilled on the
base split (``<method>@<objective>``) have seen the evaluated classes and are not run (the
toolkit refuses them). The rows are the teacher's probes and the ImageNet student with NCM,
fine-tuning, per-task KD, FitNets and TCS, and TCS's per-task ablations, each through
``tcs-fewshot run --protocol pfsl``; every repeat draws another support set of 5 training
images per class and scores all test images.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import cpu_model, revision  # noqa: E402

from tcs_fewshot.reports.compare import load_runs  # noqa: E402
from tcs_fewshot.stats.accuracy import gap_closed, paired, summary  # noqa: E402

METHODS = ["ncm", "simpleshot", "logreg", "student-ncm", "finetune", "kd", "fitnets", "tcs", "tcs-random",
           "tcs-noselect"]


def rows(records) -> list[str]:
    """Markdown rows: accuracy ± CI over repeats, gap closed, and the paired difference against student-ncm."""
    table = summary(records, ci="t")
    against = paired(records, reference="student-ncm", ci="t").set_index("method")
    lines = ["| method | accuracy ± 95% CI | n | gap closed (95% CI) | − student-ncm (95% CI) | fit s/repeat |",
             "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        gap = difference = ""
        if row.method not in ("ncm", "student-ncm"):
            g = gap_closed(records, row.method)
            gap = "no gap" if g["no_gap"] else f"{g['ratio']:.0%} ({g['ci_low']:.0%} to {g['ci_high']:.0%})"
        if row.method in against.index:
            d = against.loc[row.method]
            difference = f"{d['difference']:+.2f} ({d['ci_low']:+.2f} to {d['ci_high']:+.2f})"
        lines.append(f"| {row.method} | {row.accuracy:.2f} ± {row.ci95:.2f} | {row.n} | {gap} | {difference} | "
                     f"{row.fit_seconds:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("runs/distill_study_pfsl"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    command = ["tcs-fewshot", "run", "--protocol", "pfsl", "--shots", "5", "--tasks", str(args.repeats),
               "--methods", ",".join(METHODS), "--no-progress", "--out", str(args.work)]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=False)  # exit 1 = a method failed on some repeat: the records say which
    minutes = (time.perf_counter() - started) / 60
    records = load_runs([args.work])[0].records
    text = "\n".join([
        "# TCS study: emoji, pFSL at 5 shots", "",
        f"Revision {revision()}; machine: {cpu_model()}, 2 cores shared with other jobs.",
        f"Command: `python benchmarks/distill_study_pfsl.py --repeats {args.repeats}"
        f"{' --out ' + str(args.out) if args.out else ''}`, which ran:", "", f"    {' '.join(command)}", "",
        f"Wall time {minutes:.0f} min. pFSL: every class of the benchmark, 5 support images per class from its "
        "training images, every test image a query; a repeat redraws the support set. Accuracy and paired CIs are "
        f"Student t over the {args.repeats} repeats; the gap-closed CI is the delta method with the normal quantile, "
        "so with this few repeats it is indicative only. "
        "Gap closed = (method − student-ncm) / (ncm − student-ncm); `ncm` is the teacher (MobileNetV2, 224 px), "
        "`student-ncm` the ImageNet MobileNetV2 at 64 px without adaptation. Students distilled on the base split "
        "are not rows: under pFSL they have trained on the classes evaluated.", "", *rows(records), ""])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
