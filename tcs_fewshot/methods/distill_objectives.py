"""What a student learns from on a base split: one head per objective, all on the same loop (:mod:`distill`).

Each objective is a module on the student's standardised features ``(B, d)`` whose
``forward(features, rows)`` returns named loss terms, each a *sum* over the batch rows (the loop
divides by the global batch, so data-parallel processes add up to the single-process loss).
``rows`` are ``(B,)`` indices into the objective's own target table (one row per image view).

* ``tcs``: the teacher's features of the split fit a :class:`CoordinateSystem`; a linear
  projector maps the student into its ``k`` coordinates (mimicking, MSE per coordinate), and
  an optional classifier on the selected coordinates learns the base classes (cross-entropy),
  whose gradient on a mask over the coordinates drives iterative feature selection.
* ``ce``: a linear classifier on the base classes, cross-entropy alone (no teacher).
* ``kd``: logit KD (Hinton et al. 2015) from the teacher's base-class probe: cosine nearest
  class mean of the teacher's features of the split's plain images, times ``teacher_scale``,
  the same probe per-task KD uses; loss ``T^2 KL`` plus optional cross-entropy.
* ``fitnets``: a linear regressor to the teacher's centred features, divided by their RMS
  (Romero et al. 2015), MSE per dimension, plus optional cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.methods.coordinates import CoordinateSystem
from tcs_fewshot.methods.closed_form import ridge_projector

OBJECTIVES = ("tcs", "ce", "kd", "fitnets")


class ClassifierObjective(nn.Module):
    """Cross-entropy on the base classes (``ce``), and the base of the others."""

    def __init__(self, feature_dim: int, labels: torch.Tensor, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("labels", labels)  # (rows,) int64 base-class label of each target row
        self.ce_weight = ce_weight
        self.classifier = nn.Linear(feature_dim, int(labels.max()) + 1)

    def classification(self, inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if not self.ce_weight:  # zero, but every parameter stays in the graph, as DDP requires
            return self.classifier(inputs).sum() * 0.0
        return self.ce_weight * F.cross_entropy(self.classifier(inputs), self.labels[rows], reduction="sum")

    def forward(self, features: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": self.classification(features, rows)}


class TCSObjective(ClassifierObjective):
    """Mimic ``(rows, k)`` coordinates of a coordinate system; classify on the selected ones."""

    def __init__(self, feature_dim: int, labels: torch.Tensor, system: CoordinateSystem, teacher: torch.Tensor,
                 mimic_weight: float = 1.0, ce_weight: float = 0.0) -> None:
        super().__init__(system.components, labels, ce_weight)
        self.system, self.mimic_weight = system, mimic_weight
        self.register_buffer("targets", system.coordinates(teacher))  # (rows, k)
        self.projector = nn.Linear(feature_dim, system.components)
        self.mask = nn.Parameter(torch.ones(system.components))
        self.register_buffer("selected", torch.ones(system.components))
        self.register_buffer("relevance", torch.zeros(system.components))  # accumulated |dCE/dmask|

    def forward(self, features: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        coordinates = self.projector(features)
        selected = self.selected.bool()
        # Mimicking sees the coordinates unmasked, so the mask's gradient comes from cross-entropy alone.
        mimic = F.mse_loss(coordinates[:, selected], self.targets[rows][:, selected], reduction="sum") / int(selected.sum())
        return {"ce": self.classification(coordinates * self.mask * self.selected, rows),
                "mimic": self.mimic_weight * mimic}

    def initialise_head(self, features: torch.Tensor) -> None:
        """Start the projector at the ridge map from ``(rows, d)`` standardised student features to the targets."""
        self.projector = ridge_projector(features, self.targets.cpu(), ridge=1e-2 * len(features))

    def accumulate_relevance(self) -> None:
        if self.mask.grad is not None:
            self.relevance += self.mask.grad.abs()

    def prune(self, fraction: float, min_components: int) -> int:
        """Deselect the ``fraction`` of selected coordinates least relevant so far; returns how many remain."""
        active = self.selected.nonzero().flatten()
        drop = min(int(len(active) * fraction), len(active) - min_components)
        if drop > 0:
            self.selected[active[self.relevance[active].argsort()[:drop]]] = 0.0
        return int(self.selected.sum())


class KDObjective(ClassifierObjective):
    """``T^2 KL(teacher_T || student_T)`` on the base classes, teacher logits ``(rows, C)`` given."""

    def __init__(self, feature_dim: int, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                 temperature: float = 4.0, kd_weight: float = 1.0, ce_weight: float = 0.0) -> None:
        super().__init__(feature_dim, labels, ce_weight)
        self.temperature, self.kd_weight = temperature, kd_weight
        self.register_buffer("teacher_logits", teacher_logits if teacher_logits is not None else torch.zeros(0))
        self.online_logits: torch.Tensor | None = None  # set per batch by the loop when the teacher runs online

    def forward(self, features: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(features)
        targets = self.online_logits if self.online_logits is not None else self.teacher_logits[rows]
        t = self.temperature
        kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(targets / t, 1), reduction="sum") * t * t
        return {"ce": self.classification(features, rows), "kd": self.kd_weight * kd}


class FitNetsObjective(ClassifierObjective):
    """MSE of a linear regressor to the teacher's normalised features ``(rows, D)``."""

    def __init__(self, feature_dim: int, labels: torch.Tensor, teacher: torch.Tensor, feature_weight: float = 1.0,
                 ce_weight: float = 0.0) -> None:
        super().__init__(feature_dim, labels, ce_weight)
        centred = teacher - teacher.mean(0)
        self.register_buffer("targets", centred / centred.pow(2).mean().sqrt().clamp_min(1e-12))
        self.feature_weight = feature_weight
        self.regressor = nn.Linear(feature_dim, teacher.shape[1])

    def initialise_head(self, features: torch.Tensor) -> None:
        """Start the regressor at the ridge map from ``(rows, d)`` standardised student features to the targets."""
        self.regressor = ridge_projector(features, self.targets.cpu(), ridge=1e-2 * len(features))

    def forward(self, features: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        regressed = self.regressor(features)
        mse = F.mse_loss(regressed, self.targets[rows], reduction="sum") / regressed.shape[1]
        return {"ce": self.classification(features, rows), "mimic": self.feature_weight * mse}

