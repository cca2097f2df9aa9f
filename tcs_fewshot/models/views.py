"""Seeded augmented views of an image: the same view is the same pixels on every machine and run.

View 0 is the image itself. View ``k > 0`` is a random resized crop (area ``CROP_SCALE`` of the
image, aspect ratio ``CROP_RATIO``, resized back to the image's own size) followed by a
horizontal flip with probability 1/2. Its randomness comes from a numpy ``SeedSequence`` keyed
on (sha256 of the item id, ``k``), never from a global generator, so view ``k`` of an item does
not depend on which other items or views are computed, in which order, or by how many processes.
The crop box and the flip are identical everywhere; the resampled pixels are identical for the
same Pillow version (bilinear resize). The teacher's own ``transform`` is applied afterwards.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

CROP_SCALE = (0.25, 1.0)  # kept area fraction; narrower than torchvision's 0.08 so views keep the object
CROP_RATIO = (3 / 4, 4 / 3)
RECIPE = f"rrc(scale={CROP_SCALE}, ratio=(3/4, 4/3), bilinear) + hflip(p=0.5), sha256 SeedSequence v1"


def view_rng(item_id: str, view: int) -> np.random.Generator:
    """The generator of ``view`` of ``item_id``: PCG64 seeded from (sha256(item_id), view)."""
    digest = hashlib.sha256(f"tcs-fewshot/views/v1\0{item_id}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([int.from_bytes(digest[:16], "little"), int(view)]))


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` pixels of a random resized crop (torchvision's sampling rule)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # Rarely reached (very elongated images): the largest central crop within the ratio bounds.
    w, h = width, height
    if width / height < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def view_image(image: Any, item_id: str, view: int) -> Any:
    """View ``view`` of the RGB PIL ``image`` of ``item_id``, same size as ``image``; view 0 is ``image``."""
    if view == 0:
        return image
    from PIL import Image

    rng = view_rng(item_id, view)
    box = crop_box(image.width, image.height, rng)
    out = image.resize(image.size, Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out
