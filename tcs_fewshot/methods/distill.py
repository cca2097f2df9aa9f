"""TCS on a whole split (``tcs-fewshot distill``): the paper's main setting, and the students' starting point.

    result = distill(data, teacher, FeatureCache(), build_student("conv4-32", image_size=72))
    save_student(result.student, "students/emoji-conv4-32-tcs.pt")

The teacher's cached features of every image view of the base split (one pass each, ever) fit a
:class:`CoordinateSystem` with ``components`` coordinates; the student is trained from its
initialisation to map its features linearly into those coordinates (mimicking, MSE) while a
linear classifier on the coordinates learns the base classes (cross-entropy).
``objective="ce"`` trains the same student with cross-entropy alone: the non-distilled
baseline checkpoint, trained on the same images, views and schedule.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.coordinates import CoordinateSystem
from tcs_fewshot.methods.distributed import (
    all_reduce_batch_norm,
    freeze_biases_before_batch_norm,
    init_from_environment,
    plain_batch_norm,
    sum_over_processes,
)
from tcs_fewshot.models.cache import FeatureCache
from tcs_fewshot.models.students import Student, student_resize
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.views import view_image

OBJECTIVES = ("tcs", "ce")


@dataclass(frozen=True)
class DistillSettings:
    """How a student is distilled on a split (all recorded in the checkpoint).

    Attributes:
        objective: ``tcs`` (coordinates mimicked + cross-entropy) or ``ce`` (cross-entropy only).
        split: The split whose images and labels train the student (never an evaluated one).
        views: Augmented views per image (view ids ``1..views``, plus the image itself).
        epochs: Passes over all image views.
        batch_size: Image views per step.
        learning_rate: Adam's, decayed to zero by a cosine schedule.
        weight_decay: Adam's L2 penalty.
        components: Coordinates of the split's coordinate system; ``scale`` as in :mod:`coordinates`.
        mimic_weight, ce_weight: Weights of the mimicking and classification losses.
        seed: Seeds the shuffling (the student's own initialisation is seeded by its builder).
    """

    objective: str = "tcs"
    split: str = "train"
    views: int = 8
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    components: int = 64
    scale: str = "whiten"
    mimic_weight: float = 1.0
    ce_weight: float = 1.0
    seed: int = 0


@dataclass
class DistillResult:
    """The trained student, and the mean losses per epoch (``history[e]`` a dict of floats)."""

    student: Student
    history: list[dict[str, float]] = field(default_factory=list)
    teacher_forward_passes: int = 0


class DistillNetwork(nn.Module):
    """Student and head as one module (what DistributedDataParallel wraps): images -> (coordinates, logits)."""

    def __init__(self, student: nn.Module, head: DistillHead) -> None:
        super().__init__()
        self.student, self.head = student, head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.student(images))


class DistillHead(nn.Module):
    """Student features ``(B, d)`` -> standardised -> coordinates ``(B, k)`` (or the features themselves) -> base logits."""

    def __init__(self, feature_dim: int, components: int | None, n_classes: int) -> None:
        super().__init__()
        # Standardised features: pooled ReLU features vary little around a large mean, and a
        # linear map from them to unit-variance coordinates needs weights Adam reaches too
        # slowly (with L2-normalised features the mimicking loss never left 1.0 in 4 epochs).
        self.standardise = nn.BatchNorm1d(feature_dim, affine=False)
        self.projector = nn.Linear(feature_dim, components) if components else nn.Identity()
        self.classifier = nn.Linear(components or feature_dim, n_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coordinates = self.projector(self.standardise(features))
        return coordinates, self.classifier(coordinates)


def split_items(data: BenchmarkData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(item_ids, labels 0..C-1)`` of ``split``'s classes, in index order."""
    index = data.index
    if split not in index.class_splits:
        raise TcsFewshotError(f"benchmark has no split '{split}'; its splits are {', '.join(index.class_splits)}")
    classes = list(index.class_splits[split])
    position = {name: i for i, name in enumerate(classes)}
    keep = np.array([label in position for label in index.labels.tolist()])
    return index.item_ids[keep], np.array([position[label] for label in index.labels[keep].tolist()], dtype=np.int64)


def view_tensors(data: BenchmarkData, student: Student, item_ids: np.ndarray, views: list[int]) -> torch.Tensor:
    """``(n, len(views), 3, S, S)`` uint8 images at the student's size (normalised per batch later)."""
    from torchvision.transforms.functional import pil_to_tensor

    resize = student_resize(student)  # the resampling per-task methods use, so train and test pixels match
    out = torch.empty(len(item_ids), len(views), 3, student.image_size, student.image_size, dtype=torch.uint8)
    for i, item_id in enumerate(map(str, item_ids)):
        image = data.load_image(item_id)
        for j, view in enumerate(views):
            out[i, j] = pil_to_tensor(resize(view_image(image, item_id, view)))
    return out


def distill(data: BenchmarkData, teacher: Teacher, cache: FeatureCache, student: Student,
            settings: DistillSettings | None = None, progress: Callable[[int, int, dict], None] | None = None,
            evaluated_split: str | None = "test") -> DistillResult:
    """Train ``student`` in place on ``settings.split`` and return it with its loss history.

    Args:
        progress: Called as ``progress(epoch, epochs, losses)`` after every epoch.
        evaluated_split: A split that must not be trained on (refused if it equals ``settings.split``).
    """
    settings = settings or DistillSettings()
    if settings.objective not in OBJECTIVES:
        raise TcsFewshotError(f"unknown objective '{settings.objective}'; choose one of {', '.join(OBJECTIVES)}")
    if settings.split == evaluated_split:
        raise TcsFewshotError(f"distilling on the '{settings.split}' split would train on the classes that are evaluated; use a base split")
    item_ids, labels = split_items(data, settings.split)
    views = list(range(settings.views + 1))
    teacher_features = torch.from_numpy(cache.features(teacher, data, item_ids, views=views))  # (n, V, D)
    images = view_tensors(data, student, item_ids, views)
    tcs = settings.objective == "tcs"
    system = CoordinateSystem.fit(teacher_features.flatten(0, 1), settings.components, scale=settings.scale) if tcs else None
    targets = system.coordinates(teacher_features.flatten(0, 1)).reshape(len(item_ids), len(views), -1) if tcs else None
    head = DistillHead(student.feature_dim, system.components if tcs else None, int(labels.max()) + 1)
    mean = torch.tensor(student.mean).view(1, 3, 1, 1)
    std = torch.tensor(student.std).view(1, 3, 1, 1)
    rank, world_size = init_from_environment()
    if settings.batch_size % world_size:
        raise TcsFewshotError(f"--batch-size {settings.batch_size} must be a multiple of the {world_size} processes")
    network = DistillNetwork(student.model, head).train()
    freeze_biases_before_batch_norm(network)  # their gradient is 0 exactly: rounding noise only
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(all_reduce_batch_norm(network))
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    pairs = len(item_ids) * len(views)
    steps_per_epoch = -(-pairs // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(settings.seed)  # the same order in every process
    labels_tensor = torch.from_numpy(labels)
    result = DistillResult(student, teacher_forward_passes=pairs)
    for epoch in range(settings.epochs):
        totals = torch.zeros(2, dtype=torch.float64)  # summed CE and mimicking losses of this process's rows
        order = torch.randperm(pairs, generator=generator)
        for start in range(0, pairs, settings.batch_size):
            rows = order[start:start + settings.batch_size]
            mine = rows[rank::world_size]  # this process's share of the global batch
            item, view = mine // len(views), mine % len(views)
            coordinates, logits = network((images[item, view].float() / 255 - mean) / std)
            # Sums over this share, divided by the global batch: DDP's gradient average then
            # equals the single-process gradient of the global mean.
            ce = F.cross_entropy(logits, labels_tensor[item], reduction="sum")
            mimic = F.mse_loss(coordinates, targets[item, view], reduction="sum") / coordinates.shape[1] if tcs else torch.zeros(())
            loss = (settings.ce_weight * ce + settings.mimic_weight * mimic) * world_size / len(rows)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            totals += torch.tensor([float(ce.detach()), float(mimic.detach())], dtype=torch.float64)
        totals = sum_over_processes(totals, world_size) / pairs
        result.history.append({"ce": float(totals[0]), "mimic": float(totals[1])})
        if progress is not None and rank == 0:
            progress(epoch + 1, settings.epochs, result.history[-1])
    if world_size > 1:
        plain_batch_norm(network.module)
    student.model.eval()
    student.config = {**student.config, "distilled": {**asdict(settings), "teacher": teacher.name,
                                                       "teacher_identity": teacher.identity,
                                                       "dataset_fingerprint": data.index.fingerprint,
                                                       "history": result.history}}
    return result


def distill_benchmark(benchmark: str, out: str | os.PathLike, student_spec: str = "conv4-32", *, root: str | None = None,
                      scheme: str | None = None, split_file: str | None = None,
                      teacher_spec: str = "torchvision:mobilenet_v2",
                      teacher_weights: str | None = None, image_size: int | None = None, device: str = "auto",
                      settings: DistillSettings | None = None,
                      progress: Callable[[int, int, dict], None] | None = None) -> DistillResult:
    """What ``tcs-fewshot distill`` does: load the benchmark and teacher, distil a seeded scratch student, save it to ``out``.

    ``image_size`` (px) defaults to the benchmark images' own side, at most 84.
    """
    from tcs_fewshot.data.benchmarks import open_benchmark
    from tcs_fewshot.models.students import build_student, save_student
    from tcs_fewshot.models.teachers import load_teacher, resolve_device

    settings = settings or DistillSettings()
    out = Path(out)
    if out.suffix != ".pt":
        raise TcsFewshotError(f"--out '{out}' should be a .pt file (a student checkpoint)")
    adapter, data_root = open_benchmark(benchmark, root, split_file)
    data = adapter.load(data_root, scheme)
    teacher = load_teacher(teacher_spec, teacher_weights, device=resolve_device(device))
    if image_size is None:
        image_size = min(84, data.load_image(str(data.index.item_ids[0])).width)
    torch.manual_seed(settings.seed)
    student = build_student(student_spec, image_size=image_size)
    result = distill(data, teacher, FeatureCache(), student, settings, progress)
    if init_from_environment()[0] == 0:  # under torchrun, one process writes the checkpoint
        out.parent.mkdir(parents=True, exist_ok=True)
        save_student(student, out)
    return result
