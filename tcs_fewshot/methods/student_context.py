"""What every student method shares: images, cached teacher features, and the initial student.

Student methods (TCS, KD, FitNets, fine-tuning) consume :class:`StudentItems`: item ids with the
:class:`StudentContext` that reads their images and cached teacher views. The context is data,
not a parameter: it comes with the items, as features come with a probe's inputs.

    context = StudentContext(data, teacher, FeatureCache(), build_student("conv4-32", ...), views=4)
    tcs = TCS(components=16).fit(context.items(support_ids), support_labels)
    logits = tcs.predict(context.items(query_ids))

The student is split into a frozen part and a trainable part (``train_layers``). The frozen
part's output per (item, view) is computed once and kept in memory, so that a method that only
trains the last stage (or only a head) does not run the frozen convolutions again on every task:
on a CPU this is what makes 600 tasks of per-task distillation affordable.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.student_blocks import GlobalPool, split_blocks
from tcs_fewshot.models.students import Student, student_transform
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.views import view_image

TRAIN_LAYERS = ("head", "last-N", "all")  # "last" is kept as an alias of "last-1" for old configs


def trained_blocks(train_layers: str) -> int | None:
    """Blocks that ``train_layers`` trains: 0 for ``head``, N for ``last-N`` (``last``: 1), ``None`` for ``all``."""
    if train_layers == "head":
        return 0
    if train_layers == "all":
        return None
    match = re.fullmatch(r"last(?:-(\d+))?", train_layers)
    if match is None or int(match.group(1) or 1) < 1:
        raise TcsFewshotError(f"unknown train_layers '{train_layers}'; choose head, last-N (N >= 1) or all")
    return int(match.group(1) or 1)


def split_student(model: nn.Module, train_layers: str) -> tuple[nn.Module, nn.Module]:
    """``(frozen, trainable)`` with ``trainable(frozen(x)) == model(x)``.

    ``head``: the whole student is frozen (only a head on its features trains); ``last-N``: its
    last N blocks train (:func:`tcs_fewshot.models.student_blocks.student_blocks` says what a
    block is for each family; ``last`` is ``last-1``); ``all``: nothing is frozen.
    """
    blocks = trained_blocks(train_layers)
    if blocks == 0:
        return model, nn.Identity()
    if blocks is None:
        return nn.Identity(), model
    return split_blocks(model, blocks)


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
        device: Where the trainable copy, the heads and the training tensors go (``cpu`` or
            ``cuda``; resolve ``auto`` with :func:`tcs_fewshot.models.teachers.resolve_device`).
            The frozen part runs there too; its memoised outputs stay on the CPU.
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

    def items(self, item_ids: Sequence[str] | np.ndarray) -> StudentItems:
        """``item_ids`` with this context: what student methods' ``fit``, ``predict`` and ``warm_up`` take."""
        return StudentItems(np.asarray(item_ids), self)

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
            model = self.student.model if self.device == "cpu" else copy.deepcopy(self.student.model).to(self.device)
            frozen, trainable = split_student(model, train_layers)
            self._splits[train_layers] = (frozen.eval(), trainable)
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
        """A fresh copy of the trainable part on ``device``, batch norm kept in eval mode (few-shot batches are tiny)."""
        module = copy.deepcopy(self.split(train_layers)[1])
        return module.eval()

    def warm_up(self, item_ids: Sequence[str], train_layers: str, with_augmented: bool = True) -> None:
        """Compute (once per run) the frozen outputs of ``item_ids`` for every view a fit or predict reads."""
        self.frozen_outputs(item_ids, self.view_ids(with_augmented), train_layers)

    def describe(self) -> dict[str, Any]:
        """JSON-able settings for the run manifest."""
        return {"student": self.student.config, "teacher": self.teacher.name, "views": self.views}


@dataclass(frozen=True, eq=False)
class StudentItems:
    """Item ids ``(n,)`` and the :class:`StudentContext` that reads their images and cached teacher views."""

    ids: np.ndarray
    context: StudentContext

    def __len__(self) -> int:
        return len(self.ids)


__all__ = ["GlobalPool", "StudentContext", "StudentItems", "TRAIN_LAYERS", "split_student", "trained_blocks"]
