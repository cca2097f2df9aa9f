"""Builder of ``data_manifests/glyphs/scripts.json``: the classes of the glyphs benchmark.

    python -m data_manifests.build.glyphs [--out PATH]

Nothing here lists letters: the classes are derived from the installed fonts' cmaps and
Python's ``unicodedata`` by the rules in :data:`RULES`; only the font packages to read and
the split of *scripts* (as Omniglot splits by alphabet) are fixed by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.benchmarks.glyphs_render import (
    DEFAULT_RENDERINGS,
    REFERENCE,
    GlyphRenderer,
    axis_tags,
    locate_fonts,
    script_faces,
)
from tcs_fewshot.data.manifests import FORMAT, VERSION, manifest_checksum

# The Noto packages on PyPI (all OFL-1.1) and their files. Debian's fonts-noto-* ship static
# files under other names, so they are not read: pip alone provides the benchmark.
FONT_PACKAGES = {
    "fontpkg-noto-sans": ("NotoSans[wdth,wght].ttf", "NotoSans-Italic[wdth,wght].ttf"),
    "fontpkg-noto-serif": ("NotoSerif[wdth,wght].ttf", "NotoSerif-Italic[wdth,wght].ttf"),
    "fontpkg-noto-sans-display": ("NotoSansDisplay[wdth,wght].ttf", "NotoSansDisplay-Italic[wdth,wght].ttf"),
    "fontpkg-noto-sans-arabic": ("NotoSansArabic[wdth,wght].ttf",),
    "fontpkg-noto-kufi-arabic": ("NotoKufiArabic[wght].ttf",),
    "fontpkg-noto-sans-devanagari": ("NotoSansDevanagari[wdth,wght].ttf",),
    "fontpkg-noto-sans-khmer": ("NotoSansKhmer[wdth,wght].ttf",),
    "fontpkg-noto-sans-tamil": ("NotoSansTamil[wdth,wght].ttf",),
    "fontpkg-noto-sans-telugu": ("NotoSansTelugu[wdth,wght].ttf",),
    "fontpkg-noto-sans-thai": ("NotoSansThai[wdth,wght].ttf",),
}

# Base (train) gets the three large scripts, as Omniglot's background set is the larger one;
# val and test each mix Brahmic scripts, test adds Greek. Scripts found but not named here
# would be reported by the builder as unassigned (none are with these fonts).
SCRIPT_SPLIT = {
    "train": ("Latin", "Cyrillic", "Arabic"),
    "val": ("Tamil", "Thai"),
    "test": ("Greek", "Devanagari", "Telugu", "Khmer"),
}
MIN_LETTERS = 20  # a script needs this many letters left to be used (20-way tasks)
COVERAGE = 0.9  # a font file serves a script if it maps this share of the script's letters
DEDUP_SIZE = 32  # side in px of the reference renderings compared for blanks and duplicates

RULES = {
    "letter": "Unicode general category Lu, Ll or Lo, and no decomposition (so no precomposed "
              "accented letters, presentation forms or compatibility letters), in Python's unicodedata",
    "script": "the first word of the character's Unicode name (LATIN, CYRILLIC, ...), title-cased",
    "fonts": f"a font file serves a script if its cmap maps at least {COVERAGE:.0%} of the script's "
             "letters found in any listed file; the script's letters are those every serving file maps",
    "dedup": f"each letter is rendered unjittered at {DEDUP_SIZE}x{DEDUP_SIZE} in every serving file's "
             f"regular face ({REFERENCE}); in code point order, a letter blank in any of them, or whose "
             "rendering is byte-identical (sha256) to one of a letter kept before, is dropped",
    "scripts": f"a script with fewer than {MIN_LETTERS} letters left is dropped; the rest are split by SCRIPT_SPLIT",
}


def class_id(script: str, codepoint: int) -> str:
    return f"{script}/U+{codepoint:04X}"


def script_of(codepoint: int) -> str | None:
    """Script of a letter by :data:`RULES`, or None if the code point is not a letter."""
    char = chr(codepoint)
    if unicodedata.category(char) not in ("Lu", "Ll", "Lo") or unicodedata.decomposition(char):
        return None
    name = unicodedata.name(char, "")
    return name.split()[0].title() if name else None


def font_entries() -> tuple[list[dict], dict]:
    """Provenance of every font file of :data:`FONT_PACKAGES`, and file name -> installed path."""
    fonts = [
        {"package": package, "version": _release(importlib.metadata.version(package)), "file": file}
        for package, files in FONT_PACKAGES.items() for file in files
    ]
    paths = locate_fonts(fonts)
    for font in fonts:
        metadata = importlib.metadata.metadata(font["package"])
        font.update(sha256=file_sha256(paths[font["file"]]), axes=list(axis_tags(paths[font["file"]])),
                    licence=metadata.get("License-Expression") or metadata.get("License") or "")
    return fonts, paths


def _release(version: str) -> str:
    """PEP 440 form of a plain release as pip shows it: the metadata's ``2.012`` is ``2.12``."""
    return ".".join(str(int(part)) if part.isdigit() else part for part in version.split("."))


def candidate_letters(fonts: list[dict], paths: dict) -> tuple[dict, dict, dict]:
    """(script -> serving files, script -> candidate code points, too-small script -> count)."""
    from fontTools.ttLib import TTFont

    cmaps = {file: set(TTFont(path, lazy=True).getBestCmap()) for file, path in paths.items()}
    letters = defaultdict(set)
    for cmap in cmaps.values():
        for codepoint in cmap:
            if script := script_of(codepoint):
                letters[script].add(codepoint)
    serving = {
        script: [f["file"] for f in fonts if len(found & cmaps[f["file"]]) >= COVERAGE * len(found)]
        for script, found in letters.items()
    }
    candidates = {s: set.intersection(*(cmaps[f] for f in serving[s])) & found for s, found in letters.items()}
    # Scripts too small before deduplication cannot take part (nor claim a duplicate's hash).
    too_small = {s: len(found) for s, found in candidates.items() if len(found) < MIN_LETTERS}
    return serving, {s: found for s, found in candidates.items() if s not in too_small}, too_small


def deduplicate(renderer: GlyphRenderer, candidates: dict, serving: dict) -> tuple[dict, list[dict]]:
    """(script -> kept code points, dropped letters with the reason), by the ``dedup`` rule."""
    kept, dropped, seen = defaultdict(list), [], {}
    for codepoint, script in sorted((c, s) for s, found in candidates.items() for c in found):
        images = renderer.reference(codepoint, serving[script])
        if any(image is None for image in images):
            dropped.append({"class": class_id(script, codepoint), "reason": "blank"})
            continue
        hashes = {hashlib.sha256(image.tobytes()).hexdigest() for image in images}
        twin = next((seen[h] for h in sorted(hashes) if h in seen), None)
        if twin is not None:
            dropped.append({"class": class_id(script, codepoint), "reason": f"renders identically to {twin}"})
            continue
        seen.update({h: class_id(script, codepoint) for h in hashes})
        kept[script].append(codepoint)
    return kept, dropped


def build_manifest() -> dict:
    """The manifest as a dict, derived from the installed font packages (about 5 s)."""
    fonts, paths = font_entries()
    serving, candidates, unused = candidate_letters(fonts, paths)
    kept, dropped = deduplicate(GlyphRenderer(paths, size=DEDUP_SIZE), candidates, serving)
    unused.update({s: len(found) for s, found in kept.items() if len(found) < MIN_LETTERS})
    used = set(kept) - set(unused)
    assigned = {s for scripts in SCRIPT_SPLIT.values() for s in scripts}
    if used != assigned:
        raise RuntimeError(f"edit SCRIPT_SPLIT: unassigned {sorted(used - assigned)}, absent {sorted(assigned - used)}")
    tags = {f["file"]: f["axes"] for f in fonts}
    scripts = {
        s: {"split": next(k for k, v in SCRIPT_SPLIT.items() if s in v), "fonts": serving[s],
            "faces": len(script_faces(serving[s], tags)), "letters": len(kept[s])}
        for s in sorted(used)
    }
    splits = {split: [class_id(s, c) for s in names for c in kept[s]] for split, names in SCRIPT_SPLIT.items()}
    n_classes = sum(map(len, splits.values()))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "benchmark": "glyphs",
        "scheme": "scripts",
        "title": f"glyphs: letters of {len(used)} scripts rendered from Noto fonts, split by script "
                 f"({'/'.join(str(len(ids)) for ids in splits.values())} classes)",
        "citation": "Noto fonts, The Noto Project Authors (OFL-1.1); split by script as Omniglot by alphabet "
                    "(Lake, Salakhutdinov, Tenenbaum, Science 2015)",
        "class_id": "'<Script>/U+XXXX': the letter's script (first word of its Unicode name, title-cased) and code "
                    "point, e.g. 'Latin/U+0041'; items are '<Script>/U+XXXX/<k>', rendering k of the letter",
        "provenance": [{"kind": "derived", **font} for font in fonts],
        "derivation": {"builder": "python -m data_manifests.build.glyphs",
                       "unicode_version": unicodedata.unidata_version, "python": sys.version.split()[0]},
        "rules": {**RULES, "script_split": SCRIPT_SPLIT},
        "scripts": scripts,
        "unused_scripts": dict(sorted(unused.items())),
        "counts": {split: {"scripts": len(SCRIPT_SPLIT[split]), "classes": len(ids)} for split, ids in splits.items()},
        "expected": {"classes": n_classes, "images": DEFAULT_RENDERINGS * n_classes, "images_per_class": DEFAULT_RENDERINGS},
        "image_split": None,
        "pretraining_overlap": [{"dataset": "ImageNet-1k", "note": "no class in common (rendered letters, not "
                                 "photographs); ImageNet photographs show printed text, so a teacher may know letter shapes"}],
        "splits": splits,
        "dropped": dropped,
    }
    return {**manifest, "checksum": manifest_checksum(manifest)}


def default_path() -> Path:
    """``data_manifests/glyphs/scripts.json`` of this source tree."""
    return Path(__file__).resolve().parents[1] / "glyphs" / "scripts.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_path())
    out = parser.parse_args(argv).out
    manifest = build_manifest()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    counts = ", ".join(f"{split} {c['classes']}" for split, c in manifest["counts"].items())
    print(f"wrote {out}: classes {counts}; dropped {len(manifest['dropped'])}")


if __name__ == "__main__":
    main()
