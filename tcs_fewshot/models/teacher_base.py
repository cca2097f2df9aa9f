"""What a teacher is, for every part of the toolkit that uses one (the feature cache, TCS, KD).

A teacher is a frozen pretrained network with its own preprocessing. It maps an RGB PIL image
to a ``(feature_dim,)`` float feature (pooled penultimate layer by default). ``identity`` names
exactly what produces the numbers, so cached features are reused only when it matches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Teacher:
    """A loaded teacher.

    Attributes:
        name: Registry spec it was loaded from, e.g. ``torchvision:mobilenet_v2`` or
            ``timm:vit_small_patch14_dinov2``.
        model: ``torch.nn.Module`` in eval mode; ``model(x)`` with ``x`` a ``(B, 3, H, W)``
            float tensor returns ``(B, feature_dim)`` features.
        transform: RGB ``PIL.Image`` -> ``(3, H, W)`` float tensor: the model's own
            preprocessing (resolution, crop, mean, std from its data config).
        feature_dim: Width of the features.
        identity: sha256 hex of (name, weights sha256, preprocessing config, layer).
        pretraining: The data the weights were trained on (``ImageNet-1k``, ``LVD-142M``, ...),
            so reports can flag overlap with a benchmark.
        config: What ``identity`` hashes, for the run manifest (resolution, mean, std, crop,
            layer, weights path and sha256).
    """

    name: str
    model: Any
    transform: Callable[[Any], Any]
    feature_dim: int
    identity: str
    pretraining: str
    config: dict[str, Any] = field(default_factory=dict)
