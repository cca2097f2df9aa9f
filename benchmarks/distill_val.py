"""Choose the base-split distillation on the validation split: every objective on one loop, val NCM per epoch.

    python benchmarks/distill_val.py --epochs 12 --out benchmarks/results/distill_val_emoji.md [--only ce,tcs-k64]

Each configuration distils the default student (ImageNet MobileNetV2, 64 px) on the emoji train
split with the settings a run's ``distill`` table would give (:func:`settings_for`, so the
students land in the same cache that ``student-ncm@<objective>`` runs load from) and reports the
student-NCM score of 100 validation tasks (5-way 5-shot, plain images) before training and after
every epoch, as ``distill`` records it. The teacher's NCM on the same validation tasks is the
row that says whether the teacher knows more than the student there. Test classes are never used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import cpu_model, revision  # noqa: E402

from tcs_fewshot.data.benchmarks import load_benchmark  # noqa: E402
from tcs_fewshot.data.tasks import TaskSpec, sample_tasks  # noqa: E402
from tcs_fewshot.runs.distilled import distilled_student, settings_for  # noqa: E402
from tcs_fewshot.methods.distill import split_items  # noqa: E402
from tcs_fewshot.methods.probes import ncm_task_accuracies  # noqa: E402
from tcs_fewshot.cache.feature_cache import FeatureCache  # noqa: E402
from tcs_fewshot.models.students import build_student  # noqa: E402
from tcs_fewshot.models.teachers import load_teacher  # noqa: E402

# name -> (objective, distill table). Every row shares epochs, views, optimiser, seed, train_layers.
# Rows without "ridge" in their name start tcs/fitnets heads random (the default before head_init existed).
CONFIGS = {
    "ce": ("ce", {}),
    "kd": ("kd", {"ce_weight": 0.0}),
    "kd + ce": ("kd", {}),
    "fitnets": ("fitnets", {"ce_weight": 0.0, "head_init": "random"}),
    "fitnets + ce": ("fitnets", {"head_init": "random"}),
    "tcs k=16": ("tcs", {"components": 16, "ce_weight": 0.0, "head_init": "random"}),
    "tcs k=64": ("tcs", {"ce_weight": 0.0, "head_init": "random"}),
    "tcs k=256": ("tcs", {"components": 256, "ce_weight": 0.0, "head_init": "random"}),
    "tcs k=1280": ("tcs", {"components": 1280, "ce_weight": 0.0, "head_init": "random"}),
    "tcs k=1280 + ce": ("tcs", {"components": 1280, "head_init": "random"}),
    "tcs k=1280 whiten": ("tcs", {"components": 1280, "scale": "whiten", "ce_weight": 0.0, "head_init": "random"}),
    "tcs k=64 whiten": ("tcs", {"scale": "whiten", "ce_weight": 0.0, "head_init": "random"}),
    "tcs k=64 + ce": ("tcs", {"head_init": "random"}),
    "tcs k=64 + ce 0.1": ("tcs", {"ce_weight": 0.1, "head_init": "random"}),
    "tcs k=64 + ce, selection": ("tcs", {"selection": True, "head_init": "random"}),
    "tcs k=64 random basis": ("tcs", {"basis": "random-orthogonal", "ce_weight": 0.0, "head_init": "random"}),
    "tcs k=64 matched views 2": ("tcs", {"views": 2, "target_views": "matched", "ce_weight": 0.0, "head_init": "random"}),
    # The regression heads started at least squares instead of random (head_init, DistillSettings).
    "tcs k=64 ridge": ("tcs", {"ce_weight": 0.0, "head_init": "ridge"}),
    "tcs k=256 ridge": ("tcs", {"components": 256, "ce_weight": 0.0, "head_init": "ridge"}),
    "tcs k=1280 ridge": ("tcs", {"components": 1280, "ce_weight": 0.0, "head_init": "ridge"}),
    "tcs k=1280 whiten ridge": ("tcs", {"components": 1280, "scale": "whiten", "ce_weight": 0.0, "head_init": "ridge"}),
    "fitnets ridge": ("fitnets", {"ce_weight": 0.0, "head_init": "ridge"}),
    "tcs k=64 + ce ridge": ("tcs", {"head_init": "ridge"}),
    "tcs k=1280 + ce ridge": ("tcs", {"components": 1280, "head_init": "ridge"}),
}


def teacher_val_ncm(data, teacher, cache: FeatureCache, tasks) -> tuple[float, float]:
    """The teacher's NCM (mean %, 95% half-width) on the validation tasks the students are scored on."""
    ids = sorted({str(i) for task in tasks for i in (*task.support_ids, *task.query_ids)})
    features = cache.features(teacher, data, ids)[:, 0]
    accuracies = 100 * ncm_task_accuracies(features, ids, tasks)
    return float(np.mean(accuracies)), 1.96 * float(np.std(accuracies, ddof=1)) / len(accuracies) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated configuration names (default: all)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rev = revision()  # the code that runs, not the checkout's state when the file is written
    names = args.only.split(",") if args.only else list(CONFIGS)
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from: {', '.join(CONFIGS)}")
    data = load_benchmark("emoji")
    teacher, cache = load_teacher("torchvision:mobilenet_v2"), FeatureCache()
    reference = settings_for("ce", {"epochs": args.epochs})
    tasks = sample_tasks(data.index, TaskSpec(split="val", ways=5, shots=reference.val_shots,
                                              queries=reference.val_queries, seed=reference.seed), reference.val_tasks)
    teacher_mean, teacher_half = teacher_val_ncm(data, teacher, cache, tasks)
    rows = [f"| teacher NCM (224 px, 599 MFLOPs) | {teacher_mean:.2f} ± {teacher_half:.2f} | | | | |"]
    print(rows[-1], flush=True)
    for name in names:
        objective, table = CONFIGS[name]
        settings = settings_for(objective, {"epochs": args.epochs, **table})
        start = time.perf_counter()
        student, record = distilled_student(data, teacher, cache, lambda: build_student("torchvision:mobilenet_v2"), settings)
        history = student.config["distilled"]["history"]
        scores = [entry["val_accuracy"] for entry in history]
        best = max(range(len(scores)), key=scores.__getitem__)
        terms = {k: v for k, v in history[-1].items() if k not in ("epoch", "val_accuracy", "selected")}
        cached = " (cached)" if record["cached"] else ""
        rows.append(f"| {name} | {scores[0]:.2f} | {scores[best]:.2f} (epoch {best}) | "
                    f"{' '.join(f'{s:.1f}' for s in scores[1:])} | "
                    f"{', '.join(f'{k} {v:.3f}' for k, v in sorted(terms.items()))} | {time.perf_counter() - start:.0f}{cached} |")
        print(rows[-1], flush=True)
    command = "python benchmarks/distill_val.py" + (f" --only '{args.only}'" if args.only else "") + f" --epochs {args.epochs}"
    text = "\n".join([
        "# Base-split distillation chosen on the emoji validation split", "",
        f"Revision {rev}; machine: {cpu_model()}, {torch.get_num_threads()} torch threads (cores shared with other jobs).",
        f"Command: `{command}{' --out ' + str(args.out) if args.out else ''}`", "",
        f"Every row: the default student (ImageNet MobileNetV2, 64 px) distilled on the train split's "
        f"{len(split_items(data, 'train')[0]):,} images "
        f"for {args.epochs} epochs, other settings as `DistillSettings` defaults plus the row's changes; "
        f"val = student NCM (L2-normalised features), {reference.val_tasks} val tasks, 5-way "
        f"{reference.val_shots}-shot; epoch 0 is the undistilled student.", "",
        "| configuration | val epoch 0 | val best | val after each epoch | last epoch's loss terms | seconds |",
        "|---|---|---|---|---|---|", *rows, ""])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
