"""TCS: distillation through a tailored coordinate system (Zhou, Zhu & Wu, AAAI 2025), per task.

For one task:

1. The teacher's cached features of the support images and their augmented views (one teacher
   pass per image view, ever) fit a :class:`CoordinateSystem` (PCA centred on their mean).
2. A linear projector maps the student's L2-normalised features into those coordinates; a
   trainable mask over the coordinates feeds a linear classifier.
3. The loss is ``ce_weight * CE(support labels) + mimic_weight * mimicking loss`` on the
   coordinates still selected (``mse``, or ``elsh``: the LSH loss on hashes of the coordinates).
4. Iterative feature selection: the magnitude of the classification loss's gradient on each
   mask entry is accumulated; every ``prune_every`` steps from ``prune_start`` on, the
   ``prune_fraction`` of selected coordinates with the smallest accumulated magnitude are
   removed, never going below ``min_components``.
5. At inference projector, mask and classifier fold into one linear layer on the student's
   features (:meth:`TCS.folded`): no cost over the bare student.

Ablations: ``basis="random-orthogonal"``, ``pca_features`` (a basis fitted on unrelated
images' teacher features), ``selection=False``. ``fit(support, labels, unlabelled=query)``
also fits the coordinate system on, and mimics the teacher on, the unlabelled query images;
``transductive=True`` asks the evaluator to pass the queries that way (the training is then
fit time, like every other method's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.closed_form import ridge_projector
from tcs_fewshot.methods.coordinates import CoordinateSystem, lsh_codes, random_planes
from tcs_fewshot.methods.student_training import (
    StudentItems,
    StudentMethod,
    TaskBatch,
    TrainingSettings,
    nearest_mean_layer,
)

MIMIC_LOSSES = ("mse", "elsh")


class CoordinateHead(nn.Module):
    """Student features ``(n, d)`` -> coordinates ``(n, k)`` -> masked -> logits ``(n, n_way)``."""

    def __init__(self, projector: nn.Linear, classifier: nn.Linear) -> None:
        super().__init__()
        self.projector, self.classifier = projector, classifier
        k = projector.out_features
        self.mask = nn.Parameter(torch.ones(k))
        self.register_buffer("selected", torch.ones(k))
        self.register_buffer("relevance", torch.zeros(k))  # accumulated |dCE/dmask|

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.projector(features) * self.mask * self.selected)

    def folded(self) -> nn.Linear:
        """One linear layer equal to ``forward`` (``W = C diag(m s) P``, ``b = C (m s P_b) + C_b``)."""
        gate = self.mask * self.selected
        layer = nn.Linear(self.projector.in_features, self.classifier.out_features)
        with torch.no_grad():
            layer.weight.copy_(self.classifier.weight @ (gate[:, None] * self.projector.weight))
            layer.bias.copy_(self.classifier.weight @ (gate * self.projector.bias) + self.classifier.bias)
        return layer


class TCS(StudentMethod):
    """Tailored-coordinate-system distillation on one task (see the module docstring).

    Args:
        training: The shared loop's settings (steps, learning rate, which layers train).
        components: At most this many coordinates (``k``); the task's rank may give fewer.
        explained_variance: Keep the fewest components reaching this fraction of variance (1: off).
        scale: ``spectrum`` (chosen on the emoji validation split: +1.9 points over ``whiten`` at
            5 shots, see benchmarks/results/tcs_val_selection.md), ``whiten`` or ``raw`` (see :mod:`coordinates`).
        basis: ``pca`` or ``random-orthogonal``.
        pca_features: ``(M, D)`` teacher features of other images to fit the basis on instead of
            the task's (the ``unrelated`` ablation).
        mimic_loss: ``mse`` or ``elsh``; ``mimic_weight``/``ce_weight`` weigh it and cross-entropy.
        hash_bits: Hash functions of ``elsh``.
        selection: Iterative feature selection on or off; ``prune_start``, ``prune_every``,
            ``prune_fraction``, ``min_components`` set its schedule (steps, steps, fraction, count).
        transductive: Ask the evaluator for ``fit(..., unlabelled=query ids)`` (see the module docstring).

    ``fit``/``predict`` take :class:`StudentItems` (``context.items(ids)``: the images, cached
    teacher features and initial student come with them). Fitted state: ``context_``, ``trainable_``, ``head_``, ``system_`` (the task's :class:`CoordinateSystem`),
    ``targets_`` (the teacher features in its coordinates), ``history_`` (per step: ``loss``,
    ``ce``, ``mimic``), ``teacher_forward_passes_``.
    """

    accepts_unlabelled = True

    def __init__(self, training: TrainingSettings | None = None, *, components: int = 32,
                 explained_variance: float = 1.0, scale: str = "spectrum", basis: str = "pca",
                 pca_features: np.ndarray | None = None, mimic_loss: str = "mse", mimic_weight: float = 1.0,
                 ce_weight: float = 1.0, hash_bits: int = 256, selection: bool = True, prune_start: int = 20,
                 prune_every: int = 10, prune_fraction: float = 0.1, min_components: int = 4,
                 transductive: bool = False) -> None:
        super().__init__(training)
        self.components, self.explained_variance, self.scale, self.basis = components, explained_variance, scale, basis
        self.pca_features = pca_features
        self.mimic_loss, self.mimic_weight, self.ce_weight, self.hash_bits = mimic_loss, mimic_weight, ce_weight, hash_bits
        self.selection, self.prune_start, self.prune_every = selection, prune_start, prune_every
        self.prune_fraction, self.min_components, self.transductive = prune_fraction, min_components, transductive

    def validate(self) -> None:
        super().validate()
        if self.mimic_loss not in MIMIC_LOSSES:
            raise TcsFewshotError(f"unknown mimic loss '{self.mimic_loss}'; choose one of {', '.join(MIMIC_LOSSES)}")
        if not 0 <= self.prune_fraction < 1 or self.prune_every < 1:
            raise TcsFewshotError(f"prune_fraction must be in [0, 1) and prune_every >= 1; got {self.prune_fraction}, {self.prune_every}")

    def fit(self, support: StudentItems, support_labels: Any, unlabelled: StudentItems | None = None) -> TCS:
        """Train on the support items; with ``unlabelled`` (e.g. the queries) fit the coordinates on, and
        mimic the teacher on, those too. ``transductive=True`` refuses a fit without them."""
        if self.transductive and unlabelled is None:
            raise TcsFewshotError("transductive TCS fits on the unlabelled queries: "
                                  "call fit(support, labels, unlabelled=context.items(query_ids))")
        return super().fit(support, support_labels, unlabelled)

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> CoordinateHead:
        generator = self.task_generator_
        fitting = batch.teacher if self.pca_features is None else torch.as_tensor(np.asarray(self.pca_features), dtype=torch.float32)
        self.system_ = CoordinateSystem.fit(fitting, self.components, self.explained_variance, self.scale, self.basis, generator)
        self.targets_ = self.system_.coordinates(batch.teacher)
        labelled = batch.labels >= 0
        projector = ridge_projector(features, self.targets_)
        with torch.no_grad():
            coordinates = projector(features)
        head = CoordinateHead(projector, nearest_mean_layer(coordinates[labelled], batch.labels[labelled], batch.n_way))
        if self.mimic_loss == "elsh":
            self.planes_ = random_planes(self.hash_bits, self.system_.components, generator)
            self.hashed_for_ = None
        return head

    def loss(self, head: CoordinateHead, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor,
             step: int) -> dict[str, torch.Tensor]:
        coordinates = head.projector(features)
        labels = batch.labels[rows]
        if (labels >= 0).any():
            classification = F.cross_entropy(head.classifier(coordinates * head.mask * head.selected), labels, ignore_index=-1)
        else:
            classification = coordinates.sum() * 0.0
        # The mask's gradient is taken from cross-entropy alone: it measures relevance to the task.
        if self.selection:
            (mask_gradient,) = torch.autograd.grad(classification, head.mask, retain_graph=True, allow_unused=True)
            if mask_gradient is not None:
                head.relevance += mask_gradient.abs().detach()
        selected = head.selected.bool()
        if self.mimic_loss == "mse":
            mimic = F.mse_loss(coordinates[:, selected], self.targets_[rows][:, selected])
        else:
            planes = self.planes_ * head.selected  # hashes see only the selected coordinates
            if self.hashed_for_ != int(head.selected.sum()):  # re-hash the targets after each pruning
                self.offsets_, self.codes_ = lsh_codes(self.targets_, planes)
                self.hashed_for_ = int(head.selected.sum())
            mimic = F.binary_cross_entropy_with_logits(coordinates @ planes.T + self.offsets_, self.codes_[rows])
        return {"ce": self.ce_weight * classification, "mimic": self.mimic_weight * mimic}

    def after_step(self, head: CoordinateHead, step: int) -> None:
        if not self.selection or step < self.prune_start or (step - self.prune_start) % self.prune_every:
            return
        active = head.selected.nonzero().flatten()
        prune = min(int(len(active) * self.prune_fraction), len(active) - self.min_components)
        if prune > 0:
            weakest = active[head.relevance[active].argsort()[:prune]]
            head.selected[weakest] = 0.0

    def logits(self, head: CoordinateHead, features: torch.Tensor) -> torch.Tensor:
        return self.folded_layer(features)

    def folded_layer(self, features: torch.Tensor) -> torch.Tensor:
        if getattr(self, "folded_for_", None) is not self.head_:
            self.folded_, self.folded_for_ = self.head_.folded(), self.head_
        return self.folded_(features)

    @property
    def selected_components(self) -> int:
        """Coordinates still selected after the last task's pruning."""
        return int(self.head_.selected.sum())

    def describe(self) -> dict[str, Any]:
        settings = {key: getattr(self, key) for key in (
            "components", "explained_variance", "scale", "basis", "mimic_loss", "mimic_weight", "ce_weight",
            "hash_bits", "selection", "prune_start", "prune_every", "prune_fraction", "min_components", "transductive")}
        return {**super().describe(), **settings, "pca_data": "unrelated" if self.pca_features is not None else "task"}
