"""Building the glyphs benchmark's image cache: render every class, then publish atomically.

A build folder holds ``images.npy`` (``(n_items, size, size)`` uint8 ink coverage, 0 paper,
255 ink), ``items.txt`` (one item id per line, the same order) and ``build.json`` (settings,
fonts found, software versions, counts, checksums). It is written into a temporary sibling
folder and renamed into place, so a reader never sees half a build, and of two processes
building at once the first to finish wins and the other discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.data.benchmarks.glyphs_render import (
    GlyphRenderer,
    locate_fonts,
    script_faces,
    sha256_file,
)


def build_images(
    directory: Path,
    manifest: dict[str, Any],
    image_size: int,
    renderings: int,
    font_dir: Path | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> None:
    """Render ``renderings`` images of every class in ``manifest["splits"]`` into ``directory``.

    Args:
        directory: The build folder to create (must not exist yet).
        manifest: The scripts manifest (its ``splits`` may be cut to a subset of classes).
        image_size: Side of the images in px.
        renderings: Images per class.
        font_dir: Flat folder of font files instead of the installed packages.
        progress: Show a rich progress bar (on stderr) over the classes.
        settings: Extra settings to record in ``build.json``.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    started = time.perf_counter()
    fonts = manifest["provenance"]
    paths = locate_fonts(fonts, font_dir)  # the one clear error when packages are missing
    renderer = GlyphRenderer(paths, image_size)
    classes = [class_id for ids in manifest["splits"].values() for class_id in ids]
    images = np.empty((len(classes) * renderings, image_size, image_size), dtype=np.uint8)
    digits = len(str(renderings - 1))
    item_ids = [f"{c}/{k:0{digits}d}" for c in classes for k in range(renderings)]
    faces = {script: script_faces(info["fonts"], renderer.tags) for script, info in manifest["scripts"].items()}
    columns = (TextColumn("building glyphs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("classes", total=len(classes))
        for position, class_id in enumerate(classes):
            script, code = class_id.split("/")
            rows = slice(position * renderings, (position + 1) * renderings)
            images[rows] = renderer.render(int(code[2:], 16), faces[script], renderings)
            bar.advance(task)
    found = {file: sha256_file(path) for file, path in paths.items()}
    build = {
        "benchmark": "glyphs",
        "settings": {"image_size": image_size, "renderings": renderings, **(settings or {})},
        "fonts": [{**font, "found_sha256": found[font["file"]], "matches_manifest": found[font["file"]] == font["sha256"]}
                  for font in fonts],
        "software": _software(),
        "counts": {"classes": len(classes), "images": len(item_ids), "renderings_per_class": renderings,
                   **{split: len(ids) for split, ids in manifest["splits"].items()}},
        # The identity of the build: equal on every machine with the same fonts and FreeType.
        "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
        "items_sha256": hashlib.sha256("\n".join(item_ids).encode()).hexdigest(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    _write_atomically(directory, images, item_ids, build)


def _write_atomically(directory: Path, images: np.ndarray, item_ids: list[str], build: dict[str, Any]) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        np.save(temporary / "images.npy", images, allow_pickle=False)
        (temporary / "items.txt").write_text("\n".join(item_ids) + "\n", encoding="utf-8")
        # The file's sha256 lets check() find a damaged cache without parsing it.
        build["images_file_sha256"] = sha256_file(temporary / "images.npy")
        (temporary / "build.json").write_text(json.dumps(build, indent=1) + "\n", encoding="utf-8")
        os.rename(temporary, directory)
    except OSError:
        if not (directory / "build.json").is_file():  # not merely another process finishing first
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _software() -> dict[str, str]:
    import platform

    import PIL
    from PIL import features

    return {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
            "freetype": features.version("freetype2") or ""}
