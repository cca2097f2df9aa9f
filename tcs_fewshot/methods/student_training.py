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
from tcs_fewshot.methods.student_context import StudentContext, trained_blocks


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


class StudentMethod:
    """Base of our student methods: ``fit(support_ids, labels) -> self``, ``predict(query_ids) -> logits``.

    Subclasses implement ``build_head(batch, features) -> nn.Module`` (``features`` the
    ``(N, student_dim)`` L2-normalised student features of the batch, to initialise the head in
    closed form), ``loss(head, features, batch, rows, step) -> scalar``, and ``logits(head,
    features) -> (n, n_way)``. A method that needs the teacher's forward passes per step
    (online KD) adds them to ``teacher_forward_passes``.
    """

    name = "student"
    needs_teacher = True  # reads the cached teacher features of the support views

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None) -> None:
        self.context = context
        self.training = training or TrainingSettings()
        if self.training.steps < 0:
            raise TcsFewshotError(f"steps must be >= 0; got {self.training.steps}")
        self.teacher_forward_passes = 0
        self.loss_history: list[float] = []
        if self.training.amp and context.device != "cuda":
            raise TcsFewshotError(f"amp needs a CUDA device; this run's student methods use '{context.device}' (drop amp)")

    def warm_up(self, item_ids: Any) -> None:
        """Compute the memoised frozen outputs of ``item_ids`` for every view fit and predict read (before timing)."""
        self.context.warm_up(np.asarray(item_ids), self.training.train_layers, self.training.augmented_views)

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
        labels = np.repeat(np.asarray(support_labels, dtype=np.int64), len(views))
        if self.needs_teacher:
            teacher = torch.from_numpy(self.context.teacher_features(support_ids, views).reshape(len(labels), -1))
            self.teacher_forward_passes = len(support_ids) * len(views)  # one cached pass per image view
        else:  # the cache is not read at all
            teacher, self.teacher_forward_passes = torch.zeros(len(labels), 0), 0
        return TaskBatch(inputs.flatten(0, 1), torch.from_numpy(labels), teacher, int(labels.max()) + 1)

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
        device = torch.device(self.context.device)
        batch = _to(self.task_batch(support_ids, support_labels), device)
        self.trainable = self.context.trainable_copy(self.training.train_layers).to(device)
        with torch.no_grad():
            initial = self.student_features(batch.inputs)
        self.head = self.build_head(batch, initial).to(device)
        if device.type != "cpu":  # tensors a head-builder kept on the method (LSH planes, targets) follow it
            for key, value in vars(self).items():
                if isinstance(value, torch.Tensor):
                    setattr(self, key, value.to(device))
        head_rate, backbone_rate = self.training.rates
        groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr": rate}
                  for module, rate in ((self.trainable, backbone_rate), (self.head, head_rate))]
        groups = [group for group in groups if group["params"]]
        self.loss_history = []
        if groups and self.training.steps:
            optimiser = torch.optim.Adam(groups, weight_decay=self.training.weight_decay)
            scaler = torch.amp.GradScaler("cuda") if self.training.amp else None
            n = len(batch.labels)
            for step in range(self.training.steps):
                rows = torch.randperm(n, generator=generator)[: self.training.batch_size].to(device)
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.training.amp):
                    loss = self.loss(self.head, self.student_features(batch.inputs[rows]), batch, rows, step)
                optimiser.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimiser.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimiser)
                    scaler.update()
                self.after_step(self.head, step)
                self.loss_history.append(float(loss.detach()))
        return self

    def predict(self, query_ids: Any) -> torch.Tensor:
        """``(n_query, n_way)`` logits."""
        inputs = self.context.frozen_outputs(np.asarray(query_ids), [0], self.training.train_layers).flatten(0, 1)
        with torch.no_grad():
            return self.logits(self.head, self.student_features(inputs.to(self.context.device))).float().cpu()

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
