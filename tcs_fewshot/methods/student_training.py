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
from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.student_context import StudentContext


@dataclass(frozen=True)
class TrainingSettings:
    """How the student is fine-tuned on one task (shared by every student method).

    Attributes:
        steps: Adam steps per task.
        learning_rate: Adam learning rate of the head (and of the trainable student layers).
        batch_size: Support views per step (all of them when fewer).
        train_layers: ``head`` (student frozen, its features memoised: fastest on a CPU),
            ``last`` (its last stage trains too) or ``all``.
        weight_decay: Adam's L2 penalty.
        augmented_views: Train on the cached augmented views (view ids ``1..context.views``)
            besides the images themselves.
        logit_scale: Inverse temperature of classifiers on the L2-normalised student features.
        threads: torch threads while fitting; ``None``: 1 for ``head`` (tiny matrices, where
            more threads only add synchronisation: 30x slower on 2 busy cores), else torch's own.
    """

    steps: int = 50
    learning_rate: float = 0.01
    batch_size: int = 128
    train_layers: str = "head"
    weight_decay: float = 5e-4
    augmented_views: bool = True
    logit_scale: float = 10.0
    threads: int | None = None


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


def task_seed(item_ids: np.ndarray) -> int:
    """A seed that depends only on the task's support items, so a task trains the same way in any run."""
    digest = hashlib.sha256("\0".join(map(str, item_ids)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class StudentMethod:
    """Base of our student methods: ``fit(support_ids, labels) -> self``, ``predict(query_ids) -> logits``.

    Subclasses implement ``build_head(batch, features) -> nn.Module`` (``features`` the
    ``(N, student_dim)`` L2-normalised student features of the batch, to initialise the head in
    closed form), ``loss(head, features, batch, rows, step) -> scalar``, and ``logits(head,
    features) -> (n, n_way)``. A method that needs the teacher's forward passes per step
    (online KD) adds them to ``teacher_forward_passes``.
    """

    name = "student"

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None) -> None:
        self.context = context
        self.training = training or TrainingSettings()
        if self.training.steps < 0:
            raise TcsFewshotError(f"steps must be >= 0; got {self.training.steps}")
        self.teacher_forward_passes = 0
        self.loss_history: list[float] = []

    # -- hooks -------------------------------------------------------------------------------
    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        raise NotImplementedError

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, head: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return head(features)

    def after_step(self, head: nn.Module, step: int) -> None:
        """Called after every optimiser step (TCS prunes its mask here)."""

    # -- the loop ------------------------------------------------------------------------------
    def student_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(n, student_dim)`` L2-normalised features of frozen outputs ``inputs``."""
        return F.normalize(self.trainable(inputs), dim=1)

    def task_batch(self, support_ids: np.ndarray, support_labels: np.ndarray) -> TaskBatch:
        views = self.context.view_ids(self.training.augmented_views)
        inputs = self.context.frozen_outputs(support_ids, views, self.training.train_layers)
        teacher = self.context.teacher_features(support_ids, views)
        self.teacher_forward_passes = len(support_ids) * len(views)  # one cached pass per image view
        labels = np.repeat(np.asarray(support_labels, dtype=np.int64), len(views))
        return TaskBatch(inputs.flatten(0, 1), torch.from_numpy(labels), torch.from_numpy(teacher.reshape(len(labels), -1)),
                         int(labels.max()) + 1)

    def fit(self, support_ids: Any, support_labels: Any) -> StudentMethod:
        threads = self.training.threads or (1 if self.training.train_layers == "head" else torch.get_num_threads())
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return self._fit(support_ids, support_labels)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, support_ids: Any, support_labels: Any) -> StudentMethod:
        support_ids = np.asarray(support_ids)
        if support_ids.dtype.kind not in "US":
            raise TcsFewshotError(f"{type(self).__name__} takes item ids (its inputs are images); got a {support_ids.dtype} array")
        generator = torch.Generator().manual_seed(task_seed(support_ids))  # batch order
        # Heads that draw random weights (LSH planes, random bases) draw from their own stream,
        # so a task trains the same way whatever the caller's global torch RNG holds.
        self.task_generator = torch.Generator().manual_seed(task_seed(support_ids))
        batch = self.task_batch(support_ids, support_labels)
        self.trainable = self.context.trainable_copy(self.training.train_layers)
        with torch.no_grad():
            initial = self.student_features(batch.inputs)
        self.head = self.build_head(batch, initial)
        parameters = [p for p in [*self.trainable.parameters(), *self.head.parameters()] if p.requires_grad]
        self.loss_history = []
        if parameters and self.training.steps:
            optimiser = torch.optim.Adam(parameters, lr=self.training.learning_rate, weight_decay=self.training.weight_decay)
            n = len(batch.labels)
            for step in range(self.training.steps):
                rows = torch.randperm(n, generator=generator)[: self.training.batch_size]
                loss = self.loss(self.head, self.student_features(batch.inputs[rows]), batch, rows, step)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                self.after_step(self.head, step)
                self.loss_history.append(float(loss.detach()))
        return self

    def predict(self, query_ids: Any) -> torch.Tensor:
        """``(n_query, n_way)`` logits."""
        inputs = self.context.frozen_outputs(np.asarray(query_ids), [0], self.training.train_layers).flatten(0, 1)
        with torch.no_grad():
            return self.logits(self.head, self.student_features(inputs))

    def describe(self) -> dict[str, Any]:
        return {"method": type(self).__name__, "training": asdict(self.training)}


def nearest_mean_layer(features: torch.Tensor, labels: torch.Tensor, n_way: int, scale: float = 1.0) -> nn.Linear:
    """A linear layer equal to ``scale`` x nearest class mean's scores (``w_c = 2 s m_c``, ``b_c = -s |m_c|^2``).

    ``features`` ``(N, d)``. On L2-normalised features squared distances are at most 4, so a
    ``scale`` (inverse temperature) near 10 starts cross-entropy from confident, not uniform, logits.
    """
    one_hot = F.one_hot(labels, n_way).float()
    means = (one_hot.T @ features) / one_hot.sum(0, keepdim=True).T
    layer = nn.Linear(features.shape[1], n_way)
    with torch.no_grad():
        layer.weight.copy_(2 * scale * means)
        layer.bias.copy_(-scale * (means**2).sum(1))
    return layer
