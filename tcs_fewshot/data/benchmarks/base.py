"""What every benchmark adapter provides, and what it gives back.

An adapter reads a benchmark in the layout users already have on disk (or builds an embedded
one), checks it against its manifest, and returns a :class:`BenchmarkData`: the label index
of one split scheme plus a lazy image loader. Adapters return PIL images; transforms come
from the model that consumes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tcs_fewshot.data.images import PLAIN_MODES, ImageFileError, ImageOptions, decode, describe_mode, open_rgb, with_options
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError

DATA_HOME_VARIABLE = "TCS_FEWSHOT_DATA"


def data_home() -> Path:
    """Where benchmarks live by default: ``$TCS_FEWSHOT_DATA`` or ``~/.cache/tcs-fewshot/data``."""
    return Path(os.environ.get(DATA_HOME_VARIABLE) or Path.home() / ".cache" / "tcs-fewshot" / "data")


@dataclass
class CheckReport:
    """Outcome of checking a benchmark on disk.

    Attributes:
        benchmark: Benchmark name.
        root: Directory checked.
        problems: One line each: what is wrong and how to fix it. Empty means usable.
        facts: What was found (``"classes": 200``, ``"images": 11788``, ...), for display.
        notes: One line each: what is usable but converted by a rule (a CMYK or 16-bit image,
            transparency composited on the background, a large image reduced on load).
    """

    benchmark: str
    root: Path
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, eq=False)
class BenchmarkData:
    """A loaded benchmark: which items exist and how to read them.

    Attributes:
        index: Items, classes and the splits of ``scheme`` (``is_train`` set when the
            scheme has an official train/test image split).
        scheme: Split scheme name (``chen``, ``metadataset``, ``official``, ...).
        load_image: item id -> RGB ``PIL.Image.Image``, read lazily from disk or memory.
        root: Where the data lives.
        manifest: The manifest the data was checked against (provenance, leakage notes).
        image_split: ``(n_items,)`` bool over ``index.item_ids``, or ``None``: a fixed train/test
            image split made for the pFSL protocol where the scheme has no official one (the
            embedded benchmarks, see :mod:`.image_split`). It is kept out of ``index`` because
            the index fingerprint seeds every task: episodic tasks stay as they were without it.
    """

    index: LabelIndex
    scheme: str
    load_image: Callable[[str], Any]
    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    image_split: Any = None

    def index_for(self, protocol: str) -> LabelIndex:
        """The index tasks of ``protocol`` are drawn from: ``index``, with ``image_split`` as its
        ``is_train`` flags for ``pfsl`` when the scheme has no official split of its own."""
        if protocol != "pfsl" or self.index.is_train is not None or self.image_split is None:
            return self.index
        return LabelIndex.from_items(self.index.item_ids, self.index.labels, self.index.class_splits,
                                     is_train=self.image_split, name=self.index.name, groups=self.index.groups)

    def images(self, item_ids: Sequence[str]) -> list[Any]:
        """RGB PIL images of ``item_ids``, in order."""
        return [self.load_image(item_id) for item_id in item_ids]

    def with_images(self, options: ImageOptions) -> BenchmarkData:
        """This data with its image files decoded by ``options`` (unchanged when it reads no files:
        in-memory arrays and the embedded builds, which store opaque RGB, decode the same under any)."""
        return replace(self, load_image=with_options(self.load_image, options))

    @property
    def image_record(self) -> dict[str, Any] | None:
        """``ImageOptions.record()`` of a loader that decodes files by options, else None."""
        options = getattr(self.load_image, "options", None)
        return options.record() if isinstance(options, ImageOptions) else None


@runtime_checkable
class Benchmark(Protocol):
    """A benchmark adapter.

    Attributes:
        name: Registry name (``cub``, ``mini_imagenet``, ``emoji``, ...).
        schemes: Split schemes it offers; the first is the default.
        description: One line for ``tcs-fewshot benchmarks``.
        source: Where users get the official data (a name, never a download link that the
            toolkit follows: nothing is downloaded at run time).
    """

    name: str
    schemes: tuple[str, ...]
    description: str
    source: str

    def check(self, root: Path | None, images: ImageOptions | None = None, verify_images: bool = True,
              scheme: str | None = None) -> CheckReport:
        """Verify layout, counts against the manifest, and (``verify_images``: slow on large
        datasets) that every image decodes by ``images``.

        ``scheme`` (default: the first) matters only where schemes live in different places
        (emoji's all-styles build); adapters whose schemes split the same files ignore it.
        """

    def load(self, root: Path | None, scheme: str | None = None) -> BenchmarkData:
        """The data of ``scheme`` (default: the first); raises TcsFewshotError if unusable.

        Embedded benchmarks accept ``root=None`` (their cache under :func:`data_home`) and
        build themselves on first use; they have a class attribute ``embedded = True``.
        Image files are decoded by the default :class:`ImageOptions`;
        :meth:`BenchmarkData.with_images` picks others.
        """


def load_rgb(path: str | os.PathLike, options: ImageOptions | None = None) -> Any:
    """Open an image file as RGB by the rules of :mod:`tcs_fewshot.data.images` (transparency on
    white by default, every mode to 8-bit RGB, bounded decode of large files); a one-line error
    names a missing, damaged, truncated or oversized file."""
    return open_rgb(path, options)


def check_images(report: CheckReport, paths: Sequence[Path], options: ImageOptions | None = None,
                 limit: int = 20) -> CheckReport:
    """Decode every image of ``paths`` as loading will, into ``report``.

    A file that would fail to load (missing, damaged, truncated, over ``max_pixels``) is a
    problem; a file whose mode is converted by a rule (transparency, CMYK, 16-bit, 1-bit, ...),
    that is reduced on load, or that PIL warned about is a note, and counted in ``report.facts`` (``odd_mode_images``,
    ``large_images``). At most ``limit`` problems and ``limit`` notes are listed.
    """
    options = options or ImageOptions()
    problems: list[str] = []
    odd: dict[str, int] = {}
    large = 0
    for path in paths:
        try:
            _, mode, (width, height), warned = decode(path, options)
        except ImageFileError as error:
            problems.append(error.problem())
            if len(problems) >= limit:
                problems.append(f"stopped after {limit} unreadable images")
                break
            continue
        for message in warned:
            if len(report.notes) < limit:
                report.notes.append(f"'{path}': PIL warned: {message}")
        if mode not in PLAIN_MODES:
            odd[mode] = odd.get(mode, 0) + 1
            if len(report.notes) < limit:
                report.notes.append(f"'{path}' is {mode}: {describe_mode(mode, options)}")
        if width * height > options.working_pixels:
            large += 1
            if len(report.notes) < limit:
                report.notes.append(f"'{path}' is {width}x{height} ({width * height / 1e6:.1f} megapixels): "
                                    f"reduced to at most {options.working_pixels / 1e6:.1f} megapixels on load")
    report.problems.extend(problems)
    if odd:
        report.facts["odd_mode_images"] = ", ".join(f"{mode} {n}" for mode, n in sorted(odd.items()))
    if large:
        report.facts["large_images"] = large
    return report


def compare_counts(found: dict[str, int], manifest: dict[str, Any], report: CheckReport) -> None:
    """Add problems for manifest classes missing or empty on disk, and count mismatches.

    Args:
        found: class id -> number of images found on disk.
        manifest: A manifest (see :mod:`tcs_fewshot.data.manifests`).
    """
    expected_classes = [c for classes in manifest["splits"].values() for c in classes]
    missing = [c for c in expected_classes if c not in found]
    empty = [c for c in expected_classes if found.get(c) == 0]
    if missing:
        report.problems.append(
            f"{len(missing)} class(es) of the manifest are missing on disk, first '{missing[0]}'; "
            f"the data under {report.root} is incomplete or in another layout"
        )
    if empty:
        report.problems.append(f"{len(empty)} class(es) have no images, first '{empty[0]}'")
    expected = manifest.get("expected", {})
    per_class = expected.get("images_per_class")
    if per_class:
        wrong = [c for c in expected_classes if c in found and found[c] != per_class]
        if wrong:
            report.problems.append(
                f"{len(wrong)} class(es) do not have {per_class} images, first '{wrong[0]}' has {found[wrong[0]]}"
            )
    total = sum(found.get(c, 0) for c in expected_classes)
    if expected.get("images") and total != expected["images"] and not missing:
        report.problems.append(f"found {total} images of the manifest's classes, expected {expected['images']}")
    report.facts.update(classes=len([c for c in expected_classes if c in found]), images=total)

