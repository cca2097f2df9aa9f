"""Per-task fit seconds of ``finetune`` with train_layers head, last-2 and all, side by side.

The default student (ImageNet MobileNetV2, 64 px) on emoji test tasks (5-way 5-shot), 4
augmented views per support image, default TrainingSettings otherwise. The frozen outputs of
every task are computed before the clock starts (``warm_up``), as the evaluator does, so the
seconds are the per-task training alone. Prints a markdown table; results/student_train_layers.md
records one run.

    TCS_FEWSHOT_DATA=/work/data-students python benchmarks/student_train_layers.py --tasks 5
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np
import torch

from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
from tcs_fewshot.runs.experiment import RunConfig, load_run_inputs
from tcs_fewshot.runs.method_setup import StudentOptions, student_context
from tcs_fewshot.methods.finetune import FineTune
from tcs_fewshot.methods.student_training import TrainingSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--layers", default="head,last-2,all")
    args = parser.parse_args()
    loaded = load_run_inputs(RunConfig(benchmark="emoji", device="cpu"))
    tasks = sample_tasks(loaded.data.index, TaskSpec(split="test", ways=5, shots=5, queries=15, seed=0), args.tasks).tasks
    context = student_context(loaded.data, loaded.teacher, loaded.cache, StudentOptions(device="cpu"), seed=0)
    rows = {}
    for layers in args.layers.split(","):
        seconds, accuracy = [], []
        for task in tasks:
            method = FineTune(TrainingSettings(steps=args.steps, train_layers=layers))
            method.warm_up(context.items(np.concatenate([task.support_ids, task.query_ids])))
            start = time.perf_counter()
            method.fit(context.items(task.support_ids), task.support_labels)
            seconds.append(time.perf_counter() - start)
            accuracy.append(float((method.predict(context.items(task.query_ids)).argmax(1).numpy() == task.query_labels).mean()))
        rows[layers] = (float(np.mean(seconds)), float(np.std(seconds, ddof=1)) if len(seconds) > 1 else 0.0, float(np.mean(accuracy)))
    head = rows.get("head", next(iter(rows.values())))[0]
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"revision {revision}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.tasks} tasks, {args.steps} steps, student {context.student.name} "
          f"{context.student.image_size} px")
    print("| train_layers | fit s/task (mean ± sd) | x head | accuracy % (mean) |\n|---|---|---|---|")
    for layers, (mean, sd, acc) in rows.items():
        print(f"| {layers} | {mean:.3f} ± {sd:.3f} | {mean / head:.1f} | {100 * acc:.1f} |")


if __name__ == "__main__":
    main()
