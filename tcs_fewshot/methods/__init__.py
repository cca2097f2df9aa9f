"""Few-shot methods: one protocol (``fit``/``predict``), one file per method family."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.probes import (
    LogisticRegressionProbe,
    NearestClassMean,
    SimpleShot,
)
from tcs_fewshot.methods.protocol import FewShotMethod, FunctionMethod, as_method

# name -> (factory(base_mean) -> method, one-line description with its reference)
PROBES: dict[str, tuple[Callable[[np.ndarray | None], Any], str]] = {
    "ncm": (lambda base_mean: NearestClassMean(), "nearest class mean, ProtoNet at test time (Snell et al. 2017)"),
    "simpleshot": (lambda base_mean: SimpleShot(base_mean), "SimpleShot CL2N: base-mean centring + L2 + NCM (Wang et al. 2019)"),
    "logreg": (lambda base_mean: LogisticRegressionProbe(), "logistic regression on L2-normalised features (Tian et al. 2020, RFS)"),
}


def build_probe(name: str, base_mean: np.ndarray | None = None) -> Any:
    """A fresh probe by registry name; ``base_mean`` is the ``(dim,)`` base-split mean for SimpleShot."""
    if name not in PROBES:
        raise TcsFewshotError(f"unknown method '{name}'; choose from: {', '.join(PROBES)}")
    return PROBES[name][0](base_mean)


__all__ = [
    "PROBES",
    "FewShotMethod",
    "FunctionMethod",
    "LogisticRegressionProbe",
    "NearestClassMean",
    "SimpleShot",
    "as_method",
    "build_probe",
]
