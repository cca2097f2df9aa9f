"""The embedded ``glyphs`` benchmark: Omniglot-like letters rendered from Noto fonts.

Classes are letters (``Latin/U+0041``), listed with the split of their *script* in
``data_manifests/glyphs/scripts.json`` (train, val and test scripts are disjoint, as Omniglot
splits by alphabet). Each class has ``renderings`` images (default 20): distinct font faces
(family, italic, weight, width) with a seeded affine jitter, see :mod:`glyphs_render`.

The images are built on first use (12-30 s on one core for all 29,100) into
``<root>/<size>px-<renderings>r-<key>/``, ``root`` defaulting to ``<data_home()>/glyphs``;
see :mod:`glyphs_build` for the files. ``key`` hashes the settings, the manifest and the
sha256 of the font files found, so other settings or fonts build beside (with a warning when
the fonts differ from the manifest's); without the fonts, the build from the manifest's fonts
is reused if present. A damaged build is rebuilt with a warning. All images are held in
memory (30 MB at 32 px); ``load_image`` returns black ink on white paper as an RGB ``PIL``
image of ``size x size`` px.

For pFSL, :attr:`BenchmarkData.image_split` holds a fixed train/test split of each letter's
renderings that keeps a face (renderings ``k`` with the same ``k * faces // renderings``: one
font at one weight and width, jittered) on one side (:mod:`.image_split`, ``PFSL_SALT``). It is
computed from the manifest, not stored in the build, so existing builds (and the feature
caches keyed on them) stay valid; its checksum is in ``manifest["image_split"]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.benchmarks.base import (
    BenchmarkData,
    CheckReport,
    data_home,
)
from tcs_fewshot.data.benchmarks.cache_build import unwritable
from tcs_fewshot.data.benchmarks.glyphs_build import build_images, read_build
from tcs_fewshot.data.benchmarks.glyphs_render import (
    DEFAULT_RENDERINGS,
    RENDERER_VERSION,
    locate_fonts,
)
from tcs_fewshot.data.benchmarks.image_split import describe, split_flags, train_groups
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.manifests import load_manifest, read_manifest
from tcs_fewshot.errors import TcsFewshotError

PFSL_SALT = "tcs-fewshot-glyphs-pfsl-v1"  # names the pFSL image split; another salt, another split


class Glyphs:
    """Adapter of the glyphs benchmark (``Benchmark`` protocol).

    Args:
        image_size: Side of the square images in px.
        renderings: Images per class (at least shots + queries of the tasks to draw).
        scripts: Use only these scripts (e.g. ``("Latin", "Thai", "Greek")``); None: all.
        max_classes_per_script: Keep the first N letters (by code point) of each script.
        font_dir: Read the font files from this flat directory instead of the installed packages.
        manifest_path: Another scripts manifest; default: the packaged ``data_manifests/glyphs/scripts.json``.
        progress: Show a rich progress bar while building.
    """

    name = "glyphs"
    embedded = True
    schemes = ("scripts",)
    description = "Embedded: letters rendered from Noto fonts, classes split by script (Omniglot-like)"
    source = "built from the PyPI packages fontpkg-noto-* (OFL-1.1); nothing to download"

    def __init__(
        self, image_size: int = 32, renderings: int = DEFAULT_RENDERINGS, scripts: Sequence[str] | None = None,
        max_classes_per_script: int | None = None, font_dir: str | os.PathLike | None = None,
        manifest_path: str | os.PathLike | None = None, progress: bool = True,
    ) -> None:
        if image_size < 8 or renderings < 1:
            raise TcsFewshotError(f"glyphs needs image_size >= 8 and renderings >= 1, got {image_size}, {renderings}")
        self.image_size, self.renderings = int(image_size), int(renderings)
        self.scripts = None if scripts is None else tuple(scripts)
        self.max_classes_per_script = max_classes_per_script
        self.font_dir = None if font_dir is None else Path(font_dir)
        self.manifest_path = None if manifest_path is None else Path(manifest_path)
        self.progress = progress

    def manifest(self) -> dict[str, Any]:
        """The scripts manifest, with ``splits`` cut to the chosen scripts and class limit."""
        if self.manifest_path is None:
            manifest = load_manifest(self.name, self.schemes[0])  # ships as package data
        else:
            manifest = read_manifest(self.manifest_path)
        if self.scripts is not None and set(self.scripts) - set(manifest["scripts"]):
            unknown = sorted(set(self.scripts) - set(manifest["scripts"]))
            raise TcsFewshotError(f"glyphs has no script '{unknown[0]}'; choose from: {', '.join(manifest['scripts'])}")
        limit, taken = self.max_classes_per_script, Counter()
        splits = {}
        for split, classes in manifest["splits"].items():
            splits[split] = []
            for class_id in classes:  # in code point order within each script
                script = class_id.split("/")[0]
                if (self.scripts is None or script in self.scripts) and (limit is None or taken[script] < limit):
                    taken[script] += 1
                    splits[split].append(class_id)
        n_classes = sum(len(classes) for classes in splits.values())
        expected = {"classes": n_classes, "images_per_class": self.renderings, "images": n_classes * self.renderings}
        return {**manifest, "splits": splits, "expected": expected}

    def fonts(self, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Path] | None]:
        """``(fonts, paths)``: the manifest's font entries with ``sha256`` of the files found, and
        file name -> path; ``(the manifest's entries, None)`` when some files are missing."""
        try:
            paths = locate_fonts(manifest["provenance"], self.font_dir)
        except TcsFewshotError:
            return manifest["provenance"], None
        return [{**font, "sha256": file_sha256(paths[font["file"]])} for font in manifest["provenance"]], paths

    def build_dir(self, root: Path, manifest: dict[str, Any], fonts: list[dict[str, Any]] | None = None) -> Path:
        """``root/<size>px-<renderings>r-<key>``: ``key`` hashes everything that changes the images.

        ``fonts`` are those of :meth:`fonts` (default: the manifest's), so a build from other
        font files never takes the place of the reference build.
        """
        settings = {"renderer": RENDERER_VERSION, "size": self.image_size, "renderings": self.renderings,
                    "splits": manifest["splits"], "scripts": manifest["scripts"],
                    "fonts": manifest["provenance"] if fonts is None else fonts}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        return Path(root).expanduser() / f"{self.image_size}px-{self.renderings}r-{key}"

    def check(self, root: str | os.PathLike | None = None, images: object = None, verify_images: bool = True,
              scheme: str | None = None) -> CheckReport:
        """Usable when built intact under ``root``, or when the fonts are installed and ``root`` is writable.

        ``images`` (image options), ``verify_images`` and ``scheme`` do not apply: renderings are held
        as arrays, the build's own record is what is checked, and every scheme uses that build.
        """
        root = Path(root) if root is not None else data_home() / "glyphs"
        report = CheckReport(self.name, root)
        try:
            manifest = self.manifest()
        except TcsFewshotError as error:
            report.problems.append(str(error))
            return report
        fonts, paths = self.fonts(manifest)
        directory = self.build_dir(root, manifest, fonts)
        report.facts.update(classes=sum(len(c) for c in manifest["splits"].values()),
                            images=manifest["expected"]["images"], build=str(directory))
        differing = _differing(manifest, fonts)
        if differing:
            report.facts["fonts"] = f"{len(differing)} file(s) differ from the manifest's, first '{differing[0]}'"
        build, damage = read_build(directory, fonts)
        if damage:
            report.facts["built"] = "damaged"
            report.problems.append(_damaged(directory, damage))
        elif build is not None:
            report.facts.update(built=True, images_sha256=build["images_sha256"])
        else:
            report.facts["built"] = False
            if paths is None:
                try:
                    locate_fonts(manifest["provenance"], self.font_dir)
                except TcsFewshotError as error:
                    report.problems.append(str(error))
            report.problems += filter(None, [unwritable(directory, self.name)])
        return report

    def load(self, root: str | os.PathLike | None = None, scheme: str | None = None) -> BenchmarkData:
        """The benchmark, built first if needed; items ``<Script>/U+XXXX/<k>``, labels ``<Script>/U+XXXX``."""
        if scheme not in (None, *self.schemes):
            raise TcsFewshotError(f"benchmark 'glyphs' has no split scheme '{scheme}'; choose from: scripts")
        manifest = self.manifest()
        fonts, paths = self.fonts(manifest)
        directory = self.build_dir(Path(root) if root is not None else data_home() / "glyphs", manifest, fonts)
        build, damage = read_build(directory, fonts)
        if build is None:
            if damage and paths is None:
                raise TcsFewshotError(_damaged(directory, damage))
            paths = paths or locate_fonts(manifest["provenance"], self.font_dir)  # raises: pip install ...
            if damage:
                warnings.warn(f"glyphs build '{directory}' is damaged ({damage}); rebuilding it", stacklevel=2)
            differing = _differing(manifest, fonts)
            if differing:
                warnings.warn(f"glyphs: {len(differing)} font file(s) differ from the manifest's, first "
                              f"'{differing[0]}'; building a separate cache whose images differ from the reference",
                              stacklevel=2)
            build_images(directory, manifest, self.image_size, self.renderings, paths, fonts, self.progress,
                         {"scripts": self.scripts, "max_classes_per_script": self.max_classes_per_script})
            build, damage = read_build(directory, fonts)
            if build is None:
                raise TcsFewshotError(_damaged(directory, damage or "build.json is missing"))
        try:
            images = np.load(directory / "images.npy", allow_pickle=False)
            item_ids = (directory / "items.txt").read_text(encoding="utf-8").split()
        except (OSError, ValueError) as error:
            raise TcsFewshotError(_damaged(directory, f"{type(error).__name__}: {error}")) from None
        if images.shape != (len(item_ids), self.image_size, self.image_size):
            raise TcsFewshotError(_damaged(directory, f"images.npy has shape {images.shape}"))
        labels = [item_id.rsplit("/", 1)[0] for item_id in item_ids]
        index = LabelIndex.from_items(item_ids, labels, manifest["splits"], name=self.name)
        row_of = {item_id: row for row, item_id in enumerate(item_ids)}

        def load_image(item_id: str):
            from PIL import Image

            if item_id not in row_of:
                raise TcsFewshotError(f"glyphs has no item '{item_id}'")
            return Image.fromarray(255 - images[row_of[item_id]]).convert("RGB")

        image_split = self.image_split(item_ids, labels, manifest)
        return BenchmarkData(index, "scripts", load_image, directory, {
            **manifest, "build": build, "image_split": describe(item_ids, labels, image_split, PFSL_SALT),
        }, image_split)

    def image_split(self, item_ids: Sequence[str], labels: Sequence[str], manifest: dict[str, Any]) -> np.ndarray:
        """``(n_items,)`` bool, the pFSL train renderings: half of each letter's faces, by :mod:`.image_split`."""
        faces = [f"face-{int(item_id.rsplit('/', 1)[1]) * manifest['scripts'][label.split('/')[0]]['faces'] // self.renderings}"
                 for item_id, label in zip(item_ids, labels)]
        by_class: dict[str, list[str]] = {}
        for label, face in zip(labels, faces):
            by_class.setdefault(label, []).append(face)
        return split_flags(labels, faces, train_groups(by_class, PFSL_SALT))


def _differing(manifest: dict[str, Any], fonts: list[dict[str, Any]]) -> list[str]:
    """Font files whose sha256 found differs from the manifest's."""
    return [used["file"] for font, used in zip(manifest["provenance"], fonts) if used["sha256"] != font["sha256"]]


def _damaged(directory: Path, reason: str) -> str:
    return f"glyphs build '{directory}' is damaged ({' '.join(reason.split())}); delete that folder to rebuild it"
