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
from tcs_fewshot.methods.student_context import StudentContext, last_blocks


@dataclass(frozen=True)
class TrainingSettings:
    """How the student is fine-tuned on one task (shared by every student method).

    Attributes:
        steps: Adam steps per task.
        head_lr: Adam learning rate of the method's head (classifier, projector, regressor).
        backbone_lr: Adam learning rate of the trainable student layers: far below the head's,
            since a pretrained backbone is ruined at a head's rate.
        batch_size: Support views per step (all of them when fewer).
        train_layers: ``head`` (student frozen, its features memoised: fastest on a CPU),
            ``last-N`` (its last N blocks train; see :func:`student_blocks`) or ``all``.
        weight_decay: Adam's L2 penalty.
        augmented_views: Train on the cached augmented views (view ids ``1..context.views``)
            besides the images themselves.
        logit_scale: Inverse temperature of classifiers on the L2-normalised student features.
        amp: Mixed precision (autocast) for the trainable layers; CUDA only.
    """

    steps: int = 50
    head_lr: float = 0.01
    backbone_lr: float = 1e-4
    batch_size: int = 128
    train_layers: str = "head"
    weight_decay: float = 5e-4
    augmented_views: bool = True
    logit_scale: float = 10.0
    amp: bool = False

    def __post_init__(self) -> None:
        last_blocks(self.train_layers)  # a one-line error for an unknown value
        if self.steps < 0:
            raise TcsFewshotError(f"steps must be >= 0; got {self.steps}")


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
    uses_teacher = True  # reads the teacher's cached features of the support views

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None) -> None:
        self.context = context
        self.training = training or TrainingSettings()
        if self.training.amp and context.device != "cuda":
            raise TcsFewshotError("amp (autocast) is offered on CUDA only; drop it or use --device cuda")
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
        labels = np.repeat(np.asarray(support_labels, dtype=np.int64), len(views))
        if self.uses_teacher:
            teacher = torch.from_numpy(self.context.teacher_features(support_ids, views).reshape(len(labels), -1))
            self.teacher_forward_passes = len(support_ids) * len(views)  # one cached pass per image view
        else:  # methods without a teacher never read its cache
            teacher, self.teacher_forward_passes = torch.zeros(len(labels), 0), 0
        return TaskBatch(inputs.flatten(0, 1), torch.from_numpy(labels), teacher, int(labels.max()) + 1)

    def warm_up(self, item_ids: Any) -> None:
        """Fill the shared memo of frozen outputs for ``item_ids`` (every view a fit or predict reads), untimed."""
        views = self.context.view_ids(self.training.augmented_views)
        self.context.frozen_outputs(np.asarray(item_ids), views, self.training.train_layers)

    def fit(self, support_ids: Any, support_labels: Any) -> StudentMethod:
        support_ids = np.asarray(support_ids)
        if support_ids.dtype.kind not in "US":
            raise TcsFewshotError(f"{type(self).__name__} takes item ids (its inputs are images); got a {support_ids.dtype} array")
        generator = torch.Generator().manual_seed(task_seed(support_ids))  # batch order
        # Heads that draw random weights (LSH planes, random bases) draw from their own stream,
        # so a task trains the same way whatever the caller's global torch RNG holds.
        self.task_generator = torch.Generator().manual_seed(task_seed(support_ids))
        batch = self.task_batch(support_ids, support_labels)
        device = torch.device(self.context.device)
        self.trainable = self.context.trainable_copy(self.training.train_layers).to(device)
        with torch.no_grad():
            initial = self.student_features(batch.inputs.to(device)).cpu()
        # Heads are built in closed form on the CPU, then every tensor a loss reads moves to the device.
        self.head = self.build_head(batch, initial).to(device)
        _move_tensors(self, device)
        batch = TaskBatch(batch.inputs.to(device), batch.labels.to(device), batch.teacher.to(device), batch.n_way)
        backbone = [p for p in self.trainable.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        groups = [{"params": backbone, "lr": self.training.backbone_lr}, {"params": head, "lr": self.training.head_lr}]
        self.loss_history = []
        if (backbone or head) and self.training.steps:
            optimiser = torch.optim.Adam([g for g in groups if g["params"]], weight_decay=self.training.weight_decay)
            n = len(batch.labels)
            for step in range(self.training.steps):
                rows = torch.randperm(n, generator=generator)[: self.training.batch_size].to(device)
                with torch.autocast("cuda", enabled=self.training.amp):
                    loss = self.loss(self.head, self.student_features(batch.inputs[rows]), batch, rows, step)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                self.after_step(self.head, step)
                self.loss_history.append(float(loss.detach()))
        return self

    def predict(self, query_ids: Any) -> torch.Tensor:
        """``(n_query, n_way)`` logits, on the CPU."""
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


def _move_tensors(method: Any, device: torch.device) -> None:
    """Move the tensors a method's ``build_head`` left on its attributes (targets, codes, planes) to ``device``."""
    if device.type == "cpu":
        return
    for name, value in vars(method).items():
        if isinstance(value, torch.Tensor):
            setattr(method, name, value.to(device))
