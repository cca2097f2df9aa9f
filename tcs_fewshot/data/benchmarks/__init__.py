"""Benchmark adapters: one module per benchmark, found by name through this registry."""

from __future__ import annotations

from importlib import import_module

from tcs_fewshot.data.benchmarks.base import (
    Benchmark,
    BenchmarkData,
    CheckReport,
    data_home,
)
from tcs_fewshot.errors import TcsFewshotError

# name -> "module:attribute"; modules are imported only when used (some need extra packages).
ADAPTERS: dict[str, str] = {}


def get_benchmark(name: str) -> Benchmark:
    """The adapter registered as ``name``."""
    if name not in ADAPTERS:
        raise TcsFewshotError(f"unknown benchmark '{name}'; choose from: {', '.join(sorted(ADAPTERS))}")
    module, attribute = ADAPTERS[name].split(":")
    return getattr(import_module(module), attribute)()


__all__ = ["ADAPTERS", "Benchmark", "BenchmarkData", "CheckReport", "data_home", "get_benchmark"]
