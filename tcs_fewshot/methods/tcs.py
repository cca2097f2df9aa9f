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
images' teacher features), ``selection=False``. ``transductive=True`` also fits the coordinate
system on, and mimics the teacher on, the unlabelled query images; training then happens in
``predict`` (it needs the queries) and is recorded as predict time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.coordinates import CoordinateSystem, lsh_codes, random_planes
from tcs_fewshot.methods.student_context import StudentContext
from tcs_fewshot.methods.student_training import (
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


def ridge_projector(features: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-2) -> nn.Linear:
    """The least-squares linear map ``(N, d) -> (N, k)`` (with bias), the projector's starting point."""
    inputs = torch.cat([features, torch.ones(len(features), 1)], 1).double()
    gram = inputs.T @ inputs + ridge * torch.eye(inputs.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(gram, inputs.T @ targets.double()).float()  # (d + 1, k)
    layer = nn.Linear(features.shape[1], targets.shape[1])
    with torch.no_grad():
        layer.weight.copy_(solution[:-1].T)
        layer.bias.copy_(solution[-1])
    return layer


class TCS(StudentMethod):
    """Tailored-coordinate-system distillation on one task (see the module docstring).

    Args:
        context: Images, cached teacher features and the initial student.
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
        transductive: Also use the unlabelled query images (see the module docstring).
    """

    def __init__(self, context: StudentContext, training: TrainingSettings | None = None, *, components: int = 32,
                 explained_variance: float = 1.0, scale: str = "spectrum", basis: str = "pca",
                 pca_features: np.ndarray | None = None, mimic_loss: str = "mse", mimic_weight: float = 1.0,
                 ce_weight: float = 1.0, hash_bits: int = 256, selection: bool = True, prune_start: int = 20,
                 prune_every: int = 10, prune_fraction: float = 0.1, min_components: int = 4,
                 transductive: bool = False) -> None:
        super().__init__(context, training)
        if mimic_loss not in MIMIC_LOSSES:
            raise TcsFewshotError(f"unknown mimic loss '{mimic_loss}'; choose one of {', '.join(MIMIC_LOSSES)}")
        if not 0 <= prune_fraction < 1 or prune_every < 1:
            raise TcsFewshotError(f"prune_fraction must be in [0, 1) and prune_every >= 1; got {prune_fraction}, {prune_every}")
        self.components, self.explained_variance, self.scale, self.basis = components, explained_variance, scale, basis
        self.pca_features = None if pca_features is None else torch.as_tensor(np.asarray(pca_features), dtype=torch.float32)
        self.mimic_loss, self.mimic_weight, self.ce_weight, self.hash_bits = mimic_loss, mimic_weight, ce_weight, hash_bits
        self.selection, self.prune_start, self.prune_every = selection, prune_start, prune_every
        self.prune_fraction, self.min_components, self.transductive = prune_fraction, min_components, transductive
        self._support: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, support_ids: Any, support_labels: Any) -> TCS:
        if self.transductive:  # training waits for the queries
            self._support = (np.asarray(support_ids), np.asarray(support_labels))
            return self
        return super().fit(support_ids, support_labels)

    def predict(self, query_ids: Any) -> torch.Tensor:
        if self.transductive:
            if self._support is None:
                raise RuntimeError("predict called before fit")
            self._unlabelled = np.asarray(query_ids)
            super().fit(*self._support)  # StudentMethod.fit: thread setting, then _fit
        return super().predict(query_ids)

    def task_batch(self, support_ids: np.ndarray, support_labels: np.ndarray) -> TaskBatch:
        batch = super().task_batch(support_ids, support_labels)
        if not self.transductive:
            return batch
        views = self.context.view_ids(self.training.augmented_views)
        ids = self._unlabelled
        inputs = self.context.frozen_outputs(ids, views, self.training.train_layers).flatten(0, 1)
        teacher = torch.from_numpy(self.context.teacher_features(ids, views).reshape(len(ids) * len(views), -1))
        self.teacher_forward_passes += len(ids) * len(views)
        unlabelled = torch.full((len(teacher),), -1, dtype=torch.int64)  # ignored by cross-entropy
        return TaskBatch(torch.cat([batch.inputs, inputs]), torch.cat([batch.labels, unlabelled]),
                         torch.cat([batch.teacher, teacher]), batch.n_way)

    def build_head(self, batch: TaskBatch, features: torch.Tensor) -> CoordinateHead:
        generator = self.task_generator
        fitting = self.pca_features if self.pca_features is not None else batch.teacher
        self.system = CoordinateSystem.fit(fitting, self.components, self.explained_variance, self.scale, self.basis, generator)
        self.targets = self.system.coordinates(batch.teacher)
        labelled = batch.labels >= 0
        projector = ridge_projector(features, self.targets)
        with torch.no_grad():
            coordinates = projector(features)
        head = CoordinateHead(projector, nearest_mean_layer(coordinates[labelled], batch.labels[labelled], batch.n_way))
        if self.mimic_loss == "elsh":
            self.planes = random_planes(self.hash_bits, self.system.components, generator)
            self._hashed_for = None
        return head

    def loss(self, head: CoordinateHead, features: torch.Tensor, batch: TaskBatch, rows: torch.Tensor, step: int) -> torch.Tensor:
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
            mimic = F.mse_loss(coordinates[:, selected], self.targets[rows][:, selected])
        else:
            planes = self.planes * head.selected  # hashes see only the selected coordinates
            if self._hashed_for != int(head.selected.sum()):  # re-hash the targets after each pruning
                self.offsets, self.codes = lsh_codes(self.targets, planes)
                self._hashed_for = int(head.selected.sum())
            mimic = F.binary_cross_entropy_with_logits(coordinates @ planes.T + self.offsets, self.codes[rows])
        return self.ce_weight * classification + self.mimic_weight * mimic

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
        if getattr(self, "_folded_for", None) is not self.head:
            self._folded, self._folded_for = self.head.folded(), self.head
        return self._folded(features)

    @property
    def selected_components(self) -> int:
        """Coordinates still selected after the last task's pruning."""
        return int(self.head.selected.sum())

    def describe(self) -> dict[str, Any]:
        settings = {key: getattr(self, key) for key in (
            "components", "explained_variance", "scale", "basis", "mimic_loss", "mimic_weight", "ce_weight",
            "hash_bits", "selection", "prune_start", "prune_every", "prune_fraction", "min_components", "transductive")}
        return {**super().describe(), **settings, "pca_data": "unrelated" if self.pca_features is not None else "task"}
