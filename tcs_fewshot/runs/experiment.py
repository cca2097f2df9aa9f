"""One evaluation run from a config: what ``tcs-fewshot run`` calls, importable as is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.benchmarks import BenchmarkData, load_benchmark, open_and_load
from tcs_fewshot.data.images import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS, ImageOptions
from tcs_fewshot.data.digits import load_digits_benchmark
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.taskfile import load_tasks
from tcs_fewshot.defaults import DEFAULT_METHODS, DEFAULT_STUDENT, PROBE_METHODS
from tcs_fewshot.data.tasks import TaskSet, TaskSpec, sample_tasks
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.evaluator import evaluate
from tcs_fewshot.runs.executors import Executor
from tcs_fewshot.runs.method_setup import (
    UNRELATED_ITEMS,
    StudentOptions,
    build_methods,
)
from tcs_fewshot.stats.class_ci import classes_by_checksum, with_class_ci
from tcs_fewshot.stats.accuracy import paired, summary
from tcs_fewshot.methods.registry import entry, is_headline, method_kind
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.data.features import FeatureSet, load_features_file
from tcs_fewshot.models.pixels import pixel_features
from tcs_fewshot.models.teachers import load_teacher, resolve_device

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
        device: Where the teacher embeds images: ``auto`` (cuda when torch sees a GPU, else
            cpu), ``cpu`` or ``cuda``. Not part of the run's identity: cached features are
            reused whichever device filled them, so a run resumes on another device.
        protocol, split, ways, shots, queries, seed: the :class:`TaskSpec`.
        tasks: Number of tasks (episodic) or repeats of the shot draw (pFSL).
        methods: Registry names of the methods, in report order.
        tasks_file: Evaluate on the tasks of this file instead of sampling (spec taken from it).
        ci: ``normal`` or ``t`` (see :mod:`tcs_fewshot.stats.accuracy`).
        reference: Method that paired differences are taken against (default: the first).
        student: Architecture the student methods (``tcs``, ``kd``, ``fitnets``, ``finetune``, ...)
            start from (default the ImageNet MobileNetV2, at 64 px: 12x cheaper than the teacher).
        student_init: ``pretrained`` (default for torchvision/timm students), ``scratch`` (default
            for conv4/resnet12, seeded by ``seed``) or ``checkpoint`` (with ``student_checkpoint``).
        student_weights: A local weights file for a pretrained student.
        student_checkpoint: A checkpoint from ``tcs-fewshot distill``.
        student_image_size: Student input side in px (default: the checkpoint's, else 64 for the
            default student and 84 for the others).
        student_views: Augmented views per support image for student methods (one cached teacher pass each).
        training: Per-task training settings (``TrainingSettings`` fields: steps, learning_rate, train_layers, ...).
        method_options: ``{method: {option: value}}``, e.g. ``{"tcs": {"components": 16}}``.
        distill: ``DistillSettings`` fields for the students that ``<method>@<objective>``
            methods use (``student-ncm@tcs``: the run's student distilled with TCS on the base
            split, made on first use and cached).
        transductive: TCS also fits its coordinates on, and mimics the teacher on, the unlabelled queries.
        background: Colour transparent pixels of image files are composited on (a name, ``#rrggbb``
            or ``r,g,b``); recorded, with the decoder version, under ``config.data.images``.
        max_image_pixels: Largest image decoded whole; larger files are refused in one line (JPEGs
            are decoded reduced first). Decides only which files load, so not part of the identity.
    """

    benchmark: str = "emoji"
    features: str | None = None
    root: str | None = None
    scheme: str | None = None
    split_file: str | None = None
    teacher: str = "torchvision:mobilenet_v2"
    teacher_weights: str | None = None
    device: str = "auto"
    protocol: str = "episodic"
    split: str = "test"
    ways: int = 5
    shots: int = 5
    queries: int = 15
    tasks: int = 600
    seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS
    tasks_file: str | None = None
    ci: str = "normal"
    reference: str | None = None
    student: str = DEFAULT_STUDENT
    student_init: str | None = None
    student_weights: str | None = None
    student_checkpoint: str | None = None
    student_image_size: int | None = None
    student_views: int = 4
    training: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    distill: dict = field(default_factory=dict)
    transductive: bool = False
    background: str = DEFAULT_BACKGROUND
    max_image_pixels: int = DEFAULT_MAX_PIXELS

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

    @property
    def gap_lines(self) -> list[str]:
        """For each headline (TCS) method of the registry: the share of the student-ncm-to-ncm gap it closed, one sentence."""
        from tcs_fewshot.stats.accuracy import gap_line

        names = [name for name in dict.fromkeys(self.records["method"]) if is_headline(name)]
        return [line for line in (gap_line(self.records, name) for name in names) if line]


def image_options(config: RunConfig) -> ImageOptions:
    """How the run decodes image files: ``config.background`` and ``config.max_image_pixels``, checked."""
    return ImageOptions.parse(config.background, config.max_image_pixels)


def _benchmark_data(config: RunConfig) -> BenchmarkData:
    return load_benchmark(config.benchmark, config.root, config.scheme, config.split_file, image_options(config))


def load_index(config: RunConfig) -> LabelIndex:
    """The label index of the data ``config`` names (what tasks are sampled from)."""
    if config.features:
        return load_features_file(config.features)[0]
    if config.benchmark == "digits":
        return load_digits_benchmark()[0]
    return _benchmark_data(config).index_for(config.protocol)


def load_inputs(config: RunConfig, progress: bool = False) -> tuple[LabelIndex, FeatureSet, dict]:
    """The label index, the features the probes run on, and where the data came from.

    The third item (benchmark manifest checksum, build checksum of an embedded benchmark,
    pretraining-overlap notes) is recorded in the run manifest.
    """
    return load_run_inputs(config, progress).probe_inputs


@dataclass
class RunInputs:
    """What a run reads: the probes' inputs, and the benchmark and teacher student methods also need."""

    probe_inputs: tuple[LabelIndex, FeatureSet, dict]
    data: BenchmarkData | None = None
    teacher: object | None = None
    cache: FeatureCache | None = None
    data_check: dict | None = None  # what run checked before loading, and the split counts


def load_run_inputs(config: RunConfig, progress: bool = False, check: bool = False) -> RunInputs:
    """:func:`load_inputs`, keeping the loaded benchmark, teacher and cache for student methods.

    With ``check``, a benchmark is checked first (:func:`usable_check`: layout and counts
    against its manifest) and unusable data is refused in one line before anything is loaded.
    """
    if config.features:
        index, features = load_features_file(config.features)
        return RunInputs((index, features, {"features_file_sha256": file_sha256(config.features)}))
    if config.benchmark == "digits":
        return RunInputs((*load_digits_benchmark(), {"benchmark": "digits"}))
    # One adapter checks and loads, so what both read (emoji's catalog and styles) is read once.
    data, checked = open_and_load(config.benchmark, config.root, config.scheme, config.split_file, image_options(config),
                                  check=check)
    checked["counts"] = data.index.split_counts()
    build = data.manifest.get("build", {})
    provenance = {
        "benchmark": config.benchmark,
        "scheme": data.scheme,
        "manifest_checksum": data.manifest.get("checksum"),
        "build_checksum": build.get("checksum") or build.get("images_sha256"),
        "pretraining_overlap": data.manifest.get("pretraining_overlap"),
    }
    # Features stay keyed on the benchmark's own index; only the tasks see the pFSL image split.
    index = data.index_for(config.protocol)
    if index is not data.index:  # recorded only then, so episodic runs keep their identity
        provenance["image_split"] = data.manifest.get("image_split")
    if data.image_record is not None:  # image files: how they were decoded (absent for embedded builds)
        provenance["images"] = data.image_record
    if config.teacher == "pixels":
        return RunInputs((index, pixel_features(data), {**provenance, "embedding": "raw pixels, 16x16 RGB"}), data,
                         data_check=checked)
    device = resolve_device(config.device)  # the cache extracts on the model's device
    teacher = load_teacher(config.teacher, config.teacher_weights, device=device)
    cache = FeatureCache()
    features = cache.feature_set(teacher, data, progress=progress)
    embedding = {"teacher": teacher.name, "identity": teacher.identity, "pretraining": teacher.pretraining,
                 "config": teacher.config}
    return RunInputs((index, features, {**provenance, "embedding": embedding}), data, teacher, cache, checked)


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


# Settings that only student methods read: recorded per student method, not in the run's identity,
# so that adding a method to a run evaluates just that method on the same tasks.
STUDENT_KEYS = ("student", "student_init", "student_weights", "student_checkpoint", "student_image_size",
                "student_views", "training", "method_options", "distill", "transductive")


# Facts about a distilled student that belong to one session: a resumed run loads from the
# cache the student its first session trained, and a data home can move.
SESSION_ONLY = ("cached", "path")


def per_method_settings(config: RunConfig, kinds: dict[str, str], built: dict[str, Any]) -> dict[str, Any]:
    """name -> what that method's numbers depend on beyond the run's tasks and data (checked per method)."""
    raw = asdict(config)
    settings: dict[str, Any] = {}
    for name in config.methods:
        own: dict[str, Any] = {"kind": kinds[name]}
        if name in built:
            own["described"] = built[name]
        if kinds[name] == "student":
            objective = name.partition("@")[2]
            own["student"] = built.get(f"student@{objective}" if objective else "student")
            if objective:  # whether the cache served the distilled student, and where it lies, decide no number
                own["student"] = {k: v for k, v in own["student"].items() if k not in SESSION_ONLY}
            # The base-split distillation decides only the numbers of <method>@<objective>.
            skipped = ("method_options", "transductive") + (() if objective else ("distill",))
            own["config"] = {key: raw[key] for key in STUDENT_KEYS if key not in skipped}
            own["options"] = student_options(config).options.get(name, {})
        settings[name] = own
    return settings


def silent_fallbacks(config: RunConfig, kinds: dict[str, str], mean: np.ndarray | None,
                     data: BenchmarkData | None) -> list[str]:
    """One line per default the run chose from the data rather than from its settings."""
    fallbacks = []
    for name in config.methods:
        if entry(name).uses_base_mean and mean is None:
            why = "pFSL evaluates every class" if config.protocol == "pfsl" else "no base split disjoint from the evaluated classes"
            fallbacks.append(f"{name} centres on each task's support mean ({why})")
    return fallbacks


def pfsl_methods(config: RunConfig) -> tuple[RunConfig, tuple[str, ...]]:
    """``(config, dropped)``: under pFSL the default methods lose ``<method>@<objective>`` (dropped).

    pFSL evaluates every class, so also the base classes such a student is distilled on; the
    other defaults run. Methods a user named are left as they are (and refused if distilled).
    """
    if config.methods != DEFAULT_METHODS or config.protocol != "pfsl":
        return config, ()
    dropped = tuple(name for name in config.methods if "@" in name)
    return replace(config, methods=tuple(name for name in config.methods if "@" not in name)), dropped


def run_experiment(config: RunConfig, run_dir: str | Path | None = None, progress: bool = False,
                   fail_fast: bool = False, executor: Executor | None = None, skip_check: bool = False) -> RunResult:
    """Sample (or load) the tasks, evaluate the methods into ``run_dir`` and summarise.

    With ``config.tasks_file`` the task shape, seed and count come from the file. Re-running
    with the same config and ``run_dir`` resumes: finished tasks are kept. ``executor`` (default
    this process; see :mod:`tcs_fewshot.runs.executors`) is not part of the run's identity.
    A benchmark is checked before anything is computed and refused when unusable, unless
    ``skip_check``; the check (or that it was skipped) and the split counts are recorded in this
    session's entry of the manifest (``data_check``), not in the run's identity.
    """
    if not config.methods:
        raise TcsFewshotError("no methods given; pass --methods, e.g. ncm,simpleshot,logreg")
    if config.methods == DEFAULT_METHODS and (config.features or config.benchmark == "digits" or config.teacher == "pixels"):
        # Without images and a teacher only the probes can run: they are then the default.
        config = replace(config, methods=PROBE_METHODS)
    config, dropped = pfsl_methods(config)
    if config.reference is not None and config.reference not in config.methods:
        raise TcsFewshotError(f"--reference '{config.reference}' is not among --methods {','.join(config.methods)}")
    kinds = {name: method_kind(name) for name in config.methods}  # unknown names fail before any loading
    loaded = load_run_inputs(config, progress, check=not skip_check)
    index, feature_set, provenance = loaded.probe_inputs
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
    methods, inputs, method_settings = build_methods(
        config.methods, feature_set, mean, data=loaded.data, teacher=loaded.teacher, cache=loaded.cache,
        student=student_options(config), seed=config.seed, unrelated=lambda: unrelated_features(config, loaded),
        evaluated_split=spec.split)
    run_dir = Path(run_dir) if run_dir is not None else config.default_run_dir()
    # The tasks are identified by their checksum (in the manifest), never by a file's path.
    # The background enters the identity through config.data.images, where it decides pixels.
    ignored = {"methods", "ci", "reference", "tasks_file", "device", "background", "max_image_pixels", *STUDENT_KEYS}
    recorded = {k: v for k, v in asdict(config).items() if k not in ignored}
    per_method = per_method_settings(config, kinds, method_settings)
    recorded["data_fingerprint"] = index.fingerprint
    recorded["data"] = provenance
    fallbacks = silent_fallbacks(config, kinds, mean, loaded.data)
    if dropped:
        fallbacks.append(f"the default methods without {', '.join(dropped)} (distilled on base classes, which pFSL evaluates)")
    if fallbacks:  # absent when none, so runs without one keep their identity
        recorded["fallbacks"] = fallbacks
    session = {"data_check": loaded.data_check} if loaded.data_check is not None else None
    records = evaluate(task_set, methods, inputs, run_dir=run_dir, config=recorded, method_settings=per_method,
                       fail_fast=fail_fast, progress=progress, executor=executor, session=session)
    reference = config.reference or config.methods[0]
    classes = classes_by_checksum(task_set)
    return RunResult(
        run_dir=run_dir,
        task_set=task_set,
        records=records,
        summary=with_class_ci(summary(records, ci=config.ci, methods=config.methods), records, classes),
        paired=with_class_ci(paired(records, reference=reference, ci=config.ci, methods=config.methods), records,
                             classes, kind="paired"),
    )


def student_options(config: RunConfig) -> StudentOptions:
    """The :class:`StudentOptions` of a run config (``transductive`` reaches every method whose entry accepts it)."""
    options = {name: dict(values) for name, values in config.method_options.items()}
    if config.transductive:
        for name in config.methods:
            if entry(name).transductive:
                options.setdefault(name, {})["transductive"] = True
    return StudentOptions(config.student, config.student_checkpoint, config.student_image_size, config.student_views,
                          dict(config.training), options, init=config.student_init, weights=config.student_weights,
                          distill=dict(config.distill), device=resolve_device(config.device))


def unrelated_features(config: RunConfig, loaded: RunInputs) -> np.ndarray:
    """``(UNRELATED_ITEMS, D)`` teacher features of another embedded benchmark (glyphs, or emoji for glyphs)."""
    other = "emoji" if config.benchmark == "glyphs" else "glyphs"
    data = load_benchmark(other)
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(data.index.item_ids, size=min(UNRELATED_ITEMS, len(data.index.item_ids)), replace=False))
    return loaded.cache.features(loaded.teacher, data, ids, views=[0])[:, 0]
