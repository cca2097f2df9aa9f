"""Rendering letters of the ``glyphs`` benchmark from the Noto fonts that PyPI packages ship.

A *face* is one font file at one point of its variable axes (weight, and width where the
file has that axis). A rendering is a letter drawn in one face at ``SUPERSAMPLE`` times the
output size, cropped to its ink, centred by that bounding box, given a small seeded affine
jitter (rotation, shear, scale, aspect, shift), and box-downsampled to ``size x size``.

Images are ``uint8`` ink coverage: 0 is paper, 255 is full ink. Everything here is
deterministic given the font files, Pillow's FreeType and numpy (all recorded by the caller).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcs_fewshot.errors import TcsFewshotError

SUPERSAMPLE = 4  # render at 4x and box-average down: smooth edges after the affine warp
EM_FRACTION = 0.75  # font size (em) as a fraction of the canvas side
FIT_FRACTION = 0.8  # glyphs larger than this fraction of the side are shrunk to fit it
WEIGHTS = (200, 300, 400, 600, 800)  # wght axis points: ExtraLight .. ExtraBold
WIDTHS = (75.0, 100.0)  # wdth axis points, where the file has that axis: Condensed, Normal
REFERENCE = {"wght": 400.0, "wdth": 100.0}  # the face used to find blank and duplicate letters
JITTER_SEED = 0x676C7970  # "glyp": salts every rendering's SeedSequence
DEFAULT_RENDERINGS = 20  # images per class: >= 5 shots + 15 queries
RENDERER_VERSION = 1  # bump when rendering changes, so cached builds are not reused


@dataclass(frozen=True)
class Face:
    """One font file at one point of its variation axes, e.g. ``{"wght": 600, "wdth": 75}``."""

    file: str
    axes: tuple[tuple[str, float], ...]


def package_module(package: str) -> str:
    """Import name of a font distribution: ``fontpkg-noto-sans`` -> ``fontpkg_noto_sans``."""
    return package.replace("-", "_")


def locate_fonts(fonts: Sequence[Mapping[str, str]], font_dir: Path | None = None) -> dict[str, Path]:
    """Font file name -> path, for every entry ``{"package", "version", "file"}`` of ``fonts``.

    Files come from the installed packages (``<module>/files/<file>``), or from the flat
    directory ``font_dir`` when given. One error names every missing package at once.
    """
    found, missing = {}, {}
    for font in fonts:
        if font_dir is not None:
            path = Path(font_dir) / font["file"]
        else:
            spec = importlib.util.find_spec(package_module(font["package"]))
            locations = list(spec.submodule_search_locations or []) if spec else []
            path = Path(locations[0]) / "files" / font["file"] if locations else Path()
        if path.is_file():
            found[font["file"]] = path
        else:
            missing[font["package"]] = font["version"]
    if missing:
        where = f"in '{font_dir}'" if font_dir is not None else "installed"
        pins = " ".join(f"{package}=={version}" for package, version in sorted(missing.items()))
        raise TcsFewshotError(
            f"the glyphs benchmark needs Noto font packages that are not {where}; run: pip install {pins}"
        )
    return found


def axis_tags(path: Path) -> tuple[str, ...]:
    """Variation axis tags of a font file, in the order FreeType expects their values."""
    from fontTools.ttLib import TTFont

    font = TTFont(path, lazy=True)
    return tuple(axis.axisTag for axis in font["fvar"].axes) if "fvar" in font else ()


def script_faces(files: Sequence[str], tags: Mapping[str, Sequence[str]]) -> list[Face]:
    """Every face of a script: each file x ``WEIGHTS`` x ``WIDTHS`` (widths where the file has wdth)."""
    faces = []
    for file in files:
        widths = WIDTHS if "wdth" in tags[file] else (None,)
        for weight in WEIGHTS:
            for width in widths:
                axes = {"wght": float(weight)} if width is None else {"wght": float(weight), "wdth": width}
                faces.append(Face(file, tuple(sorted(axes.items()))))
    return faces


class GlyphRenderer:
    """Renders letters at ``size x size`` px; opened font faces are cached per :class:`Face`."""

    def __init__(self, paths: Mapping[str, Path], size: int = 32) -> None:
        self.paths = dict(paths)
        self.size = int(size)
        self.big = self.size * SUPERSAMPLE
        self._fonts: dict[Face, object] = {}
        self._tags = {file: axis_tags(path) for file, path in self.paths.items()}

    @property
    def tags(self) -> dict[str, tuple[str, ...]]:
        return self._tags

    def font(self, face: Face):
        if face not in self._fonts:
            from PIL import ImageFont

            # BASIC layout: one code point -> its cmap glyph (Arabic isolated form), the same
            # with or without libraqm, so checksums do not depend on how Pillow was built.
            font = ImageFont.truetype(
                str(self.paths[face.file]), round(EM_FRACTION * self.big), layout_engine=ImageFont.Layout.BASIC
            )
            values = dict(face.axes)
            tags = self._tags[face.file]
            if tags:
                font.set_variation_by_axes([values.get(tag, REFERENCE.get(tag, 0.0)) for tag in tags])
            self._fonts[face] = font
        return self._fonts[face]

    def crop(self, face: Face, codepoint: int):
        """The letter's ink at ``SUPERSAMPLE`` x resolution as an ``L`` image, or None if blank."""
        from PIL import Image, ImageDraw

        font = self.font(face)
        left, top, right, bottom = font.getbbox(chr(codepoint), anchor="ls")
        pad = 2
        canvas = Image.new("L", (max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad), 0)
        ImageDraw.Draw(canvas).text((pad - left, pad - top), chr(codepoint), font=font, fill=255, anchor="ls")
        box = canvas.getbbox()
        return canvas.crop(box) if box else None

    def place(self, crop, rng: np.random.Generator | None) -> np.ndarray:
        """``(size, size)`` uint8: ``crop`` centred by its bbox, jittered by ``rng`` (None: no jitter)."""
        from PIL import Image

        width, height = crop.size
        scale = min(1.0, FIT_FRACTION * self.big / max(width, height))
        angle, shear, aspect, shift = 0.0, 0.0, 1.0, np.zeros(2)
        if rng is not None:
            angle = np.deg2rad(rng.uniform(-8.0, 8.0))
            shear = rng.uniform(-0.12, 0.12)
            scale *= rng.uniform(0.9, 1.05)
            aspect = rng.uniform(0.93, 1.07)
            shift = rng.uniform(-1.0, 1.0, size=2) * SUPERSAMPLE  # up to one output pixel
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        forward = scale * rotation @ np.array([[aspect, shear], [0.0, 1.0 / aspect]])
        inverse = np.linalg.inv(forward)
        # PIL maps each output pixel back to the input: in = inverse @ (out - centre_out) + centre_in.
        offset = np.array([width / 2, height / 2]) - inverse @ (np.full(2, self.big / 2) + shift)
        coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
        warped = crop.transform((self.big, self.big), Image.AFFINE, coefficients, resample=Image.BILINEAR)
        return np.asarray(warped.reduce(SUPERSAMPLE), dtype=np.uint8)

    def render(self, codepoint: int, faces: Sequence[Face], renderings: int) -> np.ndarray:
        """``(renderings, size, size)`` uint8 renderings of one letter.

        Rendering ``k`` uses face ``faces[k * len(faces) // renderings]`` (spread over all faces
        when there are more faces than renderings, each repeated when fewer), and jitter from
        ``SeedSequence([JITTER_SEED, codepoint], spawn_key=(k,))``: a pure function of (class, k).
        """
        images = np.empty((renderings, self.size, self.size), dtype=np.uint8)
        crops: dict[Face, object] = {}
        for k in range(renderings):
            face = faces[k * len(faces) // renderings]
            if face not in crops:
                crops[face] = self.crop(face, codepoint)
            if crops[face] is None:
                raise TcsFewshotError(
                    f"U+{codepoint:04X} renders blank in {face.file}; the installed font differs from the "
                    "manifest's: install the font package versions named in data_manifests/glyphs/scripts.json"
                )
            rng = np.random.default_rng(np.random.SeedSequence([JITTER_SEED, codepoint], spawn_key=(k,)))
            images[k] = self.place(crops[face], rng)
        return images

    def reference(self, codepoint: int, files: Sequence[str]) -> list[np.ndarray | None]:
        """Unjittered ``(size, size)`` renderings in each file's regular face; None where blank."""
        images = []
        for file in files:
            axes = tuple(sorted((tag, REFERENCE[tag]) for tag in self._tags[file] if tag in REFERENCE))
            crop = self.crop(Face(file, axes), codepoint)
            images.append(None if crop is None else self.place(crop, None))
        return images
