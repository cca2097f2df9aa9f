"""Students without distillation: the student's features as they are, and cross-entropy fine-tuning.

These are the baselines every distillation method must beat on the same student, the same
views and the same training loop (:mod:`student_training`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.methods.student_training import (
    StudentMethod,
    TaskBatch,
    nearest_mean_layer,
)


class StudentNCM(StudentMethod):
    """Nearest class mean on the (L2-normalised) student features: the student without adaptation.

    No training steps; the support views are averaged into the class means.
    """

    teacher_use = "none"

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        self.trainable_.requires_grad_(False)  # no parameter left, so the loop takes no step
        return nearest_mean_layer(features, batch.labels, batch.n_way, self.settings.logit_scale).requires_grad_(False)

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
        raise AssertionError("StudentNCM has no trainable parameter, so the loop never calls its loss")


class FineTune(StudentMethod):
    """Cross-entropy fine-tuning only: a linear classifier initialised at the class means, no teacher."""

    teacher_use = "none"

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> nn.Module:
        return nearest_mean_layer(features, batch.labels, batch.n_way, self.settings.logit_scale)

    def loss(self, head: nn.Module, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(head(features), batch.labels[rows])}
