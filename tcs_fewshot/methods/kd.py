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

from tcs_fewshot.methods.closed_form import ridge_projector, teacher_probe_logits
from tcs_fewshot.methods.coordinates import lsh_codes, random_planes
from tcs_fewshot.methods.student_training import (
    StudentMethod,
    TaskBatch,
    TrainingSettings,
    nearest_mean_layer,
)
from tcs_fewshot.models.views import view_image


class LogitKD(StudentMethod):
    """Logit distillation from the teacher's support-set probe (see the module docstring)."""

    def __init__(self, training: TrainingSettings | None = None, *, temperature: float = 4.0,
                 teacher_scale: float = 10.0, kd_weight: float = 1.0, ce_weight: float = 1.0, online: bool = False) -> None:
        super().__init__(training)
        self.temperature, self.teacher_scale, self.kd_weight, self.ce_weight = temperature, teacher_scale, kd_weight, ce_weight
        self.online = online

    @property
    def teacher_use(self) -> str:
        # Online, the probe's class means still come from the cached support views (not counted, as before).
        return "every-batch" if self.online else "cached-views"

    def task_batch(self, support_ids: np.ndarray, support_labels: np.ndarray,
                   unlabelled_ids: np.ndarray | None = None) -> TaskBatch:
        self.views_ = self.context_.view_ids(self.settings.augmented_views)
        self.support_ids_ = support_ids
        return super().task_batch(support_ids, support_labels)

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        self.teacher_logits_ = teacher_probe_logits(batch.teacher, batch.teacher, batch.labels, batch.n_way, self.teacher_scale)
        return nearest_mean_layer(features, batch.labels, batch.n_way, self.settings.logit_scale)

    def _online_teacher(self, batch: TaskBatch, rows: torch.Tensor) -> torch.Tensor:
        """Teacher logits of ``rows`` from a fresh teacher forward pass over their images."""
        n_views = len(self.views_)
        teacher = self.context_.teacher
        images = []
        for row in rows.tolist():
            item_id, view = str(self.support_ids_[row // n_views]), self.views_[row % n_views]
            images.append(teacher.transform(view_image(self.context_.data.load_image(item_id), item_id, view)))
        parameter = next(teacher.model.parameters())
        with torch.inference_mode():
            features = teacher.model(torch.stack(images).to(parameter.device, parameter.dtype)).float()
        logits = teacher_probe_logits(features.to(batch.teacher.device), batch.teacher, batch.labels, batch.n_way, self.teacher_scale)
        return logits

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
        logits = head(features)
        targets = self._online_teacher(batch, rows) if self.online else self.teacher_logits_[rows]
        t = self.temperature
        distillation = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(targets / t, 1), reduction="batchmean") * t * t
        return {"ce": self.ce_weight * F.cross_entropy(logits, batch.labels[rows]), "kd": self.kd_weight * distillation}


class FitNetsHead(nn.Module):
    """A classifier on the student's features beside a regressor to the teacher's features."""

    def __init__(self, classifier: nn.Linear, regressor: nn.Linear) -> None:
        super().__init__()
        self.classifier, self.regressor = classifier, regressor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


class FitNets(StudentMethod):
    """Feature KD: a linear regressor to the raw ``(D,)`` teacher features, MSE (see the module docstring)."""

    def __init__(self, training: TrainingSettings | None = None, *,
                 feature_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__(training)
        self.feature_weight, self.ce_weight = feature_weight, ce_weight

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        # The regressor starts at the least-squares fit, as TCS's projector does: same footing.
        return FitNetsHead(nearest_mean_layer(features, batch.labels, batch.n_way, self.settings.logit_scale), ridge_projector(features, batch.teacher))

    def feature_loss(self, head: FitNetsHead, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(head.regressor(features), batch.teacher[rows])

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
        classification = F.cross_entropy(head(features), batch.labels[rows])
        return {"ce": self.ce_weight * classification, "mimic": self.feature_weight * self.feature_loss(head, features, batch, rows)}


class LSHL2(FitNets):
    """LSH-L2 (Wang, Ge & Wu 2021): the L2 loss plus the LSH loss on ``hash_bits`` random hyperplanes."""

    def __init__(self, training: TrainingSettings | None = None, *, hash_bits: int = 512,
                 lsh_weight: float = 1.0, feature_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__(training, feature_weight=feature_weight, ce_weight=ce_weight)
        self.hash_bits, self.lsh_weight = hash_bits, lsh_weight

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        self.planes_ = random_planes(self.hash_bits, batch.teacher.shape[1], self.task_generator_)
        self.offsets_, self.codes_ = lsh_codes(batch.teacher, self.planes_)
        return super().build_head(batch, features)

    def feature_loss(self, head: FitNetsHead, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor) -> torch.Tensor:
        regressed = head.regressor(features)
        hashes = F.binary_cross_entropy_with_logits(regressed @ self.planes_.T + self.offsets_, self.codes_[rows])
        return F.mse_loss(regressed, batch.teacher[rows]) + self.lsh_weight * hashes
