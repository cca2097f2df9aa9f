"""Image files to 8-bit RGB, one rule for every adapter that reads files.

- **Transparency** (RGBA, LA, PA, premultiplied modes, palette or greyscale images with a
  ``transparency`` entry) is composited over ``ImageOptions.background`` (white by default),
  never dropped: PIL's ``convert("RGB")`` would show whatever colour lies under the alpha,
  mostly black. Going through RGBA also avoids PIL's palette-transparency warnings.
- **Modes**: ``1`` and ``L`` become grey RGB; 16-bit greyscale (``I;16*``, and ``I`` from a PNG)
  is scaled by 255/65535 (PIL's own conversion clips it, turning almost every pixel white);
  other 32-bit ``I`` images are read as 16-bit when a value exceeds 255, as 8-bit otherwise;
  ``F`` is read as [0, 1] when its maximum is at most 1, else clipped to [0, 255]; ``CMYK``
  uses PIL's conversion (no ICC colour management: pure cyan gives (0, 255, 255)); ``P``,
  ``YCbCr`` and the rest go through ``convert``. A mode PIL cannot convert is named in one line.
- **Size**: images over ``working_pixels`` (4096 x 4096) are reduced on load by an integer
  box-filter factor (``Image.reduce``) to at most that many pixels; JPEGs are decoded reduced
  in the first place (``Image.draft``, DCT scaling by 1/2 to 1/8). A file whose decode would
  hold more than ``max_pixels`` pixels (default PIL's own limit, 89,478,485 = 0.25 GiB of RGB)
  is refused in one line naming it and the ``--max-image-pixels`` value that allows it; PIL's
  DecompressionBombError never escapes (its check is replaced by this one).
- **Damage**: a missing, unreadable or truncated file is a one-line error naming it.

Images at most ``working_pixels`` in an RGB, L or opaque palette mode come out exactly as
``convert("RGB")`` gives them. ``ImageOptions.record()`` (decoder version, background,
working size) is what determines the pixels; it keys the teacher-feature cache.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcs_fewshot.errors import TcsFewshotError

DECODER_VERSION = 1  # bump when a change here alters any decoded pixel
DEFAULT_BACKGROUND = "white"
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # PIL.Image.MAX_IMAGE_PIXELS, 89,478,485
WORKING_PIXELS = 4096 * 4096
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
PLAIN_MODES = ("RGB", "L", "P")  # converted exactly; other modes (and transparency) are listed by data check
# PIL's size limit and the warning filters are process-wide: one decode changes them at a time.
_GLOBAL_STATE = threading.RLock()


class ImageFileError(TcsFewshotError):
    """An image file that cannot be loaded: ``kind`` is missing, unreadable, corrupt, oversized or unsupported."""

    def __init__(self, path: str | os.PathLike, kind: str, reason: str, fix: str) -> None:
        self.path, self.kind, self.reason, self.fix = Path(path), kind, reason, fix
        super().__init__(f"image '{path}' is {kind} ({reason}); {fix}")

    def problem(self) -> str:
        """The line ``data check`` lists: ``<kind> image '<path>' (<reason>); <fix>``."""
        return f"{self.kind} image '{self.path}' ({self.reason}); {self.fix}"


RESTORE = "restore it from the original archive or remove it"


def parse_background(text: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """``(r, g, b)`` of a colour name (``white``), ``#rrggbb``, ``r,g,b`` or a 3-tuple."""
    from PIL import ImageColor

    if isinstance(text, (tuple, list)) and len(text) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in text):
        return (int(text[0]), int(text[1]), int(text[2]))
    value = str(text).strip()
    if value.count(",") == 2:
        value = f"rgb({value})"
    try:
        colour = ImageColor.getrgb(value)
        if not all(0 <= channel <= 255 for channel in colour):  # PIL takes rgb(300,0,0) as it is
            raise ValueError(value)
    except (ValueError, AttributeError):
        raise TcsFewshotError(f"background '{text}' is not a colour; give a name (white, black, gray), "
                              "#rrggbb or r,g,b") from None
    return colour[:3]


@dataclass(frozen=True)
class ImageOptions:
    """How image files are decoded (see the module docstring).

    Attributes:
        background: ``(r, g, b)`` that transparent pixels are composited on.
        max_pixels: Largest image (width x height, after JPEG draft scaling) decoded whole;
            larger files are refused. Not part of the cache identity: it decides only which
            files load, never their pixels.
        working_pixels: Images over this many pixels are reduced on load.
    """

    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int = DEFAULT_MAX_PIXELS
    working_pixels: int = WORKING_PIXELS

    @classmethod
    def parse(cls, background: str | tuple[int, int, int] = DEFAULT_BACKGROUND,
              max_pixels: int | None = None) -> ImageOptions:
        """Options from user values (``--background``, ``--max-image-pixels``), checked."""
        limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise TcsFewshotError(f"max image pixels must be a positive integer, got {max_pixels!r}")
        return cls(parse_background(background), limit)

    def record(self) -> dict[str, Any]:
        """What decides the decoded pixels: recorded in run manifests and keying the feature cache."""
        return {"decoder": DECODER_VERSION, "background": "#{:02x}{:02x}{:02x}".format(*self.background),
                "working_pixels": self.working_pixels}


class ImageLoader:
    """item id (a path relative to ``root``) -> RGB PIL image, decoded by ``options`` when called."""

    def __init__(self, root: str | os.PathLike, options: ImageOptions | None = None) -> None:
        self.root = Path(root)
        self.options = options or ImageOptions()

    def __call__(self, item_id: str) -> Any:
        return open_rgb(self.root / item_id, self.options)

    def with_options(self, options: ImageOptions) -> ImageLoader:
        return ImageLoader(self.root, options)


def open_rgb(path: str | os.PathLike, options: ImageOptions | None = None) -> Any:
    """The RGB ``PIL.Image`` of an image file; a one-line TcsFewshotError naming a file that cannot be read."""
    return decode(path, options or ImageOptions())[0]


def decode(path: str | os.PathLike, options: ImageOptions) -> tuple[Any, str, tuple[int, int], list[str]]:
    """``(RGB image, mode of the file, (width, height) of the file, PIL's warnings about it)``.

    PIL's warnings (damaged EXIF or TIFF tags, ...) are returned, not printed: ``data check``
    lists them as notes. Errors as :func:`open_rgb`.
    """
    with _GLOBAL_STATE, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rgb, mode, size = _decode(path, options)
        finally:
            ours = [w for w in caught if Path(w.filename).parent.name == "PIL"]
            others = [w for w in caught if w not in ours]
    for w in others:  # another thread's warning, caught while this one decoded: shown as it would have been
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rgb, mode, size, list(dict.fromkeys(" ".join(str(w.message).split()) for w in ours))


def _decode(path: str | os.PathLike, options: ImageOptions) -> tuple[Any, str, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    try:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit below replaces PIL's
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    except FileNotFoundError:
        raise ImageFileError(path, "missing", "no such file", "run: tcs-fewshot data check") from None
    except (PermissionError, IsADirectoryError) as error:
        raise ImageFileError(path, "unreadable", error.strerror or type(error).__name__,
                             "fix its permissions or remove it") from None
    except UnidentifiedImageError:
        raise ImageFileError(path, "corrupt", "not an image file PIL can identify", RESTORE) from None
    except Exception as error:  # plugins raise many types for damaged headers
        raise _damaged(path, error) from None
    with image:
        mode, size = image.mode + ("+transparency" if "transparency" in image.info else ""), image.size
        _admit(image, path, options)
        try:
            rgb = _reduce(to_rgb(image, options.background, _reduce_to(options.working_pixels)), options.working_pixels)
        except TcsFewshotError:
            raise
        except ValueError as error:
            if "conversion" not in str(error):
                raise _damaged(path, error) from None
            raise ImageFileError(path, "unsupported", f"mode {image.mode}: {error}", "save it as RGB") from None
        except MemoryError:
            raise ImageFileError(path, "oversized", f"{size[0]}x{size[1]}: out of memory decoding it",
                                 "lower --max-image-pixels to refuse such files, or shrink it") from None
        except Exception as error:  # truncated data, bad CRCs, broken zlib streams, ...
            raise _damaged(path, error) from None
    return rgb, mode, size


def _damaged(path: str | os.PathLike, error: BaseException) -> ImageFileError:
    reason = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, EOFError) and "truncated" not in reason:
        reason = f"truncated: {reason}"
    return ImageFileError(path, "corrupt", reason, RESTORE)


def _admit(image: Any, path: str | os.PathLike, options: ImageOptions) -> None:
    """Set a JPEG's draft scale so its decode fits the working size; refuse what still exceeds ``max_pixels``."""
    width, height = image.size
    if width * height > options.working_pixels and image.format == "JPEG":
        factor = math.sqrt(width * height / options.working_pixels)
        image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    decoded = image.size[0] * image.size[1]  # draft changed image.size to the scaled decode
    if decoded > options.max_pixels:
        raise ImageFileError(
            path, "oversized", f"{width}x{height}, {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{options.max_pixels} pixels decoded whole",
            f"allow it with --max-image-pixels {decoded} (about {decoded * len(image.getbands()) / 1e6:.0f} MB "
            "while it loads), or shrink the file")


def _reduce_to(working_pixels: int) -> Callable[[Any], Any]:
    return lambda image: _reduce(image, working_pixels)


def _reduce(image: Any, working_pixels: int) -> Any:
    """``image`` box-reduced by the smallest integer factor that brings it to at most ``working_pixels``."""
    width, height = image.size
    if width * height <= working_pixels:
        return image
    factor = math.ceil(math.sqrt(width * height / working_pixels))
    while math.ceil(width / factor) * math.ceil(height / factor) > working_pixels:  # reduce keeps partial blocks
        factor += 1
    return image.reduce(factor)


def to_rgb(image: Any, background: tuple[int, int, int] = (255, 255, 255),
           shrink: Callable[[Any], Any] = lambda image: image) -> Any:
    """8-bit RGB of a PIL image of any mode, transparency composited on ``background``.

    ``shrink`` is applied where it is cheapest (to greyscale before it becomes RGB).
    """
    from PIL import Image

    transparency = image.info.get("transparency")
    if image.mode in WIDE_MODES:
        grey, alpha = _wide_to_grey(image, transparency)
        image = Image.fromarray(grey, "L") if alpha is None else Image.merge(
            "LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))
    elif image.mode == "1":
        image = image.convert("LA" if transparency is not None else "L")
    elif transparency is not None and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")  # PIL turns the transparent colour or palette entries into alpha
    if image.mode == "L":
        return shrink(image).convert("RGB")
    if image.mode in ("LA", "La", "PA", "RGBa", "RGBA") or "A" in image.getbands():
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
    return image.convert("RGB")  # a mode PIL cannot convert raises ValueError: decode names the file


def _wide_to_grey(image: Any, transparency: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """8-bit grey ``(H, W)`` uint8 of a 16/32-bit or float image, and alpha where a value is transparent."""
    values = np.asarray(image)
    alpha = None if transparency is None else np.where(values == transparency, 0, 255).astype(np.uint8)
    if image.mode == "F":
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scaled = finite * 255.0 if finite.size and finite.max() <= 1.0 else finite
    elif image.mode.startswith("I;16") or image.format == "PNG" or (values.size and values.max() > 255):
        scaled = values.astype(np.float64) * (255.0 / 65535.0)
    else:
        scaled = values.astype(np.float64)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), alpha


def describe_mode(mode: str, options: ImageOptions | None = None) -> str:
    """How a file of ``mode`` (as :func:`decode` reports it) becomes RGB, in a few words."""
    background = (options or ImageOptions()).record()["background"]
    base = mode.split("+")[0]
    if "+transparency" in mode or base in ("RGBA", "LA", "PA", "La", "RGBa"):
        return f"transparency composited on {background}"
    return {"1": "1-bit, black and white", "CMYK": "PIL's CMYK to RGB formula, no ICC colour management",
            "I": "32-bit greyscale, scaled by 255/65535 (PNG, or a value over 255) or read as 8-bit",
            "F": "float greyscale, [0, 1] scaled by 255 or clipped to [0, 255]"}.get(
        base, "16-bit greyscale, scaled by 255/65535" if base.startswith("I;16") else f"{base} converted to RGB by PIL")


def with_options(loader: Any, options: ImageOptions) -> Any:
    """``loader`` decoding by ``options`` when it reads files (an :class:`ImageLoader`), else unchanged."""
    return loader.with_options(options) if isinstance(loader, ImageLoader) else loader


__all__ = ["DEFAULT_BACKGROUND", "DEFAULT_MAX_PIXELS", "ImageFileError", "ImageLoader", "ImageOptions", "WORKING_PIXELS",
           "decode", "describe_mode", "open_rgb", "parse_background", "to_rgb", "with_options"]
