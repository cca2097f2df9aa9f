"""What every student method shares: images, cached teacher features, and the initial student.

Student methods (TCS, KD, FitNets, fine-tuning) receive item ids from the evaluator and read
everything else through a :class:`StudentContext`:

    context = StudentContext(data, teacher, FeatureCache(), build_student("conv4-32", ...), views=4)
    tcs = TCS(context).fit(support_ids, support_labels)

The student is split into a frozen part and a trainable part (``train_layers``). The frozen
part's output per (item, view) is computed once and kept in memory, so that a method that only
trains the last stage (or only a head) does not run the frozen convolutions again on every task:
on a CPU this is what makes 600 tasks of per-task distillation affordable.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.cache import FeatureCache
from tcs_fewshot.models.students import Student, student_transform
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.views import view_image

TRAIN_LAYERS = ("head", "last-N", "all")


class GlobalPool(nn.Module):
    """``(B, C, H, W)`` -> ``(B, C)`` by averaging, as the students' own forward does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def student_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    """``(stem, blocks, tail)`` with ``Sequential(*stem, *blocks, *tail)(x) == model(x)``.

    ``blocks`` are the backbone's own units, the ones ``last-N`` counts: Conv4's four
    conv blocks, ResNet-12's four residual blocks, the inverted-residual blocks plus the final
    1x1 conv of torchvision's MobileNets and EfficientNets (their ``features``), and the four
    stages of torchvision's ResNets.
    """
    from tcs_fewshot.models.students import Conv4, ResNet12

    if isinstance(model, Conv4):
        return [], [model.features[i:i + 4] for i in range(0, len(model.features), 4)], [GlobalPool()]
    if isinstance(model, ResNet12):
        return [], list(model.layers), [GlobalPool()]
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if isinstance(features, nn.Sequential) and hasattr(model, "avgpool") and classifier is not None:
        return [features[0]], list(features[1:]), [model.avgpool, nn.Flatten(1), classifier]
    if isinstance(features, nn.Sequential) and classifier is not None and type(model).__name__ == "MobileNetV2":
        return [features[0]], list(features[1:]), [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), classifier]
    stages = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(stage, nn.Module) for stage in stages) and hasattr(model, "fc"):
        return [model.conv1, model.bn1, model.relu, model.maxpool], stages, [model.avgpool, nn.Flatten(1), model.fc]
    raise TcsFewshotError(f"train_layers 'last-N' knows conv4, resnet12 and torchvision MobileNet/EfficientNet/ResNet "
                          f"students, not {type(model).__name__}; use 'head' or 'all'")


def last_blocks(train_layers: str) -> int | None:
    """N of ``last-N`` (``last`` is ``last-1``); None for ``head`` and ``all``; a one-line error otherwise."""
    if train_layers in ("head", "all"):
        return None
    if train_layers == "last":
        return 1
    prefix, _, count = train_layers.partition("-")
    if prefix != "last" or not count.isdigit() or int(count) < 1:
        raise TcsFewshotError(f"unknown train_layers '{train_layers}'; choose head, last-N (N >= 1, e.g. last-2) or all")
    return int(count)


def split_student(model: nn.Module, train_layers: str) -> tuple[nn.Module, nn.Module]:
    """``(frozen, trainable)`` with ``trainable(frozen(x)) == model(x)``.

    ``head``: the whole student is frozen (only a head on its features trains); ``last-N``: its
    last N blocks (see :func:`student_blocks`) and what follows them train; ``all``: nothing is
    frozen. The parts share the model's modules (no copies).
    """
    n = last_blocks(train_layers)
    if train_layers == "head":
        return model, nn.Identity()
    if train_layers == "all":
        return nn.Identity(), model
    stem, blocks, tail = student_blocks(model)
    if n > len(blocks):
        raise TcsFewshotError(f"train_layers '{train_layers}': this student has {len(blocks)} blocks; use last-1 .. last-{len(blocks)} or all")
    return nn.Sequential(*stem, *blocks[:-n]), nn.Sequential(*blocks[-n:], *tail)


@dataclass(eq=False)
class StudentContext:
    """Shared inputs of student methods; one per run, so memoised outputs are shared by all methods.

    Attributes:
        data: The benchmark the item ids belong to.
        teacher: The frozen teacher whose cached features the methods distil.
        cache: Where teacher features are read from (computed once per image view).
        student: The initial student (each task fine-tunes a fresh copy of it).
        views: Augmented views per image used for training (view ids ``1..views``; view 0, the
            image itself, is always used too). Each view is one cached teacher pass.
        device: Where the trainable part and the heads train (``cpu`` or ``cuda``); the frozen
            part's memoised outputs stay on the CPU and move per task.
    """

    data: BenchmarkData
    teacher: Teacher
    cache: FeatureCache
    student: Student
    views: int = 4
    device: str = "cpu"
    _memo: dict[tuple[str, str, int], torch.Tensor] = field(default_factory=dict, repr=False)
    _splits: dict[str, tuple[nn.Module, nn.Module]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.views < 0:
            raise TcsFewshotError(f"views must be >= 0 (augmented views per image); got {self.views}")
        self._transform = student_transform(self.student)

    def view_ids(self, with_augmented: bool = True) -> list[int]:
        return list(range(self.views + 1)) if with_augmented else [0]

    def teacher_features(self, item_ids: Sequence[str], views: Sequence[int]) -> np.ndarray:
        """``(n, len(views), teacher_dim)`` float32 teacher features from the cache."""
        return self.cache.features(self.teacher, self.data, list(map(str, item_ids)), views=views)

    def images(self, item_ids: Sequence[str], views: Sequence[int]) -> torch.Tensor:
        """``(n, len(views), 3, S, S)`` float images as the student takes them (S its image size, px)."""
        out = []
        for item_id in map(str, item_ids):
            image = self.data.load_image(item_id)
            out.append(torch.stack([self._transform(view_image(image, item_id, view)) for view in views]))
        return torch.stack(out)

    def split(self, train_layers: str) -> tuple[nn.Module, nn.Module]:
        """The frozen part (shared, eval mode) and the trainable part (to be copied per task)."""
        if train_layers not in self._splits:
            frozen, trainable = split_student(self.student.model, train_layers)
            self._splits[train_layers] = (frozen.to(self.device).eval(), trainable)
        return self._splits[train_layers]

    def frozen_outputs(self, item_ids: Sequence[str], views: Sequence[int], train_layers: str) -> torch.Tensor:
        """``(n, len(views), ...)`` outputs of the frozen part, each (item, view) computed once per run."""
        frozen, _ = self.split(train_layers)
        keys = [(train_layers, str(item_id), int(view)) for item_id in item_ids for view in views]
        missing: dict[str, list[int]] = {}  # item -> its missing views, so each image is decoded once
        for key in dict.fromkeys(keys):
            if key not in self._memo:
                missing.setdefault(key[1], []).append(key[2])
        items = list(missing)
        for start in range(0, len(items), 16):
            batch = [(item_id, view) for item_id in items[start:start + 16] for view in missing[item_id]]
            images = torch.cat([self.images([item_id], missing[item_id])[0] for item_id in items[start:start + 16]])
            with torch.inference_mode():
                outputs = frozen(images.to(self.device)).cpu()
            for (item_id, view), output in zip(batch, outputs):
                self._memo[(train_layers, item_id, view)] = output.clone()
        stacked = torch.stack([self._memo[key] for key in keys])
        return stacked.reshape(len(item_ids), len(views), *stacked.shape[1:])

    def trainable_copy(self, train_layers: str) -> nn.Module:
        """A fresh copy of the trainable part, batch norm kept in eval mode (few-shot batches are tiny)."""
        module = copy.deepcopy(self.split(train_layers)[1])
        return module.eval()

    def describe(self) -> dict[str, Any]:
        """JSON-able settings for the run manifest."""
        return {"student": self.student.config, "teacher": self.teacher.name, "views": self.views, "device": self.device}
