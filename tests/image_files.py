"""Image files the tests write: every mode, and a huge bilevel PNG written without holding its pixels."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def class_colour(class_number: int, noise_seed, shape: tuple[int, ...], spread: int = 6) -> np.ndarray:
    """``shape`` uint8 pixels: one colour per class plus noise in ``[-spread, spread]`` seeded by ``noise_seed``,
    so raw-pixel NCM tells the classes apart (the adapter tests' images)."""
    colour = np.random.default_rng(class_number).integers(20, 236, size=3)
    noise = np.random.default_rng(noise_seed).integers(-spread, spread + 1, size=shape)
    return (colour + noise).astype(np.uint8)


def write_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A black 1-bit greyscale PNG of ``width`` x ``height``, streamed row by row: a 20000 x 10000
    image (200 megapixels) takes a few KB on disk, ~50 ms and no pixel buffer to write."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def sixteen_bit_grey(value: int, size=(6, 4)) -> Image.Image:
    """An ``I;16`` image of one 16-bit value."""
    return Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16))


def cmyk(colour=(255, 0, 0, 0), size=(16, 16)) -> Image.Image:
    return Image.new("CMYK", size, colour)


def transparent_rgba(size=(8, 8)) -> Image.Image:
    """Fully transparent pixels whose hidden colour is dark red, with one opaque blue pixel at (0, 0)."""
    image = Image.new("RGBA", size, (120, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    return image


def palette_with_transparency(size=(8, 8)) -> Image.Image:
    """A palette image of entry 0 (transparent red) with entry 1 (opaque green) at (0, 0)."""
    image = Image.new("P", size, 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    return image


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to ``keep`` of its bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])
    return path
