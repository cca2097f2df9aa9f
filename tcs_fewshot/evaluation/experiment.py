"""One evaluation run from a config: what ``tcs-fewshot run`` calls, importable as is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tcs_fewshot.data.benchmarks import BenchmarkData, open_benchmark
from tcs_fewshot.data.digits import load_digits_benchmark
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.taskfile import load_tasks
from tcs_fewshot.data.tasks import TaskSet, TaskSpec, sample_tasks
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.evaluation.evaluator import evaluate
from tcs_fewshot.evaluation.stats import paired, summary
from tcs_fewshot.methods import PROBES, build_probe
from tcs_fewshot.models.features import FeatureSet, load_features_file
from tcs_fewshot.models.cache import FeatureCache
from tcs_fewshot.models.pixels import pixel_features
from tcs_fewshot.models.teachers import load_teacher

BASE_SPLITS = ("train", "base", "background")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved in the run manifest.

    Attributes:
        benchmark: A registered benchmark (``tcs-fewshot benchmarks``) or ``digits`` (the
            bundled demo); image benchmarks are embedded as raw pixels until teachers land.
        features: Path of an ``.npz`` features file; replaces ``benchmark`` when given.
        root: Where the benchmark's files are (default ``$TCS_FEWSHOT_DATA/<benchmark>``).
        scheme: The benchmark's split scheme (default: its first).
        split_file: For ``benchmark="folder"``: a JSON ``{split: [class, ...]}``; without it the
            classes are split by a seeded rule (recorded with the data).
        teacher: The embedding of a benchmark's images: a teacher spec (``tcs-fewshot teacher``;
            default the offline ImageNet MobileNetV2), its features computed once and cached, or
            ``pixels`` (raw 16x16 RGB, the sanity baseline every teacher must beat).
        teacher_weights: A local weights file for the teacher.
        protocol, split, ways, shots, queries, seed: the :class:`TaskSpec`.
        tasks: Number of tasks (episodic) or repeats of the shot draw (pFSL).
        methods: Registry names of the methods, in report order.
        tasks_file: Evaluate on the tasks of this file instead of sampling (spec taken from it).
        ci: ``normal`` or ``t`` (see :mod:`tcs_fewshot.evaluation.stats`).
        reference: Method that paired differences are taken against (default: the first).
    """

    benchmark: str = "emoji"
    features: str | None = None
    root: str | None = None
    scheme: str | None = None
    split_file: str | None = None
    teacher: str = "torchvision:mobilenet_v2"
    teacher_weights: str | None = None
    protocol: str = "episodic"
    split: str = "test"
    ways: int = 5
    shots: int = 5
    queries: int = 15
    tasks: int = 600
    seed: int = 0
    methods: tuple[str, ...] = ("ncm", "simpleshot", "logreg")
    tasks_file: str | None = None
    ci: str = "normal"
    reference: str | None = None

    def default_run_dir(self) -> Path:
        name = Path(self.features).stem if self.features else self.benchmark
        if not self.features and self.benchmark != "digits":
            name += "-" + Path(self.teacher.split(":")[-1]).stem
        shape = f"{self.shots}shot" if self.protocol == "pfsl" else f"{self.ways}way{self.shots}shot{self.queries}q"
        return Path("runs") / f"{name}-{self.protocol}-{shape}-seed{self.seed}-n{self.tasks}"


@dataclass
class RunResult:
    run_dir: Path
    task_set: TaskSet
    records: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame

    @property
    def failures(self) -> int:
        return int(self.records["failure"].notna().sum())


def _benchmark_data(config: RunConfig) -> BenchmarkData:
    adapter, root = open_benchmark(config.benchmark, config.root, config.split_file)
    return adapter.load(root, config.scheme)


def load_index(config: RunConfig) -> LabelIndex:
    """The label index of the data ``config`` names (what tasks are sampled from)."""
    if config.features:
        return load_features_file(config.features)[0]
    if config.benchmark == "digits":
        return load_digits_benchmark()[0]
    return _benchmark_data(config).index


def load_inputs(config: RunConfig, progress: bool = False) -> tuple[LabelIndex, FeatureSet, dict]:
    """The label index, the features the probes run on, and where the data came from.

    The third item (benchmark manifest checksum, build checksum of an embedded benchmark,
    pretraining-overlap notes) is recorded in the run manifest.
    """
    if config.features:
        index, features = load_features_file(config.features)
        return index, features, {"features_file_sha256": _sha256(Path(config.features))}
    if config.benchmark == "digits":
        return (*load_digits_benchmark(), {"benchmark": "digits"})
    data = _benchmark_data(config)
    build = data.manifest.get("build", {})
    provenance = {
        "benchmark": config.benchmark,
        "scheme": data.scheme,
        "manifest_checksum": data.manifest.get("checksum"),
        "build_checksum": build.get("checksum") or build.get("images_sha256"),
        "pretraining_overlap": data.manifest.get("pretraining_overlap"),
    }
    if config.teacher == "pixels":
        return data.index, pixel_features(data), {**provenance, "embedding": "raw pixels, 16x16 RGB"}
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the cache extracts on the model's device
    teacher = load_teacher(config.teacher, config.teacher_weights, device=device)
    features = FeatureCache().feature_set(teacher, data, progress=progress)
    embedding = {"teacher": teacher.name, "identity": teacher.identity, "pretraining": teacher.pretraining,
                 "config": teacher.config}
    return data.index, features, {**provenance, "embedding": embedding}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_mean(index: LabelIndex, feature_set: FeatureSet, spec: TaskSpec) -> np.ndarray | None:
    """Mean feature of a base split whose classes are not evaluated, else None.

    SimpleShot centres on it. Under pFSL every class is evaluated, and a split that is
    itself evaluated would leak its queries into the centre: both give None, and SimpleShot
    then centres on the support set.
    """
    if spec.protocol == "pfsl":
        return None
    evaluated = set(index.classes(spec.split))
    for split in BASE_SPLITS:
        classes = set(index.class_splits.get(split, ()))
        if classes and split != spec.split and not classes & evaluated:
            mask = [label in classes for label in index.labels.tolist()]
            return feature_set.mean(index.item_ids[mask])
    return None


def run_experiment(config: RunConfig, run_dir: str | Path | None = None, progress: bool = False,
                   fail_fast: bool = False) -> RunResult:
    """Sample (or load) the tasks, evaluate the methods into ``run_dir`` and summarise.

    With ``config.tasks_file`` the task shape, seed and count come from the file. Re-running
    with the same config and ``run_dir`` resumes: finished tasks are kept.
    """
    if not config.methods:
        raise TcsFewshotError("no methods given; pass --methods, e.g. ncm,simpleshot,logreg")
    if config.reference is not None and config.reference not in config.methods:
        raise TcsFewshotError(f"--reference '{config.reference}' is not among --methods {','.join(config.methods)}")
    unknown = [name for name in config.methods if name not in PROBES]
    if unknown:
        raise TcsFewshotError(f"unknown method '{unknown[0]}'; choose from: {', '.join(PROBES)}")
    index, feature_set, provenance = load_inputs(config, progress)
    if config.tasks_file:
        task_set = load_tasks(config.tasks_file, index=index)
        spec = task_set.spec
        config = replace(config, protocol=spec.protocol, split=spec.split, ways=spec.ways, shots=spec.shots,
                         queries=spec.queries, seed=spec.seed, tasks=len(task_set), tasks_file=None)
    else:
        spec = TaskSpec(protocol=config.protocol, split=config.split, ways=config.ways, shots=config.shots,
                        queries=config.queries, seed=config.seed)
        task_set = sample_tasks(index, spec, config.tasks)
    mean = base_mean(index, feature_set, spec)
    methods = {name: build_probe(name, mean) for name in config.methods}
    run_dir = Path(run_dir) if run_dir is not None else config.default_run_dir()
    # The tasks are identified by their checksum (in the manifest), never by a file's path.
    recorded = {k: v for k, v in asdict(config).items() if k not in ("methods", "ci", "reference", "tasks_file")}
    recorded["data_fingerprint"] = index.fingerprint
    recorded["data"] = provenance
    records = evaluate(task_set, methods, feature_set, run_dir=run_dir, config=recorded,
                       fail_fast=fail_fast, progress=progress)
    reference = config.reference or config.methods[0]
    return RunResult(
        run_dir=run_dir,
        task_set=task_set,
        records=records,
        summary=summary(records, ci=config.ci, methods=config.methods),
        paired=paired(records, reference=reference, ci=config.ci, methods=config.methods),
    )
