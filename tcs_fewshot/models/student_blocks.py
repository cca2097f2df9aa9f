"""A student's own block structure, so that ``train_layers = "last-N"`` means its last N blocks.

:func:`student_blocks` cuts a backbone into ``(stem, [block_1 .. block_K], tail)`` with
``tail(block_K(...block_1(stem(x)))) == model(x)``:

* Conv4: its 4 conv-BN-ReLU-pool blocks (tail: global average pooling);
* ResNet-12: its 4 residual blocks;
* torchvision MobileNetV2 (and other ``features``-based torchvision nets: MobileNetV3,
  EfficientNet): every entry of ``features`` after the first conv, so MobileNetV2's 17
  inverted-residual blocks plus its final 1x1 conv (18 blocks); tail: pooling and classifier;
* torchvision and timm ResNets: ``layer1``..``layer4``;
* timm EfficientNet-family models (``mobilenetv2_100``, ``efficientnet_b0``, ...): timm's
  stages (``blocks[i]``) plus the final ``conv_head``/``bn2``;
* timm models with ``stem``/``stages`` (ConvNeXt, RegNet, ...): their stages, the final norm in the tail.
"""

from __future__ import annotations

import torch
from torch import nn

from tcs_fewshot.errors import TcsFewshotError


class GlobalPool(nn.Module):
    """``(B, C, H, W)`` -> ``(B, C)`` by averaging, as the students' own forward does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def student_blocks(model: nn.Module) -> tuple[nn.Module, list[nn.Module], nn.Module]:
    """``(stem, blocks, tail)`` of ``model`` (shared modules, not copies); see the module docstring."""
    from tcs_fewshot.models.students import Conv4, ResNet12

    if isinstance(model, Conv4):
        layers = list(model.features)
        return nn.Identity(), [nn.Sequential(*layers[i:i + 4]) for i in range(0, len(layers), 4)], GlobalPool()
    if isinstance(model, ResNet12):
        return nn.Identity(), list(model.layers), GlobalPool()
    found = _torchvision_blocks(model) or _timm_blocks(model)
    if found is None:
        raise TcsFewshotError(f"train_layers 'last-N' does not know the blocks of a {type(model).__name__} student; "
                              "use 'head' or 'all'")
    return found


def _torchvision_blocks(model: nn.Module) -> tuple[nn.Module, list[nn.Module], nn.Module] | None:
    from torchvision.models import ResNet

    if isinstance(model, ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return stem, [model.layer1, model.layer2, model.layer3, model.layer4], nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    if type(model).__module__.startswith("torchvision.") and isinstance(getattr(model, "features", None), nn.Sequential) \
            and hasattr(model, "classifier"):
        pool = getattr(model, "avgpool", None) or nn.AdaptiveAvgPool2d(1)  # MobileNetV2 pools in forward()
        return model.features[0], list(model.features[1:]), nn.Sequential(pool, nn.Flatten(1), model.classifier)
    return None


def _timm_blocks(model: nn.Module) -> tuple[nn.Module, list[nn.Module], nn.Module] | None:
    if not type(model).__module__.startswith("timm."):
        return None
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    if isinstance(model, ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        return stem, [model.layer1, model.layer2, model.layer3, model.layer4], nn.Sequential(model.global_pool, model.fc)
    if isinstance(model, EfficientNet):
        head = nn.Sequential(model.conv_head, model.bn2)
        return nn.Sequential(model.conv_stem, model.bn1), [*model.blocks, head], nn.Sequential(model.global_pool, model.classifier)
    stem, stages = getattr(model, "stem", None), getattr(model, "stages", None)
    if isinstance(stem, nn.Module) and isinstance(stages, nn.Sequential) and hasattr(model, "forward_head"):
        norm = getattr(model, "norm_pre", None) or getattr(model, "final_conv", None) or nn.Identity()
        return stem, list(stages), nn.Sequential(norm, _Head(model))
    return None


class _Head(nn.Module):
    """timm's ``forward_head`` of a model, holding only its head modules (so copies do not copy the backbone)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.pool = getattr(model, "head", None) or nn.Sequential(getattr(model, "global_pool", nn.Identity()),
                                                                  getattr(model, "fc", nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def split_blocks(model: nn.Module, trained_blocks: int) -> tuple[nn.Module, nn.Module]:
    """``(frozen, trainable)``: all but the last ``trained_blocks`` blocks, then those and the tail."""
    stem, blocks, tail = student_blocks(model)
    if not 1 <= trained_blocks <= len(blocks):
        raise TcsFewshotError(f"train_layers 'last-{trained_blocks}': a {type(model).__name__} student has "
                              f"{len(blocks)} blocks; use last-1 .. last-{len(blocks)} or 'all'")
    cut = len(blocks) - trained_blocks
    return nn.Sequential(stem, *blocks[:cut]), nn.Sequential(*blocks[cut:], tail)
