"""The one table of every method ``tcs-fewshot run --methods`` knows (mdistiller-style: one flat registry).

Each :class:`MethodEntry` declares what the method consumes and builds the method from one
:class:`MethodInputs`:

* ``FEATURES``: the teacher's cached features of each image (the probes);
* ``PIXELS``: raw 16x16 RGB pixels (the sanity baseline: does the teacher know anything here?);
* ``IMAGES``: :class:`StudentItems`, item ids with the run's :class:`StudentContext` that reads
  their images (student views) and cached teacher views; the method fine-tunes the student per task.

A new probe is one file (a class with ``fit``/``predict``, nothing to subclass) plus one line
here, e.g. ``"median-ncm": probe(MedianNCM, "nearest class median")``.

Student methods take keyword options (``TCS(components=16)``); a run passes them from its
config's ``method_options``, e.g. ``{"tcs": {"components": 16}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.distill_objectives import OBJECTIVES
from tcs_fewshot.methods.finetune import FineTune, StudentNCM
from tcs_fewshot.methods.kd import LSHL2, FitNets, LogitKD
from tcs_fewshot.methods.probes import LogisticRegressionProbe, NearestClassMean, SimpleShot
from tcs_fewshot.methods.student_training import StudentMethod, TrainingSettings
from tcs_fewshot.methods.tcs import TCS

FEATURES = "features"  # the teacher's cached features
PIXELS = "pixels"  # raw 16x16 RGB pixels
IMAGES = "student"  # StudentItems: images with the student and teacher views ("student": the name run manifests record)
HEADLINE_OBJECTIVE = "tcs"  # students distilled with it are scored as TCS rows (the run states their gap closed)


@dataclass(frozen=True)
class MethodInputs:
    """Everything a registry entry may build its method from (the run fills what its methods consume).

    Attributes:
        base_mean: ``(dim,)`` mean teacher feature of a base split disjoint from the evaluated
            classes, or ``None`` (SimpleShot then centres on the support mean).
        training: The per-task training loop's settings (``IMAGES`` methods).
        options: This method's keyword options (``method_options`` of the run config).
        unrelated_features: Called only by an entry that needs them: ``(M, D)`` teacher features
            of images unrelated to the benchmark (the ``tcs-unrelated`` ablation's basis).
    """

    base_mean: np.ndarray | None = None
    training: TrainingSettings | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    unrelated_features: Callable[[], np.ndarray] | None = None

    def unrelated(self) -> np.ndarray:
        if self.unrelated_features is None:
            raise TcsFewshotError("this method needs teacher features of unrelated images (a run builds them); "
                                  "pass MethodInputs(unrelated_features=...)")
        return self.unrelated_features()


@dataclass(frozen=True)
class MethodEntry:
    """A registered method.

    Attributes:
        consumes: ``FEATURES``, ``PIXELS`` or ``IMAGES`` (what the evaluator hands ``fit``/``predict``).
        build: ``MethodInputs -> method`` (any object with ``fit``/``predict``).
        description: One line, with its reference.
        transductive: ``fit`` accepts ``unlabelled=`` (the query inputs) when the run asks for it.
        uses_base_mean: Reads ``inputs.base_mean`` (a run notes when it falls back to none).
        headline: A TCS row: the run summary states the student-to-teacher gap it closed.
    """

    consumes: str
    build: Callable[[MethodInputs], Any]
    description: str
    transductive: bool = False
    uses_base_mean: bool = False
    headline: bool = False


def probe(cls: type, description: str) -> MethodEntry:
    """An entry for a probe on teacher features whose class takes no arguments."""
    return MethodEntry(FEATURES, lambda inputs: cls(), description)


def student(cls: type, description: str, *, unrelated_basis: bool = False, transductive: bool = False,
            headline: bool = False, **fixed: Any) -> MethodEntry:
    """An entry for a student method ``cls(training, **options, **fixed)``.

    ``unrelated_basis``: the coordinate basis is fitted on ``inputs.unrelated()`` (``pca_features``).
    """

    def build(inputs: MethodInputs) -> Any:
        extra = {"pca_features": inputs.unrelated()} if unrelated_basis else {}
        return cls(inputs.training, **{**inputs.options, **fixed, **extra})

    return MethodEntry(IMAGES, build, description, transductive=transductive, headline=headline)


def tcs(description: str, **fixed: Any) -> MethodEntry:
    """An entry for TCS or one of its ablations: transductive on request, and a headline row."""
    return student(TCS, description, transductive=True, headline=True, **fixed)


METHODS: dict[str, MethodEntry] = {
    "ncm": probe(NearestClassMean, "nearest class mean, ProtoNet at test time (Snell et al. 2017)"),
    "simpleshot": MethodEntry(FEATURES, lambda inputs: SimpleShot(inputs.base_mean),
                              "SimpleShot CL2N: base-mean centring + L2 + NCM (Wang et al. 2019)", uses_base_mean=True),
    "logreg": probe(LogisticRegressionProbe, "logistic regression on L2-normalised features (Tian et al. 2020, RFS)"),
    "pixel-ncm": MethodEntry(PIXELS, lambda inputs: NearestClassMean(), "nearest class mean on raw 16x16 pixels (sanity baseline)"),
    "student-ncm": student(StudentNCM, "nearest class mean on the student's features, no adaptation"),
    "finetune": student(FineTune, "cross-entropy fine-tuning of the student, no teacher"),
    "kd": student(LogitKD, "logit KD from the teacher's support-set probe, cached views (Hinton et al. 2015)"),
    "kd-online": student(LogitKD, "logit KD running the teacher on every training batch, as usually implemented (Hinton et al. 2015)",
                         online=True),
    "fitnets": student(FitNets, "feature KD: linear regressor to the raw teacher features, MSE (Romero et al. 2015)"),
    "lsh-l2": student(LSHL2, "L2 + LSH feature mimicking (Wang, Ge & Wu 2021)"),
    "tcs": tcs("tailored coordinate system distillation (Zhou, Zhu & Wu, AAAI 2025)"),
    "tcs-elsh": tcs("TCS with the efficient LSH mimicking loss (eLSH)", mimic_loss="elsh"),
    "tcs-random": tcs("TCS ablation: a random orthogonal basis", basis="random-orthogonal"),
    "tcs-unrelated": tcs("TCS ablation: PCA fitted on another benchmark's images", unrelated_basis=True),
    "tcs-noselect": tcs("TCS ablation: no iterative feature selection", selection=False),
}


def entry(name: str) -> MethodEntry:
    """The entry of ``name``; ``<student method>@<objective>`` is that student method's entry.

    ``<student method>@<objective>`` (e.g. ``student-ncm@tcs``) is the student method on the
    run's student distilled on the base split with that objective (see :mod:`distill`).
    Unknown names are a one-line error.
    """
    base, at, objective = name.partition("@")
    if base not in METHODS:
        raise TcsFewshotError(f"unknown method '{name}'; choose from: {', '.join(all_method_names())}")
    if at:
        if objective not in OBJECTIVES:
            raise TcsFewshotError(f"unknown distillation objective '{objective}' in '{name}'; choose one of {', '.join(OBJECTIVES)}")
        if METHODS[base].consumes != IMAGES:
            raise TcsFewshotError(f"'{name}': only student methods run on a distilled student; '{base}' is not one "
                                  f"(choose from {', '.join(method_names(IMAGES))})")
        if objective == HEADLINE_OBJECTIVE:  # a student distilled with TCS is a TCS row, whatever method scores it
            return replace(METHODS[base], headline=True)
    return METHODS[base]


def is_headline(name: str) -> bool:
    """Whether ``name`` is a TCS row whose closed gap a run summary states (``False`` for names not registered)."""
    try:
        return entry(name).headline
    except TcsFewshotError:
        return False


def method_kind(name: str) -> str:
    """What ``name`` consumes: ``features``, ``pixels`` or ``student`` (``IMAGES``); a one-line error if unknown."""
    return entry(name).consumes


def all_method_names() -> list[str]:
    return list(METHODS)


def method_names(consumes: str) -> list[str]:
    """The registered methods that consume ``consumes`` (``FEATURES``, ``PIXELS`` or ``IMAGES``)."""
    return [name for name, value in METHODS.items() if value.consumes == consumes]


def descriptions() -> dict[str, str]:
    """name -> one-line description, for ``tcs-fewshot methods`` and the README."""
    return {name: value.description for name, value in METHODS.items()}


def build_method(name: str, inputs: MethodInputs) -> Any:
    """A fresh method by registry name; a bad option (name or value) is a one-line error naming it, before any task."""
    try:
        method = entry(name).build(inputs)
    except TypeError as error:
        raise TcsFewshotError(f"bad option for method '{name}': {error}") from None
    if isinstance(method, StudentMethod):
        method.validate()  # fit validates too; a run refuses bad values now, not as a failure per task
    return method


def build_probe(name: str, base_mean: np.ndarray | None = None) -> Any:
    """A fresh probe on teacher features by name; ``base_mean`` is the ``(dim,)`` base-split mean for SimpleShot."""
    if name not in METHODS or METHODS[name].consumes != FEATURES:
        raise TcsFewshotError(f"unknown method '{name}'; choose from: {', '.join(method_names(FEATURES))}")
    return METHODS[name].build(MethodInputs(base_mean=base_mean))


def training_settings(options: dict[str, Any]) -> TrainingSettings:
    """TrainingSettings from a dict, refusing unknown keys in one line."""
    known = {item.name for item in fields(TrainingSettings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TcsFewshotError(f"unknown training setting '{unknown[0]}'; valid: {', '.join(sorted(known))}")
    return TrainingSettings(**options)
