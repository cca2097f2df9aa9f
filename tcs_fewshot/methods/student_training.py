"""The one per-task training loop every student method uses, so that methods differ only in their losses.

A student method fits on support item ids: it reads the frozen student outputs and the cached
teacher features of every support image view, builds a head, and trains the trainable part of
the student with the head for ``steps`` Adam steps. TCS, logit KD, FitNets, LSH-L2 and plain
fine-tuning are subclasses that only say how the head is built and what the loss is, so their
costs and accuracies are compared on the same loop, the same views and the same step count.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.closed_form import nearest_mean_layer
from tcs_fewshot.methods.student_context import StudentItems, trained_blocks


@dataclass(frozen=True)
class TrainingSettings:
    """How the student is fine-tuned on one task (shared by every student method).

    Attributes:
        steps: Adam steps per task.
        head_lr: Adam learning rate of the head (a few thousand fresh parameters).
        backbone_lr: Adam learning rate of the trainable student blocks (``last-N``/``all``);
            100x lower than the head's, because a pretrained backbone is ruined at a head's rate.
        learning_rate: Deprecated: one rate for the head and the backbone, as before both
            existed (an old config that sets it keeps its numbers); ``None``: use the two above.
        batch_size: Support views per step (all of them when fewer).
        train_layers: ``head`` (student frozen, its features memoised: fastest on a CPU),
            ``last-N`` (its last N blocks train too; ``last`` = ``last-1``) or ``all``.
        weight_decay: Adam's L2 penalty.
        augmented_views: Train on the cached augmented views (view ids ``1..context.views``)
            besides the images themselves.
        logit_scale: Inverse temperature of classifiers on the L2-normalised student features.
        threads: torch threads while fitting; ``None``: 1 for ``head`` (tiny matrices, where
            more threads only add synchronisation: 30x slower on 2 busy cores), else torch's own.
        amp: Mixed precision (float16 autocast, gradient scaling) on CUDA; refused on a CPU.
    """

    steps: int = 50
    head_lr: float = 0.01
    backbone_lr: float = 1e-4
    learning_rate: float | None = None
    batch_size: int = 128
    train_layers: str = "head"
    weight_decay: float = 5e-4
    augmented_views: bool = True
    logit_scale: float = 10.0
    threads: int | None = None
    amp: bool = False

    def __post_init__(self) -> None:
        trained_blocks(self.train_layers)  # a bad value is a one-line error now, not at the first task
        rates = {"head_lr": self.head_lr, "backbone_lr": self.backbone_lr, "learning_rate": self.learning_rate}
        bad = next((key for key, value in rates.items() if value is not None and not value > 0), None)
        if bad:
            raise TcsFewshotError(f"{bad} must be > 0; got {rates[bad]}")

    @property
    def rates(self) -> tuple[float, float]:
        """``(head rate, backbone rate)`` after the deprecated ``learning_rate``."""
        if self.learning_rate is not None:
            return self.learning_rate, self.learning_rate
        return self.head_lr, self.backbone_lr


@dataclass
class TaskBatch:
    """One task's training tensors, views flattened into rows (N = n_support x n_views).

    Attributes:
        inputs: ``(N, ...)`` frozen student outputs.
        labels: ``(N,)`` int64 support labels in ``0..n_way-1``.
        teacher: ``(N, teacher_dim)`` float32 cached teacher features of the same image views.
        n_way: Classes in the task.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    teacher: torch.Tensor
    n_way: int


def _to(batch: TaskBatch, device: torch.device) -> TaskBatch:
    """``batch`` with its tensors on ``device`` (the same objects on the CPU, so CPU numbers do not change)."""
    if device.type == "cpu":
        return batch
    return TaskBatch(batch.inputs.to(device), batch.labels.to(device), batch.teacher.to(device), batch.n_way)


def task_seed(item_ids: np.ndarray) -> int:
    """A seed that depends only on the task's support items, so a task trains the same way in any run."""
    digest = hashlib.sha256("\0".join(map(str, item_ids)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


TEACHER_USES = ("none", "cached-views", "every-batch")


def as_items(items: Any, method: Any) -> StudentItems:
    """``items`` if they are :class:`StudentItems`, else a one-line error saying how to make them."""
    if isinstance(items, StudentItems):
        return items
    raise TcsFewshotError(f"{type(method).__name__} reads images through a StudentContext: pass context.items(item_ids), "
                          f"not a {type(items).__name__}")


def check_device(settings: TrainingSettings, device: str) -> None:
    """Refuse ``amp`` off CUDA in one line."""
    if settings.amp and device != "cuda":
        raise TcsFewshotError(f"amp needs a CUDA device; this run's student methods use '{device}' (drop amp)")


class StudentMethod(BaseEstimator):
    """Base of our student methods, scikit-learn shaped.

    ``__init__`` stores parameters only (the :class:`TrainingSettings` and the method's
    options); ``fit(support, labels, unlabelled=None) -> self`` validates them and sets the
    fitted state (``context_``, ``trainable_``, ``head_``, ``history_``,
    ``teacher_forward_passes_``, ...); ``predict(query) -> logits``. ``support``, ``query`` and
    ``unlabelled`` are :class:`StudentItems` (``context.items(ids)``): the images and teacher
    views come with the data, not with the method. ``get_params``/``set_params`` come from
    scikit-learn's ``BaseEstimator``, so ``sklearn.base.clone`` works.

    Subclasses implement ``build_head(batch, features) -> nn.Module`` (``features`` the
    ``(N, student_dim)`` L2-normalised student features of the batch, to initialise the head in
    closed form), ``loss(head, features, batch, rows, step) -> {term name: weighted scalar}``
    (summed for the step; every term is logged per step in ``history_``) and ``logits(head,
    features) -> (n, n_way)``. They declare ``teacher_use``: ``none`` (the cache is never read),
    ``cached-views`` (one cached teacher pass per training image view) or ``every-batch`` (the
    teacher runs on every step's batch, online KD); the loop counts ``teacher_forward_passes_``
    from it.
    """

    teacher_use = "cached-views"
    accepts_unlabelled = False  # fit(..., unlabelled=) mimics the teacher on those items too (TCS)

    def __init__(self, training: TrainingSettings | None = None) -> None:
        self.training = training

    @property
    def settings(self) -> TrainingSettings:
        """``training``, or the defaults when it is ``None``."""
        return self.training if self.training is not None else TrainingSettings()

    @property
    def teacher_forward_passes(self) -> int:
        """Teacher image-view evaluations of the last fit (what the evaluator records per task; 0 before any fit)."""
        return getattr(self, "teacher_forward_passes_", 0)

    @property
    def losses_(self) -> list[float]:
        """The summed loss of every step of the last fit."""
        return [row["loss"] for row in self.history_]

    def warm_up(self, items: StudentItems) -> None:
        """Compute the memoised frozen outputs of ``items`` for every view fit and predict read (before timing)."""
        items = as_items(items, self)
        items.context.warm_up(items.ids, self.settings.train_layers, self.settings.augmented_views)

    def fit_threads(self) -> int | None:
        """torch threads the runner should fit with: ``training.threads``, else 1 for ``head`` (tiny matrices,
        where more threads only add synchronisation: 30x slower on 2 busy cores), else ``None`` (torch's own)."""
        return self.settings.threads or (1 if self.settings.train_layers == "head" else None)

    # -- hooks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse bad parameters in one line (called by ``fit``; subclasses add theirs)."""
        if self.teacher_use not in TEACHER_USES:
            raise TcsFewshotError(f"{type(self).__name__}.teacher_use must be one of {', '.join(TEACHER_USES)}")
        if self.settings.steps < 0:
            raise TcsFewshotError(f"steps must be >= 0; got {self.settings.steps}")

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        raise NotImplementedError

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def logits(self, head: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return head(features)

    def after_step(self, head: nn.Module, step: int) -> None:
        """Called after every optimiser step (TCS prunes its mask here)."""

    # -- the loop ------------------------------------------------------------------------------
    def student_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(n, student_dim)`` L2-normalised features of frozen outputs ``inputs``."""
        return F.normalize(self.trainable_(inputs), dim=1)

    def task_rows(self, item_ids: np.ndarray, labels: np.ndarray) -> TaskBatch:
        """The training rows of ``item_ids`` (every view), with their teacher features when ``teacher_use`` reads them."""
        views = self.context_.view_ids(self.settings.augmented_views)
        inputs = self.context_.frozen_outputs(item_ids, views, self.settings.train_layers)
        labels = np.repeat(np.asarray(labels, dtype=np.int64), len(views))
        if self.teacher_use != "none":
            teacher = torch.from_numpy(self.context_.teacher_features(item_ids, views).reshape(len(labels), -1))
        else:  # the cache is not read at all
            teacher = torch.zeros(len(labels), 0)
        return TaskBatch(inputs.flatten(0, 1), torch.from_numpy(labels), teacher, 0)

    def task_batch(self, support_ids: np.ndarray, support_labels: np.ndarray,
                   unlabelled_ids: np.ndarray | None = None) -> TaskBatch:
        """The support rows, then those of ``unlabelled_ids`` (label -1, which cross-entropy ignores)."""
        batch = self.task_rows(support_ids, support_labels)
        n_way = int(batch.labels.max()) + 1
        if unlabelled_ids is None:
            return TaskBatch(batch.inputs, batch.labels, batch.teacher, n_way)
        extra = self.task_rows(unlabelled_ids, np.full(len(unlabelled_ids), -1))
        return TaskBatch(torch.cat([batch.inputs, extra.inputs]), torch.cat([batch.labels, extra.labels]),
                         torch.cat([batch.teacher, extra.teacher]), n_way)

    def fit(self, support: StudentItems, support_labels: Any, unlabelled: StudentItems | None = None) -> StudentMethod:
        """Train on the support items (and, when given, mimic the teacher on the ``unlabelled`` items too)."""
        self.validate()
        support = as_items(support, self)
        check_device(self.settings, support.context.device)
        self.context_ = support.context
        support_ids = support.ids
        if unlabelled is not None and not self.accepts_unlabelled:
            raise TcsFewshotError(f"{type(self).__name__} does not train on unlabelled items; fit it without unlabelled=")
        unlabelled_ids = None if unlabelled is None else as_items(unlabelled, self).ids
        generator = torch.Generator().manual_seed(task_seed(support_ids))  # batch order
        # Heads that draw random weights (LSH planes, random bases) draw from their own stream,
        # so a task trains the same way whatever the caller's global torch RNG holds.
        self.task_generator_ = torch.Generator().manual_seed(task_seed(support_ids))
        device = torch.device(self.context_.device)
        batch = _to(self.task_batch(support_ids, support_labels, unlabelled_ids), device)
        self.trainable_ = self.context_.trainable_copy(self.settings.train_layers).to(device)
        with torch.no_grad():
            initial = self.student_features(batch.inputs)
        self.head_ = self.build_head(batch, initial).to(device)
        if device.type != "cpu":  # tensors a head-builder kept on the method (LSH planes, targets) follow it
            for key, value in vars(self).items():
                if isinstance(value, torch.Tensor):
                    setattr(self, key, value.to(device))
        head_rate, backbone_rate = self.settings.rates
        groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr": rate}
                  for module, rate in ((self.trainable_, backbone_rate), (self.head_, head_rate))]
        groups = [group for group in groups if group["params"]]
        self.history_: list[dict[str, float]] = []
        batch_rows = 0
        if groups and self.settings.steps:
            optimiser = torch.optim.Adam(groups, weight_decay=self.settings.weight_decay)
            scaler = torch.amp.GradScaler("cuda") if self.settings.amp else None
            n = len(batch.labels)
            for step in range(self.settings.steps):
                rows = torch.randperm(n, generator=generator)[: self.settings.batch_size].to(device)
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.settings.amp):
                    terms = self.loss(self.head_, self.student_features(batch.inputs[rows]), batch, rows, step)
                    loss = sum(terms.values())
                optimiser.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimiser.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimiser)
                    scaler.update()
                self.after_step(self.head_, step)
                batch_rows += len(rows)
                self.history_.append({"step": step, "loss": float(loss.detach()),
                                      **{name: float(term.detach()) for name, term in terms.items()}})
        self.teacher_forward_passes_ = {"none": 0, "cached-views": len(batch.teacher), "every-batch": batch_rows}[self.teacher_use]
        return self

    def predict(self, query: StudentItems) -> torch.Tensor:
        """``(n_query, n_way)`` logits."""
        query = as_items(query, self)
        inputs = query.context.frozen_outputs(query.ids, [0], self.settings.train_layers).flatten(0, 1)
        with torch.no_grad():
            return self.logits(self.head_, self.student_features(inputs.to(query.context.device))).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"method": type(self).__name__, "training": asdict(self.settings)}


__all__ = ["StudentItems", "StudentMethod", "TaskBatch", "TrainingSettings", "as_items", "check_device", "nearest_mean_layer", "task_seed"]
