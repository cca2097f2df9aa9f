"""Knowledge-distillation baselines on the same student, views and loop as TCS.

* :class:`LogitKD` (Hinton, Vinyals & Dean 2015): the teacher's logits come from its probe fitted
  on the support set (cosine nearest class mean on the teacher features, ``teacher_scale``
  times the cosine); loss ``ce_weight * CE + kd_weight * T^2 KL(teacher_T || student_T)``.
  ``online=True`` runs the teacher on every training batch, as KD is usually implemented
  (same numbers as the cached views, since the views are the augmentations; it costs teacher
  passes every step and is what the cost benchmark compares against).
* :class:`FitNets` (Romero et al. 2015): a learned linear regressor from the student's
  features to the raw teacher features, MSE, beside cross-entropy.
* :class:`LSHL2` (Wang, Ge & Wu 2021): FitNets' L2 plus the LSH loss (binary cross-entropy of
  the regressed features' random-hyperplane hashes against the teacher's).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.methods.coordinates import lsh_codes, random_planes
from tcs_fewshot.methods.student_context import StudentContext
from tcs_fewshot.methods.student_training import (
    StudentMethod,
    TaskBatch,
    TrainingSettings,
    nearest_mean_layer,
)
from tcs_fewshot.methods.tcs import ridge_projector
from tcs_fewshot.models.views import view_image


def teacher_probe_logits(teacher: torch.Tensor, support_teacher: torch.Tensor, labels: torch.Tensor, n_way: int,
                         scale: float) -> torch.Tensor:
    """``(N, n_way)`` logits ``scale * cos(teacher feature, class mean)``; class means from the support's teacher features."""
    one_hot = F.one_hot(labels, n_way).float()
    means = F.normalize((one_hot.T @ support_teacher) / one_hot.sum(0)[:, None], dim=1)
    return scale * F.normalize(teacher, dim=1) @ means.T


class LogitKD(StudentMethod):
    """Logit distillation from the teacher's support-set probe (see the module docstring)."""

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None, *, temperature: float = 4.0,
                 teacher_scale: float = 10.0, kd_weight: float = 1.0, ce_weight: float = 1.0, online: bool = False) -> None:
        super().__init__(context, training)
        self.temperature, self.teacher_scale, self.kd_weight, self.ce_weight = temperature, teacher_scale, kd_weight, ce_weight
        self.online = online

    def task_batch(self, support_ids: np.ndarray, support_labels: np.ndarray) -> TaskBatch:
        batch = super().task_batch(support_ids, support_labels)
        self._views = self.context.view_ids(self.training.augmented_views)
        self._ids = support_ids
        if self.online:
            self.teacher_forward_passes = 0  # counted per training batch instead
        return batch

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        self.teacher_logits = teacher_probe_logits(batch.teacher, batch.teacher, batch.labels, batch.n_way, self.teacher_scale)
        return nearest_mean_layer(features, batch.labels, batch.n_way, self.training.logit_scale)

    def _online_teacher(self, batch: TaskBatch, rows: torch.Tensor) -> torch.Tensor:
        """Teacher logits of ``rows`` from a fresh teacher forward pass over their images."""
        n_views = len(self._views)
        teacher = self.context.teacher
        images = []
        for row in rows.tolist():
            item_id, view = str(self._ids[row // n_views]), self._views[row % n_views]
            images.append(teacher.transform(view_image(self.context.data.load_image(item_id), item_id, view)))
        parameter = next(teacher.model.parameters())
        with torch.inference_mode():
            features = teacher.model(torch.stack(images).to(parameter.device, parameter.dtype)).float()
        self.teacher_forward_passes += len(rows)
        logits = teacher_probe_logits(features.to(batch.teacher.device), batch.teacher, batch.labels, batch.n_way, self.teacher_scale)
        return logits

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor, step: int) -> torch.Tensor:
        logits = head(features)
        targets = self._online_teacher(batch, rows) if self.online else self.teacher_logits[rows]
        t = self.temperature
        distillation = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(targets / t, 1), reduction="batchmean") * t * t
        return self.ce_weight * F.cross_entropy(logits, batch.labels[rows]) + self.kd_weight * distillation


class FitNetsHead(nn.Module):
    """A classifier on the student's features beside a regressor to the teacher's features."""

    def __init__(self, classifier: nn.Linear, regressor: nn.Linear) -> None:
        super().__init__()
        self.classifier, self.regressor = classifier, regressor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


class FitNets(StudentMethod):
    """Feature KD: a linear regressor to the raw ``(D,)`` teacher features, MSE (see the module docstring)."""

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None, *,
                 feature_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__(context, training)
        self.feature_weight, self.ce_weight = feature_weight, ce_weight

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        # The regressor starts at the least-squares fit, as TCS's projector does: same footing.
        return FitNetsHead(nearest_mean_layer(features, batch.labels, batch.n_way, self.training.logit_scale), ridge_projector(features, batch.teacher))

    def feature_loss(self, head: FitNetsHead, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(head.regressor(features), batch.teacher[rows])

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor, step: int) -> torch.Tensor:
        classification = F.cross_entropy(head(features), batch.labels[rows])
        return self.ce_weight * classification + self.feature_weight * self.feature_loss(head, features, batch, rows)


class LSHL2(FitNets):
    """LSH-L2 (Wang, Ge & Wu 2021): the L2 loss plus the LSH loss on ``hash_bits`` random hyperplanes."""

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None, *, hash_bits: int = 512,
                 lsh_weight: float = 1.0, **weights: float) -> None:
        super().__init__(context, training, **weights)
        self.hash_bits, self.lsh_weight = hash_bits, lsh_weight

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        self.planes = random_planes(self.hash_bits, batch.teacher.shape[1], self.task_generator)
        self.offsets, self.codes = lsh_codes(batch.teacher, self.planes)
        return super().build_head(batch, features)

    def feature_loss(self, head: FitNetsHead, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor) -> torch.Tensor:
        regressed = head.regressor(features)
        hashes = F.binary_cross_entropy_with_logits(regressed @ self.planes.T + self.offsets, self.codes[rows])
        return F.mse_loss(regressed, batch.teacher[rows]) + self.lsh_weight * hashes
