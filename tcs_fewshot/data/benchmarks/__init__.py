"""Benchmark adapters: one module per benchmark, found by name through this registry."""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

import pandas as pd

from tcs_fewshot.data.benchmarks.base import (
    Benchmark,
    BenchmarkData,
    CheckReport,
    data_home,
)
from tcs_fewshot.data.images import ImageOptions
from tcs_fewshot.errors import TcsFewshotError

# name -> "module:attribute"; modules are imported only when used (some need extra packages).
ADAPTERS: dict[str, str] = {
    "emoji": "tcs_fewshot.data.benchmarks.emoji:Emoji",
    "glyphs": "tcs_fewshot.data.benchmarks.glyphs:Glyphs",
    "cub": "tcs_fewshot.data.benchmarks.cub:CUB",
    "mini_imagenet": "tcs_fewshot.data.benchmarks.mini_imagenet:MiniImageNet",
    "tiered_imagenet": "tcs_fewshot.data.benchmarks.tiered_imagenet:TieredImageNet",
    "cifar_fs": "tcs_fewshot.data.benchmarks.cifar:CIFARFS",
    "fc100": "tcs_fewshot.data.benchmarks.cifar:FC100",
    "omniglot": "tcs_fewshot.data.benchmarks.omniglot:Omniglot",
}


def get_benchmark(name: str) -> Benchmark:
    """The adapter registered as ``name``."""
    if name not in ADAPTERS:
        raise TcsFewshotError(f"unknown benchmark '{name}'; choose from: {', '.join(sorted(ADAPTERS))}")
    module, attribute = ADAPTERS[name].split(":")
    return getattr(import_module(module), attribute)()


def default_root(name: str) -> Path:
    """Where benchmark ``name`` is looked for when no root is given: ``data_home()/name``."""
    return data_home() / name


def benchmark_table() -> pd.DataFrame:
    """Every benchmark: schemes, description, source, default root and readiness on this machine.

    Readiness is what can be seen without reading every image: an embedded benchmark is
    ``built`` once a build manifest exists under its root; a dataset is ``files present``
    when its root holds anything (``tcs-fewshot data check`` verifies them).
    """
    rows = []
    for name in ADAPTERS:
        adapter = get_benchmark(name)
        root = default_root(name)
        present = root.is_dir() and any(root.iterdir())
        if getattr(adapter, "embedded", False):
            built = root.is_dir() and any(root.glob("**/build.json"))
            status = "built" if built else "builds on first use"
        else:
            status = "files present (run data check)" if present else "not found"
        rows.append({"benchmark": name, "schemes": ", ".join(adapter.schemes), "status": status,
                     "root": str(root), "description": adapter.description, "source": adapter.source})
    rows.append({"benchmark": "folder", "schemes": "custom", "status": "your --root", "root": "",
                 "description": "your own images: an ImageFolder tree or a path,label CSV (--root, --split-file)",
                 "source": "your data"})
    return pd.DataFrame(rows)


def open_benchmark(
    name: str, root: str | os.PathLike | None = None, split_file: str | os.PathLike | None = None
) -> tuple[Benchmark, Path]:
    """The adapter for ``name`` and its root; ``folder`` is a user's own images at ``root``."""
    if name == "folder":
        from tcs_fewshot.data.benchmarks.folder import ImageFolderBenchmark

        if root is None:
            raise TcsFewshotError("--benchmark folder needs --root: an ImageFolder tree or a CSV of path,label")
        return ImageFolderBenchmark(root, split_file=split_file), Path(root)
    if split_file is not None:
        raise TcsFewshotError(f"--split-file is for --benchmark folder; '{name}' has its own split schemes")
    return get_benchmark(name), Path(root) if root is not None else default_root(name)


def check_benchmark(
    name: str, root: str | os.PathLike | None = None, split_file: str | os.PathLike | None = None,
    images: ImageOptions | None = None,
) -> CheckReport:
    """Check benchmark ``name`` under ``root`` (default :func:`default_root`), decoding images by ``images``."""
    adapter, root = open_benchmark(name, root, split_file)
    return adapter.check(root, images=images)


def load_benchmark(
    name: str, root: str | os.PathLike | None = None, scheme: str | None = None,
    split_file: str | os.PathLike | None = None, images: ImageOptions | None = None,
) -> BenchmarkData:
    """The data of benchmark ``name``, its image files decoded by ``images`` (default :class:`ImageOptions`)."""
    return open_and_load(name, root, scheme, split_file, images)[0]


def usable_check(name: str, root: str | os.PathLike | None = None,
                 split_file: str | os.PathLike | None = None, scheme: str | None = None) -> dict:
    """The check ``run`` makes before spending time: layout and counts, images not decoded.

    Decoding every image would cost minutes on large datasets at every run; ``tcs-fewshot data
    check`` does it, and an image that fails to decode is still refused, by name, when read.

    Returns:
        ``{"ok": True, "root", "images_decoded": False, "facts", "problems": []}`` for the manifest.

    Raises:
        TcsFewshotError: one line naming the first problem and the fixes.
    """
    adapter, resolved = open_benchmark(name, root, split_file)
    return _usable(adapter, resolved, name, root, scheme)


def open_and_load(
    name: str, root: str | os.PathLike | None = None, scheme: str | None = None,
    split_file: str | os.PathLike | None = None, images: ImageOptions | None = None, check: bool = False,
) -> tuple[BenchmarkData, dict]:
    """Open benchmark ``name`` once: check it as :func:`usable_check` does (with ``check``), then load it.

    One adapter serves both, so what they share (emoji's catalog and styles) is read once.

    Returns:
        The data (image files decoded by ``images``, default :class:`ImageOptions`), and the
        check's record for the manifest (``{"skipped": True}`` without ``check``).
    """
    adapter, resolved = open_benchmark(name, root, split_file)
    checked = _usable(adapter, resolved, name, root, scheme) if check else {"skipped": True}
    data = adapter.load(resolved, scheme)
    return (data if images is None else data.with_images(images)), checked


def _usable(adapter: Benchmark, resolved: Path, name: str, root: str | os.PathLike | None, scheme: str | None) -> dict:
    """:func:`usable_check` on an opened adapter; ``root`` is what the user gave (for the fix)."""
    report = adapter.check(resolved, verify_images=False, scheme=scheme)
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        where = f" --root {root}" if root is not None else ""
        raise TcsFewshotError(
            f"{name} data at '{report.root}' is not usable: {report.problems[0]}{more}; fix it "
            f"('tcs-fewshot data check {name}{where}' lists every problem) or pass --skip-check to run anyway"
        )
    return {"ok": True, "root": str(report.root), "images_decoded": False, "facts": dict(report.facts),
            "problems": []}


__all__ = ["ADAPTERS", "Benchmark", "BenchmarkData", "CheckReport", "benchmark_table", "check_benchmark",
            "data_home", "default_root", "get_benchmark", "load_benchmark", "open_and_load", "open_benchmark",
            "usable_check"]
