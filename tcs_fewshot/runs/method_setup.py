"""Turn a run's method names into method objects and the inputs each consumes.

What a method is handed follows its registry entry's ``consumes``: the teacher's cached
features, raw pixels, or item ids; methods consuming item ids share one
:class:`StudentContext` (so the frozen student and the teacher's views are computed once per
image view for all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.defaults import DEFAULT_STUDENT
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.registry import (
    FEATURES,
    IMAGES,
    PIXELS,
    MethodInputs,
    build_method,
    entry,
    training_settings,
)
from tcs_fewshot.methods.student_training import check_device
from tcs_fewshot.data.features import FeatureSet

PIXEL_SIDE = 16  # pixel-ncm's input: the 16x16x3 image of pixel_features' default
UNRELATED_ITEMS = 512  # images of the other benchmark that fit the tcs-unrelated basis
DEPLOYED_NETWORK = {FEATURES: "teacher", PIXELS: "pixels", IMAGES: "student"}  # what makes predictions at inference


@dataclass(frozen=True)
class StudentOptions:
    """The student every student method of a run starts from, and how they train.

    Attributes:
        spec: Student architecture (``torchvision:mobilenet_v2`` by default; ``timm:<name>``,
            ``conv4``, ``conv4-<channels>``, ``resnet12``).
        checkpoint: A file from ``tcs-fewshot distill`` (or ``save_student``).
        image_size: Input side in px (default: the checkpoint's, else the student's own default).
        views: Augmented views per support image (each one cached teacher pass).
        training: ``TrainingSettings`` fields (steps, head_lr, backbone_lr, train_layers, ...).
        options: ``{method name: {option: value}}``, e.g. ``{"tcs": {"components": 16}}``.
        init: ``pretrained``, ``scratch`` or ``checkpoint`` (default: see :func:`build_student`).
        weights: A local weights file for a pretrained student.
        distill: ``DistillSettings`` fields of the base-split distillation behind ``<method>@<objective>``.
        device: Where students train (``cpu`` or ``cuda``).
    """

    spec: str = DEFAULT_STUDENT
    checkpoint: str | None = None
    image_size: int | None = None
    views: int = 4
    training: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    init: str | None = None
    weights: str | None = None
    distill: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def build_methods(names: Sequence[str], features: FeatureSet, base_mean: np.ndarray | None, *, data: Any = None,
                  teacher: Any = None, cache: Any = None, student: StudentOptions | None = None, seed: int = 0,
                  unrelated: Callable[[], np.ndarray] | None = None, evaluated_split: str = "test") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(methods, inputs, settings)`` for :func:`evaluate`: objects, ``{name: ids -> inputs}``, manifest record.

    Each method is built by its registry entry from one :class:`MethodInputs`, and gets the
    inputs its entry says it consumes. ``data``/``teacher``/``cache`` are needed only by pixel
    and student methods; ``unrelated`` gives the teacher features of unrelated images for an
    entry that fits a basis on them (called only then). ``evaluated_split`` is the split the
    tasks come from (``all`` under pFSL), which a ``<method>@<objective>`` student must not have
    been distilled or validated on.
    """
    entries = {name: entry(name) for name in names}
    kinds = {name: value.consumes for name, value in entries.items()}
    methods: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    needs_images = [name for name, kind in kinds.items() if kind != FEATURES]
    if needs_images and (data is None or (teacher is None and IMAGES in kinds.values())):
        raise TcsFewshotError(f"method '{needs_images[0]}' needs benchmark images and a teacher; run it on a benchmark, not --features")
    context = None
    student = student or StudentOptions()
    unknown = sorted(set(student.options) - {name for name, kind in kinds.items() if kind == IMAGES})
    if unknown:
        raise TcsFewshotError(f"options given for '{unknown[0]}', which is not a student method of this run")
    shared = MethodInputs(base_mean=base_mean, unrelated_features=unrelated)
    contexts: dict[str | None, Any] = {}  # distillation objective (None: the student as built) -> context
    if IMAGES in kinds.values():
        context = student_context(data, teacher, cache, student, seed)
        contexts[None] = context
        shared = replace(shared, training=training_settings(dict(student.training)))
        settings["student"] = {**context.describe(), "training": dict(student.training)}
        for objective in dict.fromkeys(name.partition("@")[2] for name in names if "@" in name):
            if evaluated_split == "all":
                raise TcsFewshotError(f"'{objective}'-distilled students train on base classes, which pFSL evaluates; "
                                      "run <method>@<objective> methods under the episodic protocol")
            contexts[objective], settings[f"student@{objective}"] = distilled_context(
                data, teacher, cache, student, seed, objective, evaluated_split)
    # What each kind of method is handed, made once per run (one function per student context,
    # so the evaluator builds each task's inputs once for all methods sharing them).
    consumed: dict[tuple[str, str | None], Any] = {}
    for name, kind in kinds.items():
        objective = (name.partition("@")[2] or None) if kind == IMAGES else None
        if (kind, objective) not in consumed:
            consumed[(kind, objective)] = method_inputs(kind, features, data, contexts.get(objective))
        own = replace(shared, options=dict(student.options.get(name, {})))
        methods[name], inputs[name] = build_method(name, own), consumed[(kind, objective)]
        if kind == IMAGES:
            check_device(own.training, student.device)  # refused now, not as a failure on every task
            settings[name] = methods[name].describe()
    costs: dict[str, dict[str, Any]] = {}
    for name, kind in kinds.items():
        network = DEPLOYED_NETWORK[kind]
        if network not in costs:
            costs[network] = deployed_cost(network, teacher, context.student if context else None, data)
        settings.setdefault(name, {})["deployed"] = costs[network]
    return methods, inputs, settings


def method_inputs(kind: str, features: FeatureSet, data: Any, context: Any = None) -> Any:
    """What the evaluator hands methods that consume ``kind``: teacher features, raw pixels, or
    ``ids -> StudentItems`` of ``context`` (the ids with the images and teacher views)."""
    if kind == FEATURES:
        return features
    if kind == PIXELS:
        from tcs_fewshot.models.pixels import pixel_features

        return pixel_features(data)
    return context.items


def deployed_cost(network: str, teacher: Any, student: Any, data: Any) -> dict[str, Any]:
    """What makes a method's predictions at inference: ``network``, ``flops_per_image``, ``parameters``, ``image_size`` (px).

    The teacher is measured at the crop size its own preprocessing produces, the student at its
    image size. ``pixels`` (pixel-ncm) runs no network: 0 FLOPs and 0 parameters (the NCM on
    the flattened 16x16x3 image is not counted, as no method's classifier head is). ``None`` where the
    network is not loaded (a ``--features`` run has no teacher model).
    """
    from tcs_fewshot.models.students import count_parameters, flops_per_image

    if network == "pixels":
        return {"network": "pixels", "flops_per_image": 0, "parameters": 0, "image_size": PIXEL_SIDE}
    if network == "student":
        return {"network": "student", "flops_per_image": flops_per_image(student), "parameters": count_parameters(student.model),
                "image_size": student.image_size}
    if teacher is None or getattr(teacher, "model", None) is None:
        return {"network": "teacher", "flops_per_image": None, "parameters": None, "image_size": None}
    from PIL import Image

    crop = int(teacher.transform(Image.new("RGB", (256, 256))).shape[-1])
    return {"network": "teacher", "flops_per_image": flops_per_image(teacher.model, crop),
            "parameters": count_parameters(teacher.model), "image_size": crop}


def initial_student(data: Any, options: StudentOptions, seed: int) -> Any:
    """The student ``options`` describe (a scratch one seeded by ``seed``), on the CPU."""
    import torch

    from tcs_fewshot.models.students import build_student

    checkpoint = Path(options.checkpoint) if options.checkpoint else None
    if checkpoint is not None and not checkpoint.is_file():
        raise TcsFewshotError(f"student checkpoint '{checkpoint}' does not exist; make one with 'tcs-fewshot distill'")
    torch.manual_seed(seed)
    return build_student(options.spec, options.init, checkpoint, options.image_size, options.weights)


def student_context(data: Any, teacher: Any, cache: Any, options: StudentOptions, seed: int) -> Any:
    """The shared context of the run's student methods."""
    from tcs_fewshot.methods.student_context import StudentContext

    return StudentContext(data, teacher, cache, initial_student(data, options, seed), views=options.views, device=options.device)


def distilled_context(data: Any, teacher: Any, cache: Any, options: StudentOptions, seed: int,
                      objective: str, evaluated_split: str = "test") -> tuple[Any, dict[str, Any]]:
    """The context of ``<method>@<objective>``: the run's student distilled on the base split (cached), and its record."""
    from tcs_fewshot.runs.distilled import distilled_student, settings_for
    from tcs_fewshot.methods.student_context import StudentContext

    settings = settings_for(objective, dict(options.distill), options.device)
    student, record = distilled_student(data, teacher, cache, lambda: initial_student(data, options, seed), settings,
                                         evaluated_split=evaluated_split)
    context = StudentContext(data, teacher, cache, student, views=options.views, device=options.device)
    return context, {**record, "settings": student.config.get("distilled", {})}
