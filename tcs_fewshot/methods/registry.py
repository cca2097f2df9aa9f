"""Every method ``tcs-fewshot run --methods`` knows, with what it consumes and where it comes from.

Three kinds of inputs:

* ``features``: the teacher's cached features (the probes);
* ``pixels``: raw 16x16 RGB pixels (the sanity baseline: does the teacher know anything here?);
* ``student``: item ids; the method reads images and cached teacher views through a
  :class:`StudentContext` and fine-tunes the student on each task.

Student methods take keyword options (``TCS(components=16)``); a run passes them from its
config's ``method_options``, e.g. ``{"tcs": {"components": 16}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.finetune import FineTune, StudentNCM
from tcs_fewshot.methods.kd import LSHL2, FitNets, LogitKD
from tcs_fewshot.methods.probes import NearestClassMean
from tcs_fewshot.methods.student_training import TrainingSettings
from tcs_fewshot.methods.tcs import TCS


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its inputs kind, how to build it, and a one-line description with its reference."""

    kind: str
    build: Callable[..., Any]
    description: str


def _student(cls: type, **fixed: Any) -> Callable[..., Any]:
    def build(context, training: TrainingSettings, unrelated_features: np.ndarray | None = None, **options: Any) -> Any:
        if fixed.get("pca_features") == "unrelated":
            if unrelated_features is None:
                raise TcsFewshotError("tcs-unrelated needs teacher features of unrelated images (the run builds them)")
            return cls(context, training, **{**options, **fixed, "pca_features": unrelated_features})
        return cls(context, training, **{**options, **fixed})

    return build


STUDENT_METHODS: dict[str, MethodEntry] = {
    "student-ncm": MethodEntry("student", _student(StudentNCM), "nearest class mean on the student's features, no adaptation"),
    "finetune": MethodEntry("student", _student(FineTune), "cross-entropy fine-tuning of the student, no teacher"),
    "kd": MethodEntry("student", _student(LogitKD), "logit KD from the teacher's support-set probe, cached views (Hinton et al. 2015)"),
    "kd-online": MethodEntry("student", _student(LogitKD, online=True),
                             "logit KD running the teacher on every training batch, as usually implemented (Hinton et al. 2015)"),
    "fitnets": MethodEntry("student", _student(FitNets), "feature KD: linear regressor to the raw teacher features, MSE (Romero et al. 2015)"),
    "lsh-l2": MethodEntry("student", _student(LSHL2), "L2 + LSH feature mimicking (Wang, Ge & Wu 2021)"),
    "tcs": MethodEntry("student", _student(TCS), "tailored coordinate system distillation (Zhou, Zhu & Wu, AAAI 2025)"),
    "tcs-elsh": MethodEntry("student", _student(TCS, mimic_loss="elsh"), "TCS with the efficient LSH mimicking loss (eLSH)"),
    "tcs-random": MethodEntry("student", _student(TCS, basis="random-orthogonal"), "TCS ablation: a random orthogonal basis"),
    "tcs-unrelated": MethodEntry("student", _student(TCS, pca_features="unrelated"),
                                 "TCS ablation: PCA fitted on another benchmark's images"),
    "tcs-noselect": MethodEntry("student", _student(TCS, selection=False), "TCS ablation: no iterative feature selection"),
}
PIXEL_METHODS: dict[str, MethodEntry] = {
    "pixel-ncm": MethodEntry("pixels", lambda: NearestClassMean(), "nearest class mean on raw 16x16 pixels (sanity baseline)"),
}


def method_kind(name: str) -> str:
    """``features``, ``pixels`` or ``student``; raises a one-line error for an unknown name.

    ``<student method>@<objective>`` (e.g. ``student-ncm@tcs``) is the student method on the
    run's student distilled on the base split with that objective (see :mod:`distill`).
    """
    from tcs_fewshot.methods import PROBES
    from tcs_fewshot.methods.distill_objectives import OBJECTIVES

    base, at, objective = name.partition("@")
    if at:
        if objective not in OBJECTIVES:
            raise TcsFewshotError(f"unknown distillation objective '{objective}' in '{name}'; choose one of {', '.join(OBJECTIVES)}")
        if base not in STUDENT_METHODS:
            raise TcsFewshotError(f"'{name}': only student methods run on a distilled student; '{base}' is not one "
                                  f"(choose from {', '.join(STUDENT_METHODS)})")
        return "student"
    if name in PROBES:
        return "features"
    for registry in (PIXEL_METHODS, STUDENT_METHODS):
        if name in registry:
            return registry[name].kind
    raise TcsFewshotError(f"unknown method '{name}'; choose from: {', '.join(all_method_names())}")


def all_method_names() -> list[str]:
    from tcs_fewshot.methods import PROBES

    return [*PROBES, *PIXEL_METHODS, *STUDENT_METHODS]


def descriptions() -> dict[str, str]:
    """name -> one-line description, for ``tcs-fewshot methods`` and the README."""
    from tcs_fewshot.methods import PROBES

    return {**{name: entry[1] for name, entry in PROBES.items()},
            **{name: entry.description for name, entry in {**PIXEL_METHODS, **STUDENT_METHODS}.items()}}


def training_settings(options: dict[str, Any]) -> TrainingSettings:
    """TrainingSettings from a dict, refusing unknown keys in one line."""
    known = {field.name for field in fields(TrainingSettings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TcsFewshotError(f"unknown training setting '{unknown[0]}'; valid: {', '.join(sorted(known))}")
    return TrainingSettings(**options)


def build_student_method(name: str, context: Any, training: TrainingSettings, options: dict[str, Any] | None = None,
                         unrelated_features: np.ndarray | None = None) -> Any:
    """A student method by name; a bad option is a one-line error naming it."""
    entry = STUDENT_METHODS[name.partition("@")[0]]
    try:
        return entry.build(context, training, unrelated_features, **(options or {}))
    except TypeError as error:
        raise TcsFewshotError(f"bad option for method '{name}': {error}") from None
