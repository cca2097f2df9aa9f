"""Wall time and peak memory per task of TCS against logit KD and FitNets, side by side, at equal steps.

    python benchmarks/tcs_cost.py --checkpoint students/emoji-tcs.pt --tasks 10

Every method runs the same tasks with the same student, views, steps and batch size, each in
its own fresh process (so peak resident memory, ``ru_maxrss``, is the method's own; torch's
CPU allocations are invisible to tracemalloc). ``kd-online`` runs the teacher on every training
batch, as logit KD usually is; ``kd`` reads the same views from the cache, so the table
separates what caching buys from what the coordinate system buys. A baseline process that
sets up identically and runs ``student-ncm`` (no training, no teacher) gives the memory
every method pays before training.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ["student-ncm", "tcs", "kd", "kd-online", "fitnets"]


def measure(args: argparse.Namespace) -> dict:
    """Run ``args.method`` on the tasks in this process; time per task and peak RSS."""
    import torch

    from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
    from tcs_fewshot.runs.experiment import RunConfig, load_run_inputs
    from tcs_fewshot.runs.method_setup import StudentOptions, build_methods

    torch.set_num_threads(args.threads)
    loaded = load_run_inputs(RunConfig(benchmark=args.benchmark))  # the default teacher, as `run` loads it
    data, teacher, cache, features = loaded.data, loaded.teacher, loaded.cache, loaded.probe_inputs[1]
    tasks = sample_tasks(data.index, TaskSpec(split="test", ways=5, shots=args.shots, queries=15, seed=0), args.tasks)
    training = {"steps": args.steps, "batch_size": args.batch_size, "train_layers": args.train_layers, "threads": args.threads}
    methods, inputs, _ = build_methods([args.method], features, None, data=data, teacher=teacher, cache=cache,
                                  student=StudentOptions(checkpoint=args.checkpoint, views=args.views, training=training))
    method, items = methods[args.method], inputs[args.method]  # items: ids -> StudentItems
    warm = tasks.tasks[0]  # memoises the frozen student outputs and loads the cache pages once
    method.fit(items(warm.support_ids), warm.support_labels).predict(items(warm.query_ids))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, passes = [], []
    for task in tasks.tasks[1:]:
        started = time.perf_counter()
        method.fit(items(task.support_ids), task.support_labels).predict(items(task.query_ids))
        seconds.append(time.perf_counter() - started)
        passes.append(method.teacher_forward_passes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": args.method, "seconds_per_task": sum(seconds) / len(seconds), "peak_rss_mb": peak / 1024,
            "rss_before_tasks_mb": before / 1024, "teacher_passes_per_task": sum(passes) / len(passes)}


def table(rows: dict[str, dict], args: argparse.Namespace) -> str:
    """The markdown results: time and memory growth per method, and TCS's ratios to each."""
    from timing import cpu_model, revision

    growth = {method: row["peak_rss_mb"] - row["rss_before_tasks_mb"] for method, row in rows.items()}
    tcs = rows["tcs"]
    lines = ["| method | s/task | TCS time / method's | peak RSS growth over the tasks (MB) | TCS growth / method's | "
             "teacher passes/task |", "|---|---|---|---|---|---|"]
    for method, row in rows.items():
        lines.append(f"| {method} | {row['seconds_per_task']:.3f} | {tcs['seconds_per_task'] / row['seconds_per_task']:.2f} | "
                     f"{growth[method]:.0f} | {growth['tcs'] / growth[method] if growth[method] > 0 else float('nan'):.2f} | "
                     f"{row['teacher_passes_per_task']:.0f} |")
    return "\n".join([
        "# Cost per task: TCS against logit KD and FitNets (equal steps)", "",
        f"Revision: `{revision()}`. Machine: {cpu_model()}, {args.threads} torch thread(s). {args.tasks - 1} timed tasks (5-way {args.shots}-shot, "
        f"emoji test split) after one warm-up task; {args.steps} steps of batch {args.batch_size}, train_layers "
        f"{args.train_layers}, {args.views} augmented views per image, student {args.checkpoint}.", "",
        f"Command: `python benchmarks/tcs_cost.py {' '.join(sys.argv[1:])}`", "", *lines, "",
        "Each method runs in a fresh process. Memory is the growth of the process's peak resident memory "
        "(ru_maxrss) from after the warm-up task to the end of the timed tasks: what the method's training "
        "adds above the setup every method shares (teacher features, student, benchmark index: about 1 GB here). "
        "torch's CPU allocations are invisible to tracemalloc, so the evaluator's peak_memory_mb cannot compare them.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="emoji")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tasks", type=int, default=10, help="timed tasks + 1 warm-up")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--train-layers", default="last")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--method", help=argparse.SUPPRESS)  # set in the per-method child processes
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args)))
        return
    rows = {}
    for method in METHODS:
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--method", method], capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"{method} failed: {child.stderr[-2000:]}")
        rows[method] = json.loads(child.stdout.strip().splitlines()[-1])
        print(rows[method], flush=True)
    text = table(rows, args)
    out = Path(__file__).resolve().parent / "results" / "tcs_cost.md"
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
