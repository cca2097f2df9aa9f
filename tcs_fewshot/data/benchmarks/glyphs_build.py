"""Building the glyphs benchmark's image cache: render every class, then publish atomically.

A build folder holds ``images.npy`` (``(n_items, size, size)`` uint8 ink coverage, 0 paper,
255 ink), ``items.txt`` (one item id per line, the same order) and ``build.json`` (settings,
fonts found, software versions, counts, checksums). It is written into a temporary sibling
folder and renamed into place (see :mod:`.cache_build`), so a reader never sees half a build.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.benchmarks.cache_build import BUILD_FILE, building, progress_bar
from tcs_fewshot.data.benchmarks.glyphs_render import GlyphRenderer, script_faces


def build_images(
    directory: Path,
    manifest: dict[str, Any],
    image_size: int,
    renderings: int,
    paths: Mapping[str, Path],
    fonts: Sequence[Mapping[str, str]],
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> None:
    """Render ``renderings`` images of every class in ``manifest["splits"]`` into ``directory``.

    Args:
        directory: The build folder to create, or replace when it holds a damaged build.
        manifest: The scripts manifest (its ``splits`` may be cut to a subset of classes).
        image_size: Side of the images in px.
        renderings: Images per class.
        paths: Font file name -> path, from :func:`glyphs_render.locate_fonts`.
        fonts: The manifest's font entries with ``sha256`` of the files in ``paths``.
        progress: Show a rich progress bar (on stderr) over the classes.
        settings: Extra settings to record in ``build.json``.
    """
    started = time.perf_counter()
    classes = [class_id for ids in manifest["splits"].values() for class_id in ids]
    digits = len(str(renderings - 1))
    item_ids = [f"{c}/{k:0{digits}d}" for c in classes for k in range(renderings)]
    with building(directory, "glyphs", lambda target: read_build(target, fonts)[0] is not None) as temporary:
        renderer = GlyphRenderer(paths, image_size)
        faces = {script: script_faces(info["fonts"], renderer.tags) for script, info in manifest["scripts"].items()}
        images = np.empty((len(classes) * renderings, image_size, image_size), dtype=np.uint8)
        with progress_bar("building glyphs", len(classes), progress) as step:
            for position, class_id in enumerate(classes):
                script, code = class_id.split("/")
                images[position * renderings:(position + 1) * renderings] = renderer.render(
                    int(code[2:], 16), faces[script], renderings)
                step()
        build = {
            "benchmark": "glyphs",
            "settings": {"image_size": image_size, "renderings": renderings, **(settings or {})},
            "fonts": [{**font, "found_sha256": used["sha256"], "matches_manifest": used["sha256"] == font["sha256"]}
                      for font, used in zip(manifest["provenance"], fonts)],
            "software": _software(),
            "counts": {"classes": len(classes), "images": len(item_ids), "renderings_per_class": renderings,
                       **{split: len(ids) for split, ids in manifest["splits"].items()}},
            # The identity of the build: equal on every machine with the same fonts and FreeType.
            "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
            "items_sha256": hashlib.sha256("\n".join(item_ids).encode()).hexdigest(),
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        np.save(temporary / "images.npy", images, allow_pickle=False)
        (temporary / "items.txt").write_text("\n".join(item_ids) + "\n", encoding="utf-8")
        # The file's sha256 lets read_build() find a damaged cache without parsing it.
        build["images_file_sha256"] = file_sha256(temporary / "images.npy")
        (temporary / BUILD_FILE).write_text(json.dumps(build, indent=1) + "\n", encoding="utf-8")


def read_build(directory: Path, fonts: Sequence[Mapping[str, str]]) -> tuple[dict[str, Any] | None, str | None]:
    """``(build.json, None)`` when ``directory`` holds an intact build made from ``fonts``.

    ``(None, None)`` when there is no build; ``(None, reason)`` (one line) when it is damaged.
    """
    if not (directory / BUILD_FILE).is_file():
        return None, None
    try:
        build = json.loads((directory / BUILD_FILE).read_text(encoding="utf-8"))
        if file_sha256(directory / "images.npy") != build["images_file_sha256"]:
            return None, "images.npy differs from build.json"
        if len((directory / "items.txt").read_text(encoding="utf-8").split()) != build["counts"]["images"]:
            return None, "items.txt does not list the images of build.json"
        if [font["found_sha256"] for font in build["fonts"]] != [font["sha256"] for font in fonts]:
            return None, "made from other font files than the ones found"
    except (OSError, ValueError, KeyError, TypeError) as error:  # a JSONDecodeError is a ValueError
        return None, f"{type(error).__name__}: {' '.join(str(error).split())}"
    return build, None


def _software() -> dict[str, str]:
    import platform

    import PIL
    from PIL import features

    return {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
            "freetype": features.version("freetype2") or ""}
