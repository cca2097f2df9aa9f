"""``tcs-fewshot data prepare``: a benchmark's local archives into its root, checked, safely.

Steps, for every benchmark whose data comes as files (:data:`FORMATS`):

1. Each archive's members are checked (:mod:`tcs_fewshot.data.archives`) and it is extracted
   with torchvision into a hidden staging folder inside the root; loose files (pickles,
   CSVs) are linked or copied there.
2. The benchmark's parts are collected from what was extracted, whatever folder they sit in.
3. Checksums: each archive's md5 against the one torchvision's dataset class publishes
   (CIFAR-100, Omniglot), and extracted files torchvision also lists (CIFAR-100's ``train``,
   ``test``, ``meta``: a repacked archive passes when they match). Benchmarks torchvision has
   no md5 for (miniImageNet, tieredImageNet, CUB) say so, and the md5 of the user's copy is
   recorded.
4. The staged tree gets the adapter's full ``check``: layout, counts against the committed
   manifest, every image decoded (a corrupt JPEG is named).
5. Only then are its entries renamed into the root (an earlier copy of an entry is replaced),
   and a stamp records the archives' md5s: running the same command again does nothing.

A checksum or check failure refuses, leaving the root as it was, unless ``verify=False``
(``--no-verify``): the data is then placed and every failure is returned as a warning, and the
run command printed carries ``--skip-check``.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tcs_fewshot.data.archives import extract, md5_of, staging, swap_in
from tcs_fewshot.data.benchmarks import CheckReport, default_root, get_benchmark
from tcs_fewshot.data.prepare_formats import FORMATS, Format
from tcs_fewshot.errors import TcsFewshotError


@dataclass
class PrepareResult:
    """What ``prepare`` did.

    Attributes:
        benchmark: Benchmark name.
        root: Where the benchmark now is (what ``--root`` of ``run`` takes).
        extracted: False when the root already held these archives' data (nothing was done).
        checksums: One line per archive or verified file: matches, differs, or none published.
        warnings: Failures accepted with ``verify=False`` (empty when everything was verified).
        report: The check of the placed data (counts in ``report.facts``).
        command: The exact ``tcs-fewshot run`` command to evaluate on it.
    """

    benchmark: str
    root: Path
    extracted: bool
    checksums: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report: CheckReport | None = None
    command: str = ""


def _stamp_path(root: Path, name: str) -> Path:
    return root / f".tcs-prepared-{name}.json"


def _read_stamp(root: Path, name: str) -> dict:
    try:
        return json.loads(_stamp_path(root, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_command(name: str, root: Path, skip_check: bool = False) -> str:
    """``tcs-fewshot run`` on benchmark ``name`` at ``root`` (``--root`` only when not the default)."""
    parts = ["tcs-fewshot", "run", "--benchmark", name]
    if root.resolve() != default_root(name).resolve():
        parts += ["--root", str(root)]
    return shlex.join(parts + (["--skip-check"] if skip_check else []))


def _checksums(form: Format, archives: dict[Path, str], members: dict[Path, list[str]], new: Path) -> tuple[list[str], list[str]]:
    """(lines, mismatches) for the archives' md5s and the extracted files torchvision publishes."""
    from torchvision.datasets.utils import check_integrity

    lines, mismatches = [], []
    inner = form.inner_md5(new)
    inner_ok = bool(inner) and all(check_integrity(str(new / path), published.md5) for path, published in inner.items())
    for archive, digest in archives.items():
        published = form.published(archive, members.get(archive, [])) if archive in members else None
        if published is None:
            lines.append(f"{archive.name}: md5 {digest} (recorded; {form.no_checksum or 'no published md5'})")
        elif digest == published.md5:
            lines.append(f"{archive.name}: md5 {digest} matches {published.source}")
        elif inner_ok:
            lines.append(f"{archive.name}: md5 {digest} differs from {published.source} {published.md5}, but every "
                         "extracted file it publishes matches (a repacked copy)")
        else:
            mismatches.append(f"{archive.name} has md5 {digest}, not {published.md5} ({published.source}): "
                              "another release or a damaged copy")
    for path, published in inner.items():
        if check_integrity(str(new / path), published.md5):
            lines.append(f"{path}: matches {published.source}")
        elif not mismatches:  # a damaged archive already explains every file in it
            mismatches.append(f"extracted '{path}' does not match the md5 of {published.source}")
    return lines, mismatches


def prepare(name: str, archives: list[str | os.PathLike], root: str | os.PathLike | None = None,
            verify: bool = True) -> PrepareResult:
    """Extract benchmark ``name``'s local ``archives`` into ``root`` and verify it; safe to re-run.

    Args:
        name: A benchmark of ``tcs-fewshot benchmarks`` whose data comes as files.
        archives: Local archives (tar of any compression, zip) and loose files (miniImageNet
            pickles, split CSVs). Nothing is downloaded.
        root: Target (default ``$TCS_FEWSHOT_DATA/<name>``); only the benchmark's own entries
            in it are created or replaced.
        verify: Refuse data whose checksum or check fails (default); False places it anyway
            and returns the failures as warnings.

    Raises:
        TcsFewshotError: one line: a missing or unsafe archive, parts not found, or (with
            ``verify``) a checksum or check failure; the root is then left as it was.
    """
    adapter = get_benchmark(name)
    form = FORMATS.get(name)
    if form is None:
        raise TcsFewshotError(f"benchmark '{name}' has no archive to prepare; choose from: "
                              f"{', '.join(sorted(FORMATS))} (embedded benchmarks build themselves)")
    paths = [Path(archive).expanduser() for archive in archives]
    for path in paths:
        if not path.is_file():
            raise TcsFewshotError(f"archive '{path}' does not exist; give the path of the file you have: {form.expects}")
    if len(paths) < form.required:
        raise TcsFewshotError(f"{name} needs {form.expects}; pass each with --archive")
    root = Path(root).expanduser() if root is not None else default_root(name)
    digests = {path: md5_of(path) for path in paths}
    stamp = _read_stamp(root, name)
    if (stamp.get("archives") == sorted(digests.values()) and (stamp.get("verified") or not verify)
            and stamp.get("entries") and all((root / entry).exists() for entry in stamp["entries"])):
        report = adapter.check(root, verify_images=False)
        return PrepareResult(name, root, False, stamp.get("checksums", []), stamp.get("warnings", []), report,
                             run_command(name, root, skip_check=not report.ok))
    with staging(root, name) as stage:
        new, extracted = stage / "new", stage / "extracted"
        new.mkdir()
        members = {path: extract(path, extracted) for path in paths if path.suffix not in form.loose}
        loose = [path for path in paths if path not in members]
        entries = form.collect(extracted, loose, new)
        lines, failures = _checksums(form, digests, members, new)
        report = adapter.check(new)
        report.root = root
        failures += [problem.replace(str(new), str(root)) for problem in report.problems]
        if failures and verify:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise TcsFewshotError(f"{failures[0]}{more}; nothing was placed under '{root}': use the original "
                                  f"{form.expects}, or pass --no-verify to place it anyway")
        swap_in(new, root, entries)
    report.problems = [problem.replace(str(new), str(root)) for problem in report.problems]
    record = {"archives": sorted(digests.values()), "entries": entries, "verified": not failures,
              "checksums": lines, "warnings": failures, "facts": report.facts}
    _stamp_path(root, name).write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    return PrepareResult(name, root, True, lines, failures, report, run_command(name, root, skip_check=not report.ok))
