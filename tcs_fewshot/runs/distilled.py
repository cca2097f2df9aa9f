"""Students distilled on a benchmark's base split, made on first use and cached like teacher features.

A run's method ``<method>@<objective>`` (``student-ncm@tcs``, ``tcs@kd``, ...) evaluates
``<method>`` on the run's student after :func:`distill` with ``<objective>`` on the base split.
The distilled student is a pure function of (benchmark data, teacher, initial student, distill
settings, seed), so it is stored under ``$TCS_FEWSHOT_DATA/students/<key>.pt`` and every later
run with the same inputs loads it instead of training again::

    student = distilled_student(data, teacher, cache, initial, DistillSettings(objective="tcs"))
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tcs_fewshot.data.benchmarks.base import BenchmarkData, data_home
from tcs_fewshot.data.images import ImageOptions
from tcs_fewshot.defaults import DEFAULT_STUDENT, DEFAULT_TEACHER
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.distill import DistillResult, DistillSettings, distill
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.students import Student, build_student, save_student
from tcs_fewshot.models.teacher_base import Teacher

FORMAT = 1  # bump when the distillation loop changes what a key's student would be

# Settings only some objectives read (the rest of DistillSettings applies to all of them).
READ_BY = {"online": {"kd"}, "temperature": {"kd"}, "teacher_scale": {"kd"},
           "target_views": {"tcs", "kd", "fitnets"}, "mimic_weight": {"tcs", "kd", "fitnets"},
           "ce_weight": {"tcs", "kd", "fitnets"}, "head_init": {"tcs", "fitnets"},
           "components": {"tcs"}, "scale": {"tcs"}, "basis": {"tcs"}, "selection": {"tcs"}}
PRUNING = ("prune_start", "prune_fraction", "min_components")  # read only when selection is on


def effective_settings(settings: DistillSettings) -> DistillSettings:
    """``settings`` with every field its objective does not read reset to the default.

    Two runs whose settings differ only there train the same student, so they share one key:
    ``ce`` with ``ce_weight=0`` (cross-entropy always weighs 1 there) is the ``ce`` student.
    """
    defaults = DistillSettings()
    unread = [name for name, objectives in READ_BY.items() if settings.objective not in objectives]
    if not settings.selection:
        unread += PRUNING
    return replace(settings, **{name: getattr(defaults, name) for name in unread})


def distilled_key(data: BenchmarkData, teacher: Teacher, initial: Student, settings: DistillSettings) -> str:
    """sha256 hex over everything that decides the distilled student's weights (and nothing else)."""
    student = {key: initial.config.get(key) for key in ("spec", "init", "weights_sha256", "checkpoint_sha256", "image_size")}
    record = {"format": FORMAT, "dataset": data.index.fingerprint, "build": getattr(data, "checksum", None),
              "teacher": teacher.identity, "student": student, "settings": asdict(effective_settings(settings))}
    if data.image_record is not None:  # how image files were decoded (background, ...); absent for builds
        record["images"] = data.image_record
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def distilled_student(data: BenchmarkData, teacher: Teacher, cache: FeatureCache, initial: Callable[[], Student],
                      settings: DistillSettings, progress: Callable[[int, int, dict], None] | None = None,
                      evaluated_split: str | None = "test", root: Path | None = None) -> tuple[Student, dict[str, Any]]:
    """The student ``initial()`` distilled with ``settings``: loaded if cached, else trained and cached.

    ``initial`` builds a fresh (seeded) initial student; it is called once, also on a cache hit,
    for the key. Returns ``(student, record)``, the record saying whether the cache served it.
    """
    fresh = initial()
    key = distilled_key(data, teacher, fresh, settings)
    path = (root or data_home() / "students") / f"{fresh.name.replace(':', '-')}-{settings.objective}-{key[:16]}.pt"
    record = {"objective": settings.objective, "key": key, "path": str(path)}
    if path.is_file():
        student = build_student(fresh.name, init="checkpoint", checkpoint=path)
        if student.config.get("distilled_key") == key:
            return student, {**record, "cached": True}
    distill(data, teacher, cache, fresh, settings, progress, evaluated_split)
    fresh.config = {**fresh.config, "distilled_key": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_student(fresh, path)  # atomic: a killed run leaves no half-written student
    return build_student(fresh.name, init="checkpoint", checkpoint=path), {**record, "cached": False}


def settings_for(objective: str, options: dict[str, Any] | None = None, device: str = "cpu") -> DistillSettings:
    """The run's distillation settings for ``objective``: ``options`` (the config's ``distill`` table) over the defaults."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(asdict(DistillSettings())))
    if unknown:
        raise TcsFewshotError(f"unknown distill setting '{unknown[0]}'; valid: {', '.join(sorted(asdict(DistillSettings())))}")
    return replace(DistillSettings(**{**options, "objective": objective}), device=device)


def distill_benchmark(benchmark: str, out: str | os.PathLike, student_spec: str = DEFAULT_STUDENT, *, root: str | None = None,
                      scheme: str | None = None, split_file: str | None = None, teacher_spec: str = DEFAULT_TEACHER,
                      teacher_weights: str | None = None, init: str | None = None, student_weights: str | None = None,
                      image_size: int | None = None, settings: DistillSettings | None = None,
                      progress: Callable[[int, int, dict], None] | None = None,
                      images: ImageOptions | None = None) -> DistillResult:
    """What ``tcs-fewshot distill`` does: load the benchmark and teacher, distil the (seeded) student, save it to ``out``.

    The teacher runs on ``settings.device`` too. Under torchrun every process trains and rank 0 writes.
    ``images`` decodes the benchmark's image files (background, size limit; default :class:`ImageOptions`).
    """
    import torch

    from tcs_fewshot.data.benchmarks import load_benchmark
    from tcs_fewshot.methods.distributed import init_from_environment
    from tcs_fewshot.models.teachers import load_teacher

    settings = settings or DistillSettings()
    out = Path(out)
    if out.suffix != ".pt":
        raise TcsFewshotError(f"--out '{out}' should be a .pt file (a student checkpoint)")
    data = load_benchmark(benchmark, root, scheme, split_file, images)
    teacher = load_teacher(teacher_spec, teacher_weights, device=settings.device)
    torch.manual_seed(settings.seed)
    student = build_student(student_spec, init, None, image_size, student_weights)
    result = distill(data, teacher, FeatureCache(), student, settings, progress)
    if init_from_environment()[0] == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_student(student, out)
    return result
