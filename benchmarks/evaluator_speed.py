"""Speed of the evaluation path: task sampling, statistics over many records, an NCM run.

Three measurements, each the median of 3 repetitions (1 with ``--quick``, which also
uses smaller sizes and writes no results file unless ``--out`` is given):

1. Task sampling throughput on miniImageNet-test-shaped labels (20 classes x 600
   items, 5-way 5-shot 15-query): ``TaskSampler.task(i)`` against learn2learn's
   ``TaskDataset`` (NWays, KShots, LoadData, RemapLabels) on the same labels. l2l's
   tasks include loading the (tiny) data tensors while ours return item ids, so ours
   is also timed with the feature lookup (``FeatureSet.rows``) of support and query.
   Target from the issue: at least 10x l2l.
2. ``summary`` + ``paired(reference=...)`` on 1,000,000 records (4 methods x 250,000
   tasks; target < 2 s), and ``paired`` over all method pairs (no target).
3. ``evaluate`` of the nearest-class-mean probe on 600 tasks of cached 512-d features,
   end to end (task sampling included), with and without a sqlite run directory and
   with memory measurement on and off (target < 5 s).

Run: ``/work/main/.venv/bin/python benchmarks/evaluator_speed.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import random
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

with contextlib.redirect_stderr(io.StringIO()):  # silence gym's deprecation banner
    import learn2learn as l2l
from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels
from timing import (  # benchmarks/timing.py, beside this script
    cpu_model,
    median_seconds,
    write_results,
)

from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.tasks import TaskSampler, TaskSpec, sample_tasks
from tcs_fewshot.runs.evaluator import evaluate
from tcs_fewshot.stats.accuracy import paired, summary
from tcs_fewshot.runs.store import COLUMN_NAMES
from tcs_fewshot.methods.probes import NearestClassMean
from tcs_fewshot.data.features import FeatureSet

SEED = 0
N_CLASSES, PER_CLASS, DIM = 20, 600, 512
SPEC = TaskSpec(ways=5, shots=5, queries=15)
DEFAULT_OUT = Path(__file__).parent / "results" / "evaluator_speed.md"


def mini_imagenet_test() -> tuple[LabelIndex, FeatureSet, np.ndarray]:
    """20 classes x 600 items as a LabelIndex, random 512-d features, and integer labels."""
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    names = [f"n{label:02d}" for label in labels]
    ids = [f"{name}/{i:04d}.jpg" for name, i in zip(names, np.tile(np.arange(PER_CLASS), N_CLASSES))]
    index = LabelIndex.from_items(ids, names, {"test": sorted(set(names))}, name="miniImageNet-test-shape")
    features = np.random.default_rng(SEED).standard_normal((len(ids), DIM), dtype=np.float32)
    return index, FeatureSet(index.item_ids, features), labels


def bench_sampling(index, feature_set, labels, n_tasks: int, repeats: int) -> list[tuple]:
    sampler = TaskSampler(index, SPEC)
    data = torch.utils.data.TensorDataset(torch.zeros(len(labels), 1), torch.from_numpy(labels))
    meta = l2l.data.MetaDataset(data)
    transforms = [NWays(meta, SPEC.ways), KShots(meta, SPEC.shots + SPEC.queries), LoadData(meta), RemapLabels(meta)]
    taskset = l2l.data.TaskDataset(meta, transforms, num_tasks=-1)  # -1: a fresh draw per call, no cache
    random.seed(SEED)  # l2l draws with Python's random module

    def ours_ids():
        for i in range(n_tasks):
            sampler.task(i)

    def ours_features():
        for i in range(n_tasks):
            task = sampler.task(i)
            feature_set.rows(task.support_ids), feature_set.rows(task.query_ids)

    def l2l_tasks():
        for i in range(n_tasks):
            taskset[i]

    l2l_rate = n_tasks / median_seconds(l2l_tasks, repeats)
    rows = []
    for what, function in (("ids only", ours_ids), ("+ FeatureSet.rows lookup", ours_features)):
        rate = n_tasks / median_seconds(function, repeats)
        ratio = rate / l2l_rate
        rows.append((f"Task sampling, {n_tasks:,} tasks, {what}", f"{rate:,.0f} tasks/s",
                     f"l2l TaskDataset (incl. LoadData): {l2l_rate:,.0f} tasks/s; target >= 10x",
                     f"{ratio:.1f}x, {'met' if ratio >= 10 else 'missed'}"))
    return rows


def synthetic_records(n_tasks: int, methods: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """Records like a store's: one row per (task, method), ordered by task then method."""
    n = n_tasks * len(methods)
    task_index = np.repeat(np.arange(n_tasks), len(methods))
    n_query = SPEC.ways * SPEC.queries
    n_correct = rng.binomial(n_query, 0.6, size=n).astype(float)
    failed = rng.choice(n, size=12, replace=False)
    n_correct[failed] = np.nan
    failure = np.full(n, None, dtype=object)
    failure[failed] = "RuntimeError: synthetic failure"
    checksums = np.array([f"{i:064x}" for i in range(n_tasks)], dtype=object)
    columns = {
        "dataset": "miniImageNet", "protocol": "episodic", "split": "test", "ways": SPEC.ways,
        "shots": SPEC.shots, "queries": SPEC.queries, "seed": SEED, "task_index": task_index,
        "task_checksum": checksums[task_index], "method": np.tile(sorted(methods), n_tasks),
        "accuracy": n_correct / n_query, "n_correct": n_correct, "n_query": n_query,
        "fit_seconds": rng.exponential(1e-3, n), "predict_seconds": rng.exponential(1e-3, n),
        "peak_memory_mb": rng.exponential(0.5, n), "failure": failure,
    }
    return pd.DataFrame(columns, columns=list(COLUMN_NAMES))


def bench_stats(n_tasks: int, repeats: int, rng: np.random.Generator) -> list[tuple]:
    records = synthetic_records(n_tasks, ["ncm", "simpleshot", "logreg", "tcs"], rng)
    n = f"{len(records):,} records"
    both = median_seconds(lambda: (summary(records), paired(records, reference="ncm")), repeats)
    all_pairs = median_seconds(lambda: paired(records), repeats)
    return [
        (f"summary + paired(reference='ncm'), {n}", f"{both:.2f} s", "< 2 s", "met" if both < 2 else "missed"),
        (f"paired(all 6 pairs), {n}", f"{all_pairs:.2f} s", "no target", "-"),
    ]


def bench_evaluate(index, feature_set, n_tasks: int, repeats: int) -> list[tuple]:
    rows = []
    for store in (False, True):
        for memory in (True, False):
            def run():
                with tempfile.TemporaryDirectory() as tmp:  # a fresh run_dir: no resume
                    evaluate(sample_tasks(index, SPEC, n_tasks), {"ncm": NearestClassMean()}, feature_set,
                             run_dir=Path(tmp) / "run" if store else None, measure_memory=memory)

            seconds = median_seconds(run, repeats)
            label = f"evaluate NCM, {n_tasks} tasks, {'sqlite run_dir' if store else 'in memory'}, " \
                    f"measure_memory={'on' if memory else 'off'}"
            rows.append((label, f"{seconds:.2f} s", "< 5 s", "met" if seconds < 5 else "missed"))
    return rows


def header(command: str, quick: bool) -> str:
    cpu = cpu_model()
    return "\n".join([
        "# Evaluator speed" + (" (--quick: smaller sizes, 1 repetition)" if quick else ""), "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"torch {torch.__version__}, learn2learn {l2l.__version__}",
        f"- Command: `{command}`",
        f"- Each number is the median of {1 if quick else 3} repetition(s), timed with time.perf_counter.",
    ])


NOTES = """
Notes:

- Not the same work: l2l's `TaskDataset` loads the data tensors of each task (`LoadData`,
  here 1-element tensors) and collates them, while `TaskSampler.task(i)` returns item ids.
  The "+ FeatureSet.rows lookup" row adds fetching the 512-d features of support and query,
  which is at least the loading work l2l does. l2l's KShots draws shots+queries per class
  without splitting them; ours also splits support/query and keeps the item ids.
- Setup (building the LabelIndex / TaskSampler, l2l's MetaDataset) is not timed.
- The evaluate rows include `sample_tasks`; the sqlite rows also write the manifest and
  `tasks.json.gz` and commit one transaction per task (every
  commit is durable against a killed process: sqlite's write-ahead log with
  `synchronous=NORMAL`), and run `git describe` once for the manifest.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 1 repetition, no results file")
    parser.add_argument("--out", type=Path, help=f"markdown file to write (default {DEFAULT_OUT} when not --quick)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    n_sample, n_record_tasks, n_eval = (200, 25_000, 100) if args.quick else (2_000, 250_000, 600)
    rng = np.random.default_rng(SEED)
    index, feature_set, labels = mini_imagenet_test()
    rows = [*bench_sampling(index, feature_set, labels, n_sample, repeats),
            *bench_stats(n_record_tasks, repeats, rng),
            *bench_evaluate(index, feature_set, n_eval, repeats)]

    command = shlex.join([sys.executable, *sys.argv])
    write_results(header(command, args.quick), rows, NOTES, args.out or (None if args.quick else DEFAULT_OUT))


if __name__ == "__main__":
    main()
