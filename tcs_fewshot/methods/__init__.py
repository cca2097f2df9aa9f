"""Few-shot methods: one protocol (``fit``/``predict``), one file per method family, one registry.

The registry (:mod:`tcs_fewshot.methods.registry`: ``METHODS``, ``build_method``,
``build_probe``) imports the student methods, hence torch; it is loaded on first use of one of
its names here, so that ``import tcs_fewshot`` stays light.
"""

from __future__ import annotations

from typing import Any

from tcs_fewshot.methods.probes import (
    LogisticRegressionProbe,
    NearestClassMean,
    SimpleShot,
)
from tcs_fewshot.methods.protocol import FewShotMethod, FunctionMethod, as_method

_REGISTRY_NAMES = ("METHODS", "MethodEntry", "MethodInputs", "build_method", "build_probe")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        import tcs_fewshot.methods.registry as registry

        return getattr(registry, name)
    raise AttributeError(f"module 'tcs_fewshot.methods' has no attribute '{name}'")


__all__ = [
    "FewShotMethod",
    "FunctionMethod",
    "LogisticRegressionProbe",
    "NearestClassMean",
    "SimpleShot",
    "as_method",
    *_REGISTRY_NAMES,
]
