"""TCS against every baseline and ablation on the same tasks of an embedded benchmark.

    python benchmarks/tcs_accuracy.py --ce students/emoji-ce.pt --tcs students/emoji-tcs.pt \
        --split test --shots 1,5 --tasks 600

Two students of the same architecture start the student methods: one trained on the base
split with cross-entropy only (``ce/...``: the non-distilled baselines), one distilled on the
base split with TCS (``tcs/...``). Teacher probes and raw-pixel NCM run on the same tasks, so
every table shows whether the teacher carries knowledge here. Records go to a resumable run
directory per setting; the markdown report (accuracy, paired differences against
``tcs/tcs``, the gap closed, FLOPs) goes to benchmarks/results/.
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
from tcs_fewshot.runs.experiment import (  # noqa: E402
    RunConfig,
    base_mean,
    load_run_inputs,
    unrelated_features,
)
from tcs_fewshot.runs.method_setup import StudentOptions, build_methods  # noqa: E402
from tcs_fewshot.runs.run_tables import readable_paired, readable_summary, to_markdown # noqa: E402
from tcs_fewshot.stats.accuracy import paired, summary  # noqa: E402
from tcs_fewshot.models.students import build_student, count_parameters, flops_per_image  # noqa: E402

PROBES = ["pixel-ncm", "ncm", "simpleshot", "logreg"]
CE_METHODS = ["student-ncm", "finetune", "tcs"]
TCS_METHODS = ["student-ncm", "finetune", "kd", "fitnets", "lsh-l2", "tcs", "tcs-elsh", "tcs-random", "tcs-unrelated", "tcs-noselect"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="emoji")
    parser.add_argument("--ce", required=True, help="student checkpoint trained with cross-entropy on the base split")
    parser.add_argument("--tcs", required=True, help="student checkpoint distilled with TCS on the base split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--train-layers", default="head", help="head (fast), last or all: which student layers train per task")
    parser.add_argument("--methods", default=None, help="comma list of the student methods to run (default all)")
    parser.add_argument("--tcs-options", default="", help="comma list key=value for the tcs methods, e.g. components=16")
    parser.add_argument("--runs", default="runs/benchmarks")
    parser.add_argument("--name", default=None, help="results file stem (default tcs_accuracy_<benchmark>_<split>)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    loaded = load_run_inputs(RunConfig(benchmark=args.benchmark))  # the default teacher, as `run` loads it
    data, teacher, cache, features = loaded.data, loaded.teacher, loaded.cache, loaded.probe_inputs[1]
    unrelated = unrelated_features(RunConfig(benchmark=args.benchmark), loaded)
    tcs_options = {key: _value(value) for key, value in (item.split("=") for item in args.tcs_options.split(",") if item)}
    training = {"steps": args.steps, "train_layers": args.train_layers}
    chosen = set(args.methods.split(",")) if args.methods else None
    sections = []
    for shots in map(int, args.shots.split(",")):
        spec = TaskSpec(split=args.split, ways=5, shots=shots, queries=15, seed=0)
        tasks = sample_tasks(data.index, spec, args.tasks)
        mean = base_mean(data.index, features, spec)
        methods, inputs = {}, {}
        for prefix, checkpoint, names in (("", None, PROBES), ("ce/", args.ce, CE_METHODS), ("tcs/", args.tcs, TCS_METHODS)):
            names = [name for name in names if chosen is None or prefix == "" or name in chosen]
            if not names:
                continue
            options = {name: tcs_options for name in names if name.startswith("tcs")}
            built, built_inputs, _ = build_methods(names, features, mean, data=data, teacher=teacher, cache=cache,
                                                   student=StudentOptions(checkpoint=checkpoint, views=args.views,
                                                                          training=training, options=options),
                                                   unrelated=lambda: unrelated) if checkpoint or prefix == "" else (None, None, None)
            methods.update({prefix + name: method for name, method in built.items()})
            inputs.update({prefix + name: value for name, value in built_inputs.items()})
        layers = "" if args.train_layers == "head" else f"-{args.train_layers}"
        run_dir = Path(args.runs) / f"{args.benchmark}-{args.split}-5way{shots}shot-n{args.tasks}{layers}"
        config = {"ce": args.ce, "tcs": args.tcs, "views": args.views, "training": training, "tcs_options": tcs_options}
        records = evaluate(tasks, methods, inputs, run_dir=run_dir, config=config, measure_memory=False, progress=True)
        sections.append(_section(shots, records, args))
    student = build_student("conv4-32", "checkpoint", Path(args.tcs))
    teacher_flops = flops_per_image(teacher.model, teacher.config.get("input_size", [3, 224, 224])[-1])
    cost = (f"Student {student.name} at {student.image_size} px: {flops_per_image(student) / 1e6:.0f} MFLOPs/image, "
            f"{count_parameters(student.model) / 1e6:.2f}M parameters; teacher {teacher.name}: "
            f"{teacher_flops / 1e6:.0f} MFLOPs/image, {count_parameters(teacher.model) / 1e6:.2f}M parameters "
            f"({teacher_flops / flops_per_image(student):.1f}x the student's FLOPs).")
    name = args.name or f"tcs_accuracy_{args.benchmark}_{args.split}"
    text = "\n\n".join([f"# TCS and baselines on {args.benchmark} ({args.split} split)",
                         f"Revision: `{revision()}`. Machine: {cpu_model()}, 1 torch thread. {cost}", f"Command: `python {' '.join(sys.argv)}`",
                         *sections])
    out = Path(__file__).resolve().parent / "results" / f"{name}.md"
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}")


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _section(shots: int, records, args) -> str:
    table = summary(records)
    accuracy = table.set_index("method")["accuracy"]
    differences = paired(records, reference="tcs/tcs")
    baseline = max((accuracy[name] for name in ("ce/student-ncm", "ce/finetune") if name in accuracy), default=float("nan"))
    columns = ["method", "accuracy (%)", "n", "failures", "fit (ms)", "predict (ms)"]
    lines = [f"## 5-way {shots}-shot, {args.tasks} tasks", "", to_markdown(readable_summary(table)[columns]), "",
             "Paired differences (method minus tcs/tcs, points):", "",
             to_markdown(readable_paired(differences)[["method", "difference (points)", "n pairs", "wins/losses"]]), ""]
    for probe in ("ncm", "logreg"):
        gap = accuracy[probe] - baseline
        numbers = f"best non-distilled student {baseline:.2f}, tcs/tcs {accuracy['tcs/tcs']:.2f}, teacher {accuracy[probe]:.2f}"
        if gap <= 0:
            lines.append(f"- No gap to close against the teacher's {probe}: the students already match or beat it ({numbers}).")
        else:
            closed = (accuracy["tcs/tcs"] - baseline) / gap
            lines.append(f"- Gap closed by tcs/tcs against the teacher's {probe}: {closed:.2f} ({numbers}).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
