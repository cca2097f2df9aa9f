"""Heads solved in closed form, the starting points student methods and distillation share.

Neutral ground: TCS, the KD baselines, fine-tuning and base-split distillation all import from
here, so that no baseline depends on the headline method's module (nor distillation on KD's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def ridge_projector(features: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-2) -> nn.Linear:
    """The least-squares linear map ``(N, d) -> (N, k)`` (with bias, ``ridge`` L2 penalty), a projector's starting point."""
    inputs = torch.cat([features, torch.ones(len(features), 1)], 1).double()
    gram = inputs.T @ inputs + ridge * torch.eye(inputs.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(gram, inputs.T @ targets.double()).float()  # (d + 1, k)
    layer = nn.Linear(features.shape[1], targets.shape[1])
    with torch.no_grad():
        layer.weight.copy_(solution[:-1].T)
        layer.bias.copy_(solution[-1])
    return layer


def nearest_mean_layer(features: torch.Tensor, labels: torch.Tensor, n_way: int, scale: float = 1.0) -> nn.Linear:
    """A linear layer equal to ``scale`` x nearest class mean's scores (``w_c = 2 s m_c``, ``b_c = -s |m_c|^2``).

    ``features`` ``(N, d)``, ``labels`` ``(N,)`` in ``0..n_way-1``. On L2-normalised features
    squared distances are at most 4, so a ``scale`` (inverse temperature) near 10 starts
    cross-entropy from confident, not uniform, logits.
    """
    one_hot = F.one_hot(labels, n_way).float()
    means = (one_hot.T @ features) / one_hot.sum(0, keepdim=True).T
    layer = nn.Linear(features.shape[1], n_way)
    with torch.no_grad():
        layer.weight.copy_(2 * scale * means)
        layer.bias.copy_(-scale * (means**2).sum(1))
    return layer


def teacher_probe_logits(teacher: torch.Tensor, support_teacher: torch.Tensor, labels: torch.Tensor, n_way: int,
                         scale: float) -> torch.Tensor:
    """``(N, n_way)`` logits ``scale * cos(teacher feature, class mean)``; class means from the support's teacher features."""
    one_hot = F.one_hot(labels, n_way).float()
    means = F.normalize((one_hot.T @ support_teacher) / one_hot.sum(0)[:, None], dim=1)
    return scale * F.normalize(teacher, dim=1) @ means.T
