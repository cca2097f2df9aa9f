"""Render the emoji benchmark once into a cache directory, atomically, and reuse it after.

Layout of a built root (``<data_home()>/emoji`` by default)::

    build.json               what was built from what (see :func:`ensure_built`)
    <style>/<key>.png        72x72 RGB, e.g. openmoji/1f426.png

The build is keyed on everything that changes the pixels: the emoji wanted, the styles found
(with their versions and file checksums), the Pillow, FreeType and raqm versions, and
``RENDERER_VERSION``; and on the pFSL image split (``image_split``: which emoji of each
subgroup are train images, by :mod:`.image_split` with ``PFSL_SALT``). A later run with the
same key reuses the images; another key rebuilds. The build ``checksum`` covers the images and
that split.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tcs_fewshot.data.benchmarks.cache_build import BUILD_FILE, building, progress_bar
from tcs_fewshot.data.benchmarks.emoji_styles import IMAGE_SIZE, Style
from tcs_fewshot.data.benchmarks.image_split import RULE, train_groups

RENDERER_VERSION = 1  # bump whenever the drawing code changes what it draws
PFSL_SALT = "tcs-fewshot-emoji-pfsl-v1"  # names the pFSL image split; another salt, another split


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries whose code produces the pixels."""
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, **{name: features.version(name) for name in ("freetype2", "raqm", "harfbuzz")}}


def build_key(catalog: Mapping[str, Sequence[str]], styles: Sequence[Style]) -> str:
    """sha256 over what determines the images: emoji wanted, styles, libraries, renderer."""
    identity = {
        "renderer": RENDERER_VERSION,
        "image_size": IMAGE_SIZE,
        "libraries": library_versions(),
        "styles": [style.describe() for style in styles],
        "catalog": {subgroup: list(keys) for subgroup, keys in sorted(catalog.items())},
        "image_split": {"rule": RULE, "salt": PFSL_SALT},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_build(root: Path) -> dict | None:
    """The build manifest of ``root``, or ``None`` when absent or unreadable (then it is rebuilt)."""
    try:
        build = json.loads((root / BUILD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return build if isinstance(build, dict) else None


def ensure_built(root: Path, catalog: Mapping[str, Sequence[str]], styles: Sequence[Style], progress: bool = True) -> dict:
    """The build manifest of ``root``, rendering it first unless a build with the same key is there.

    Args:
        root: Cache directory; built in a sibling temporary directory, then renamed into place.
        catalog: subgroup -> code point keys (``1f426``) of its emoji.
        styles: Styles to draw, from :func:`emoji_styles.find_styles`.
        progress: Show a rich progress bar while rendering.

    Returns:
        ``{"key", "styles", "libraries", "counts", "items": [[item_id, subgroup, sha256], ...],
        "image_split": {"rule", "salt", "train_emoji": {subgroup: [key, ...]}}, "checksum",
        "seconds", ...}``; ``sha256`` is over an image's raw RGB bytes (not the PNG file, whose
        bytes depend on the zlib build), ``checksum`` over all items and the image split.
    """
    key = build_key(catalog, styles)
    current = read_build(root)
    if current is not None and current.get("key") == key:
        return current
    with building(root, "emoji", lambda target: (read_build(target) or {}).get("key") == key) as temporary:
        build = _render_all(temporary, catalog, styles, progress)
        train = train_groups(catalog, PFSL_SALT)  # from the catalog alone: the same emoji split in any styles
        build["image_split"] = {"rule": RULE, "salt": PFSL_SALT,
                                "train_emoji": {subgroup: sorted(keys) for subgroup, keys in sorted(train.items())}}
        build["checksum"] = build_checksum(build["items"], build["image_split"])
        build.update(key=key, libraries=library_versions(), renderer=RENDERER_VERSION, image_size=IMAGE_SIZE)
        (temporary / BUILD_FILE).write_text(json.dumps(build, indent=1), encoding="utf-8")
    return read_build(root) or build


def _render_all(target: Path, catalog: Mapping[str, Sequence[str]], styles: Sequence[Style], progress: bool) -> dict:
    started = time.perf_counter()
    items, counts = [], {}
    total = len(styles) * sum(len(keys) for keys in catalog.values())
    with progress_bar("rendering emoji (first use only)", total, progress) as step:
        for style in styles:
            (target / style.name).mkdir()
            drawn = missing = 0
            step(0, f"rendering emoji: {style.name}")
            for subgroup, keys in sorted(catalog.items()):
                for key in keys:
                    image = style.render(key)
                    step()
                    if image is None:
                        missing += 1
                        continue
                    item_id = f"{style.name}/{key}.png"
                    image.save(target / item_id, format="PNG")
                    items.append([item_id, subgroup, hashlib.sha256(image.tobytes()).hexdigest()])
                    drawn += 1
            counts[style.name] = {"images": drawn, "missing": missing}
    items.sort()
    return {
        "styles": [style.describe() | counts[style.name] for style in styles],
        "counts": {"images": len(items), "subgroups": len(catalog), "emoji": sum(len(k) for k in catalog.values())},
        "seconds": round(time.perf_counter() - started, 2),
        "items": items,
    }


def build_checksum(items: Sequence[Sequence[str]], image_split: Mapping) -> str:
    """sha256 over every ``item_id sha256`` line, then the pFSL split's train emoji per subgroup."""
    lines = "".join(f"{item_id} {digest}\n" for item_id, _, digest in items)
    split = json.dumps(image_split["train_emoji"], sort_keys=True)
    return hashlib.sha256(f"{lines}image_split {image_split['salt']} {split}\n".encode()).hexdigest()

