"""Which of a ViT's tokens make a teacher's feature: its CLS token, the mean of its patch tokens,
or both side by side (DINOv2's linear-probe feature, Oquab et al. 2023), after which block.

One forward pass gives all three: ``forward_features`` returns the final layer norm's tokens
``(B, prefix + patches, D)``, where ``prefix`` is the CLS token plus any register tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.teacher_spec import POOLS, check_pool


def pool_tokens(tokens: torch.Tensor, pool: str, prefix: int = 1) -> torch.Tensor:
    """``(B, prefix + patches, D)`` tokens -> ``(B, D)`` (``cls``, ``mean``) or ``(B, 2D)`` (``cls+mean``).

    ``mean`` averages the patch tokens only (registers and CLS excluded); ``cls+mean`` concatenates
    ``[cls, mean]`` unscaled.
    """
    cls, mean = tokens[:, 0], tokens[:, prefix:].mean(1)
    return {"cls": cls, "mean": mean, "cls+mean": torch.cat([cls, mean], 1)}[check_pool(pool)]


class TokenPooledViT(nn.Module):
    """A timm ViT whose ``forward(x)``, ``x`` ``(B, 3, H, W)``, returns :func:`pool_tokens` of its tokens.

    ``block`` (1 to depth; default the last) reads that block's output through the final layer
    norm, as DINOv2 reads intermediate layers; the blocks after it are not run. ``pool`` defaults
    to the model's own pooling (``token`` -> ``cls``, ``avg`` -> ``mean``).
    """

    def __init__(self, vit: nn.Module, pool: str | None = None, block: int | None = None) -> None:
        super().__init__()
        if not hasattr(vit, "forward_intermediates") or not getattr(vit, "num_prefix_tokens", 0):
            raise TcsFewshotError(f"teacher options pool and block need a ViT with a CLS token (a timm "
                                  f"VisionTransformer); {type(vit).__name__} has none")
        if pool is None:
            pool = {"token": "cls", "avg": "mean"}.get(getattr(vit, "global_pool", None))
            if pool is None:
                raise TcsFewshotError(f"give the teacher option pool ({', '.join(POOLS)}) for this ViT's pooling "
                                      f"'{getattr(vit, 'global_pool', None)}'")
        depth = len(vit.blocks)
        if block is not None and not 1 <= block <= depth:
            raise TcsFewshotError(f"teacher option block={block} is outside this ViT's blocks 1 to {depth}")
        self.vit, self.pool, self.block = vit, check_pool(pool), block or depth
        self.feature_dim = vit.num_features * (2 if pool == "cls+mean" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix = self.vit.num_prefix_tokens
        if self.block == len(self.vit.blocks):
            tokens = self.vit.forward_features(x)
        else:
            ((patches, prefix_tokens),) = self.vit.forward_intermediates(
                x, indices=[self.block - 1], return_prefix_tokens=True, norm=True, stop_early=True,
                output_fmt="NLC", intermediates_only=True)
            tokens = torch.cat([prefix_tokens, patches], 1)
        return pool_tokens(tokens, self.pool, prefix)
