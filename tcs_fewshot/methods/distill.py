"""Distillation on a whole split (``tcs-fewshot distill``): the paper's main setting, and the students' starting point.

    result = distill(data, teacher, FeatureCache(), build_student("torchvision:mobilenet_v2", image_size=64))
    save_student(result.student, "students/emoji-tcs.pt")

Every objective (:mod:`distill_objectives`: ``tcs``, ``ce``, ``kd``, ``fitnets``) trains on one
loop: the same images and fixed augmented views, epochs, optimiser, seed and ``train_layers``,
so their students differ only in what they learn from. The teacher's features come from the
cache (one pass per image, or per image view with ``target_views="matched"``), except for
``kd`` with ``online=True``, which runs the teacher on every batch as KD usually does. The
loss history keeps each named term per epoch, beside the validation split's student-NCM score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.coordinates import CoordinateSystem
from tcs_fewshot.methods.distill_settings import DistillSettings
from tcs_fewshot.methods.distill_objectives import (
    ClassifierObjective,
    FitNetsObjective,
    KDObjective,
    TCSObjective,
)
from tcs_fewshot.methods.distributed import (
    all_reduce_batch_norm,
    freeze_biases_before_batch_norm,
    init_from_environment,
    plain_batch_norm,
    sum_over_processes,
)
from tcs_fewshot.methods.closed_form import teacher_probe_logits
from tcs_fewshot.methods.probes import ncm_task_accuracies
from tcs_fewshot.methods.student_context import split_student
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.students import Student, student_resize
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.views import view_image


@dataclass
class DistillResult:
    """The trained student; per epoch the mean loss terms and validation score (``history[e]``)."""

    student: Student
    history: list[dict[str, float]] = field(default_factory=list)
    teacher_forward_passes: int = 0


class DistillNetwork(nn.Module):
    """Student, standardisation and objective as one module (what DistributedDataParallel wraps).

    ``forward(images (B, 3, S, S), rows (B,))`` -> named loss terms, each summed over the batch.
    """

    def __init__(self, student: nn.Module, feature_dim: int, objective: nn.Module) -> None:
        super().__init__()
        self.student, self.objective = student, objective
        # Standardised features: pooled features vary little around a large mean, and a linear
        # map from them to unit-variance targets needs weights Adam reaches too slowly.
        self.standardise = nn.BatchNorm1d(feature_dim, affine=False)

    def forward(self, images: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.objective(self.standardise(self.student(images)), rows)


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
    """Train ``student`` in place on ``settings.split`` and return it with its history.

    Args:
        progress: Called as ``progress(epoch, epochs, record)`` after every epoch.
        evaluated_split: A split that must not be trained on or validated on.
    """
    settings = settings or DistillSettings()
    for role, split in (("distilling on", settings.split), ("validating on", settings.val_split)):
        if split is not None and split == evaluated_split:
            raise TcsFewshotError(f"{role} the '{split}' split would use the classes that are evaluated; use a base or validation split")
    device = torch.device(settings.device)
    item_ids, labels = split_items(data, settings.split)
    views = list(range(settings.views + 1))
    teacher_views = views if settings.target_views == "matched" else [0]
    teacher_features = None  # online KD embeds every batch itself; ce never looks at the teacher
    if settings.objective in ("tcs", "fitnets") or (settings.objective == "kd" and not settings.online):
        teacher_features = torch.from_numpy(cache.features(teacher, data, item_ids, views=teacher_views))  # (n, Vt, D)
        if settings.target_views == "plain":
            teacher_features = teacher_features.expand(-1, len(views), -1)
    labels_tensor = torch.from_numpy(labels).repeat_interleave(len(views))  # one row per (item, view)
    objective = build_objective(settings, student.feature_dim, labels_tensor, teacher_features, torch.from_numpy(labels))
    images = view_tensors(data, student, item_ids, views)
    validation = _validation(data, student, settings)
    rank, world_size = init_from_environment()
    if settings.batch_size % world_size:
        raise TcsFewshotError(f"--batch-size {settings.batch_size} must be a multiple of the {world_size} processes")
    frozen, _ = split_student(student.model, settings.train_layers)
    frozen.requires_grad_(False)
    network = DistillNetwork(student.model, student.feature_dim, objective).to(device)
    mean = torch.tensor(student.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(student.std, device=device).view(1, 3, 1, 1)
    if settings.head_init == "ridge" and hasattr(objective, "initialise_head"):
        objective.initialise_head(_standardised_features(network, frozen, images, mean, std, settings.batch_size).cpu())
        objective.to(device)
    freeze_biases_before_batch_norm(network)  # their gradient is 0 exactly: rounding noise only
    wrapped = network
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(all_reduce_batch_norm(network), broadcast_buffers=False)  # BN stats are all-reduced
    groups = [{"params": [p for p in student.model.parameters() if p.requires_grad], "lr": settings.backbone_lr},
              {"params": list(objective.parameters()), "lr": settings.head_lr}]
    optimiser = torch.optim.Adam([g for g in groups if g["params"]], weight_decay=settings.weight_decay)
    pairs = len(item_ids) * len(views)
    steps_per_epoch = -(-pairs // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(settings.seed)  # the same order in every process
    online = OnlineTeacher(data, teacher, item_ids, views, torch.from_numpy(labels), settings) if settings.online else None
    passes = 0 if teacher_features is None else len(item_ids) * len(teacher_views)
    if online is not None:
        passes = len(item_ids)  # the probe's plain images, then every batch below
    result = DistillResult(student)
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    if validation is not None:  # epoch 0: the student as it came, the score distillation must beat
        result.history.append({"epoch": 0, "val_accuracy": validation(student.model)})
        best = (result.history[0]["val_accuracy"], copy.deepcopy(student.model.state_dict())) if settings.keep == "best-val" else None
    for epoch in range(settings.epochs):
        wrapped.train()
        frozen.eval()  # frozen layers keep their batch-norm statistics
        totals: dict[str, torch.Tensor] = {}
        order = torch.randperm(pairs, generator=generator)
        for start in range(0, pairs, settings.batch_size):
            rows = order[start:start + settings.batch_size]
            mine = rows[rank::world_size]  # this process's share of the global batch
            if online is not None:
                objective.online_logits = online.logits(mine).to(device)
                passes += len(mine) * world_size
            batch = (images[mine // len(views), mine % len(views)].to(device).float() / 255 - mean) / std
            with torch.autocast("cuda", enabled=settings.amp):
                terms = wrapped(batch, mine.to(device))
            # Sums over this share, divided by the global batch: DDP's gradient average then
            # equals the single-process gradient of the global mean.
            loss = sum(terms.values()) * world_size / len(rows)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if settings.selection:
                objective.accumulate_relevance()
            optimiser.step()
            schedule.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, torch.zeros((), dtype=torch.float64)) + float(value.detach())
        names = sorted(totals)
        summed = sum_over_processes(torch.stack([totals[n] for n in names]), world_size) / pairs
        record = {name: float(value) for name, value in zip(names, summed)}
        if settings.selection and epoch + 1 >= settings.prune_start:
            record["selected"] = objective.prune(settings.prune_fraction, settings.min_components)
        if validation is not None:
            record["val_accuracy"] = validation(student.model)
            if settings.keep == "best-val" and (best is None or record["val_accuracy"] > best[0]):
                best = (record["val_accuracy"], copy.deepcopy(student.model.state_dict()))
        record["epoch"] = epoch + 1
        result.history.append(record)
        if progress is not None and rank == 0:
            progress(epoch + 1, settings.epochs, record)
    if world_size > 1:
        plain_batch_norm(network)
    if best is not None:
        student.model.load_state_dict(best[1])
    student.model.cpu().eval().requires_grad_(True)
    result.teacher_forward_passes = passes
    student.config = {**student.config, "distilled": {**asdict(settings), "teacher": teacher.name,
                                                       "teacher_identity": teacher.identity,
                                                       "dataset_fingerprint": data.index.fingerprint,
                                                       "kd_probe": "cosine nearest class mean of the teacher's plain-image features" if settings.objective == "kd" else None,
                                                       "teacher_forward_passes": passes,
                                                       "history": result.history}}
    return result


def _standardised_features(network: DistillNetwork, frozen: nn.Module, images: torch.Tensor, mean: torch.Tensor,
                           std: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(n * V, d)`` standardised features of every training row (row ``i * V + v``), as the loop first sees them.

    The student runs as in training (batch norm on batch statistics, frozen layers in eval
    mode), without gradients; its batch-norm running statistics are restored afterwards.
    """
    saved = copy.deepcopy(network.student.state_dict())
    network.student.train()
    frozen.eval()
    parameter = next(network.student.parameters())
    flat = images.reshape(-1, *images.shape[2:])
    with torch.no_grad():
        features = torch.cat([network.student(((flat[s:s + batch_size].to(parameter.device).float() / 255) - mean) / std)
                              for s in range(0, len(flat), batch_size)]).double()
    network.student.load_state_dict(saved)
    centred = features - features.mean(0)
    return (centred / (centred.pow(2).mean(0) + network.standardise.eps).sqrt()).float()


def build_objective(settings: DistillSettings, feature_dim: int, labels: torch.Tensor, teacher: torch.Tensor | None,
                    image_labels: torch.Tensor) -> nn.Module:
    """The head of ``settings.objective``; ``teacher`` ``(n, V, D)`` per image view, ``labels`` ``(n * V,)``."""
    if teacher is None:
        return (KDObjective(feature_dim, labels, None, settings.temperature, settings.mimic_weight, settings.ce_weight)
                if settings.objective == "kd" else ClassifierObjective(feature_dim, labels, 1.0))
    flat = teacher.reshape(-1, teacher.shape[-1])
    if settings.objective == "tcs":
        # One coordinate system fitted on the distinct teacher features (plain targets repeat per view).
        distinct = teacher[:, 0] if settings.target_views == "plain" else flat
        system = CoordinateSystem.fit(distinct, settings.components, scale=settings.scale, basis=settings.basis,
                                      generator=torch.Generator().manual_seed(settings.seed))
        return TCSObjective(feature_dim, labels, system, flat, settings.mimic_weight, settings.ce_weight)
    if settings.objective == "kd":
        logits = None
        if not settings.online:
            logits = teacher_probe_logits(flat, teacher[:, 0], image_labels, int(image_labels.max()) + 1, settings.teacher_scale)
        return KDObjective(feature_dim, labels, logits, settings.temperature, settings.mimic_weight, settings.ce_weight)
    if settings.objective == "fitnets":
        return FitNetsObjective(feature_dim, labels, flat, settings.mimic_weight, settings.ce_weight)
    return ClassifierObjective(feature_dim, labels, 1.0)


class OnlineTeacher:
    """Teacher base-class logits of training rows from a fresh teacher pass over their views (``kd --online``)."""

    def __init__(self, data: BenchmarkData, teacher: Teacher, item_ids: np.ndarray, views: list[int],
                 labels: torch.Tensor, settings: DistillSettings) -> None:
        self.data, self.teacher, self.item_ids, self.views, self.settings = data, teacher, item_ids, views, settings
        self.labels = labels
        self.plain: torch.Tensor | None = None

    def features(self, pairs: list[tuple[str, int]]) -> torch.Tensor:
        parameter = next(self.teacher.model.parameters())
        images = torch.stack([self.teacher.transform(view_image(self.data.load_image(i), i, v)) for i, v in pairs])
        with torch.inference_mode():
            return self.teacher.model(images.to(parameter.device, parameter.dtype)).float().cpu()

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        if self.plain is None:  # the probe's class means come from the plain images, embedded once
            self.plain = torch.cat([self.features([(str(i), 0) for i in self.item_ids[s:s + 64]])
                                    for s in range(0, len(self.item_ids), 64)])
        pairs = [(str(self.item_ids[r // len(self.views)]), self.views[r % len(self.views)]) for r in rows.tolist()]
        n_classes = int(self.labels.max()) + 1
        return teacher_probe_logits(self.features(pairs), self.plain, self.labels, n_classes, self.settings.teacher_scale)


def _validation(data: BenchmarkData, student: Student, settings: DistillSettings) -> Callable[[nn.Module], float] | None:
    """``score(model) -> mean accuracy (%)`` of student NCM on ``val_tasks`` 5-way 5-shot tasks of ``val_split``."""
    if not settings.val_split or not settings.val_tasks or settings.val_split not in data.index.class_splits:
        return None
    ways = min(5, len(data.index.class_splits[settings.val_split]))
    spec = TaskSpec(split=settings.val_split, ways=max(ways, 2), shots=settings.val_shots, queries=settings.val_queries, seed=settings.seed)
    try:
        tasks = sample_tasks(data.index, spec, settings.val_tasks)
    except TcsFewshotError as error:
        raise TcsFewshotError(f"cannot score the '{settings.val_split}' split during distillation ({error}); "
                              "set val_tasks = 0 to turn validation off") from None
    ids = sorted({str(i) for task in tasks for i in (*task.support_ids, *task.query_ids)})
    images = view_tensors(data, student, np.array(ids), [0])[:, 0]
    mean, std = torch.tensor(student.mean).view(1, 3, 1, 1), torch.tensor(student.std).view(1, 3, 1, 1)

    def score(model: nn.Module) -> float:
        parameter = next(model.parameters())
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            features = torch.cat([model(((images[s:s + 128].float() / 255 - mean) / std).to(parameter.device)).float().cpu()
                                  for s in range(0, len(images), 128)])
        model.train(was_training)
        features = F.normalize(features, dim=1).numpy()
        return 100 * float(np.mean(ncm_task_accuracies(features, ids, tasks)))

    return score
