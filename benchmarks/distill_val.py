"""Choose the base-split distillation on the validation split: every objective on one loop, val NCM per epoch.

    python benchmarks/distill_val.py --out benchmarks/results/distill_val_emoji.md [--only tcs,ce]

Each configuration distils the default student (ImageNet MobileNetV2, 64 px) on the emoji
train split with ``DistillSettings(**config)`` and reports the student-NCM score of 100
validation tasks (5-way 5-shot, plain images) before training and after every epoch, as
``distill`` records it. Test classes are never used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import cpu_model, revision  # noqa: E402

from tcs_fewshot.data.benchmarks import open_benchmark  # noqa: E402
from tcs_fewshot.methods.distill import DistillSettings, distill  # noqa: E402
from tcs_fewshot.models.cache import FeatureCache  # noqa: E402
from tcs_fewshot.models.students import build_student  # noqa: E402
from tcs_fewshot.models.teachers import load_teacher  # noqa: E402

COMMON = {"epochs": 6, "views": 1}
CONFIGS = {
    "tcs k=64 mimic only": {"objective": "tcs", "ce_weight": 0.0},
    "tcs k=16 mimic only": {"objective": "tcs", "components": 16, "ce_weight": 0.0},
    "tcs k=256 mimic only": {"objective": "tcs", "components": 256, "ce_weight": 0.0},
    "tcs k=64 + ce": {"objective": "tcs", "ce_weight": 1.0},
    "tcs k=256 + ce": {"objective": "tcs", "components": 256, "ce_weight": 1.0},
    "tcs k=1280 + ce": {"objective": "tcs", "components": 1280, "ce_weight": 1.0},
    "fitnets mimic only": {"objective": "fitnets", "ce_weight": 0.0},
    "kd only": {"objective": "kd", "ce_weight": 0.0},
    "ce": {"objective": "ce"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated configuration names (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    adapter, root = open_benchmark("emoji", None, None)
    data = adapter.load(root, None)
    teacher, cache = load_teacher("torchvision:mobilenet_v2"), FeatureCache()
    rows = []
    for name in names:
        start = time.perf_counter()
        torch.manual_seed(0)
        result = distill(data, teacher, cache, build_student("torchvision:mobilenet_v2"), DistillSettings(**{**COMMON, **CONFIGS[name]}))
        scores = [record["val_accuracy"] for record in result.history]
        best = max(range(len(scores)), key=scores.__getitem__)
        rows.append(f"| {name} | {scores[0]:.2f} | {scores[-1]:.2f} | {scores[best]:.2f} (epoch {best}) | "
                    f"{' '.join(f'{s:.1f}' for s in scores[1:])} | {time.perf_counter() - start:.0f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Base-split distillation chosen on the emoji validation split", "",
        f"Revision {revision()}; machine: {cpu_model()}, {torch.get_num_threads()} torch threads.",
        f"Command: `python benchmarks/distill_val.py{' --only ' + args.only if args.only else ''}"
        f"{' --out ' + str(args.out) if args.out else ''}`", "",
        f"Every row: {COMMON} on the train split's 2,041 images; val = student NCM, 100 val tasks, 5-way 5-shot.", "",
        "| configuration | val before | val last | val best | per epoch | seconds |", "|---|---|---|---|---|---|", *rows, ""])
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
