"""Choose TCS's per-task settings on the validation split (never on test tasks).

    python benchmarks/tcs_val_selection.py --checkpoint students/emoji-tcs.pt --tasks 150

Evaluates a small grid of TCS settings around the starting point (``tcs``: whitened
coordinates, 32 components, selection on, weights 1), plus fine-tuning and the student's own
NCM as yardsticks, on the same validation tasks, and writes
benchmarks/results/tcs_val_selection.md with the accuracy of each and its paired difference
against ``tcs``. This run made ``spectrum`` the default scale.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import cpu_model, revision  # noqa: E402

from tcs_fewshot.data.tasks import TaskSpec, sample_tasks  # noqa: E402
from tcs_fewshot.runs.evaluator import evaluate  # noqa: E402
from tcs_fewshot.runs.experiment import RunConfig, load_run_inputs  # noqa: E402
from tcs_fewshot.runs.method_setup import StudentOptions, student_context  # noqa: E402
from tcs_fewshot.runs.run_tables import readable_paired, readable_summary, to_markdown # noqa: E402
from tcs_fewshot.stats.accuracy import paired, summary  # noqa: E402
from tcs_fewshot.methods.registry import training_settings  # noqa: E402
from tcs_fewshot.methods.finetune import FineTune, StudentNCM  # noqa: E402
from tcs_fewshot.methods.tcs import TCS  # noqa: E402

# Every entry names its scale: `tcs` is the starting point (whiten) the others are paired with.
GRID = {
    "tcs": {"scale": "whiten"},
    "tcs k=8": {"scale": "whiten", "components": 8},
    "tcs k=16": {"scale": "whiten", "components": 16},
    "tcs spectrum": {"scale": "spectrum"},
    "tcs mimic=0.3": {"scale": "whiten", "mimic_weight": 0.3},
    "tcs mimic=3": {"scale": "whiten", "mimic_weight": 3.0},
    "tcs no-selection": {"scale": "whiten", "selection": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="emoji")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tasks", type=int, default=150)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", default="runs/benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_run_inputs(RunConfig(benchmark=args.benchmark))  # the default teacher, as `run` loads it
    data = loaded.data
    context = student_context(data, loaded.teacher, loaded.cache, StudentOptions(checkpoint=args.checkpoint, views=args.views), seed=0)
    training = training_settings({"steps": args.steps})
    sections = []
    for shots in map(int, args.shots.split(",")):
        tasks = sample_tasks(data.index, TaskSpec(split="val", ways=5, shots=shots, queries=15, seed=0), args.tasks)
        methods = {"student-ncm": StudentNCM(training), "finetune": FineTune(training),
                   **{name: TCS(training, **options) for name, options in GRID.items()}}
        run_dir = Path(args.runs) / f"{args.benchmark}-val-selection-5way{shots}shot-n{args.tasks}"
        records = evaluate(tasks, methods, context.items, run_dir=run_dir, measure_memory=False, progress=True,
                           config={"checkpoint": args.checkpoint, "views": args.views, "steps": args.steps})
        table = readable_summary(summary(records))[["method", "accuracy (%)", "n", "fit (ms)"]]
        differences = readable_paired(paired(records, reference="tcs"))[["method", "difference (points)", "wins/losses"]]
        sections.append("\n".join([f"## 5-way {shots}-shot, {args.tasks} validation tasks", "", to_markdown(table), "",
                                   "Paired against the default tcs:", "", to_markdown(differences)]))
    text = "\n\n".join(["# Choosing TCS's per-task settings on the validation split",
                        f"Revision: `{revision()}`. Machine: {cpu_model()}, 1 torch thread. Student {args.checkpoint}; {args.views} views, "
                        f"{args.steps} steps, train_layers head.", f"Command: `python {' '.join(sys.argv)}`", *sections])
    out = Path(__file__).resolve().parent / "results" / "tcs_val_selection.md"
    out.write_text(text + "\n")
    print(text + f"\nwrote {out}")


if __name__ == "__main__":
    main()
