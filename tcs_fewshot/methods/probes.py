"""Probes on fixed features: nearest class mean, SimpleShot, logistic regression.

All take ``(n, dim)`` float features (numpy or anything ``np.asarray`` accepts) and
labels ``(n,)`` in ``0..n_way-1``; ``predict`` returns ``(n_query, n_way)`` scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression


def class_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(n_way, dim)`` mean feature per class, by one matrix product (no loop over classes)."""
    n_way = int(labels.max()) + 1
    one_hot = np.zeros((n_way, len(labels)), dtype=features.dtype)
    one_hot[labels, np.arange(len(labels))] = 1.0
    return (one_hot @ features) / one_hot.sum(axis=1, keepdims=True)


def l2_normalize(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


class NearestClassMean:
    """Nearest class mean by squared Euclidean distance: ProtoNet at test time (Snell et al. 2017).

    ``predict`` returns ``(n_query, n_way)`` negative squared distances.
    """

    def fit(self, support_features, support_labels) -> NearestClassMean:
        support_features = np.asarray(support_features, dtype=np.float64)
        self.means_ = class_means(support_features, np.asarray(support_labels))
        return self

    def predict(self, query_features) -> np.ndarray:
        query_features = np.asarray(query_features, dtype=np.float64)
        # |q - m|^2 = |q|^2 - 2 q.m + |m|^2, in one matrix product.
        squared = (
            (query_features**2).sum(axis=1, keepdims=True)
            - 2.0 * query_features @ self.means_.T
            + (self.means_**2).sum(axis=1)
        )
        return -squared


def ncm_task_accuracies(features: np.ndarray, ids: Sequence[str], tasks: Iterable) -> np.ndarray:
    """``(n_tasks,)`` accuracy (fraction) of :class:`NearestClassMean` on each task.

    ``features`` is ``(len(ids), dim)``, row ``r`` the item ``ids[r]``; a task (``Task``) names its
    support and query items by id.
    """
    position = {item: row for row, item in enumerate(ids)}
    accuracies = []
    for task in tasks:
        support = features[[position[str(i)] for i in task.support_ids]]
        query = features[[position[str(i)] for i in task.query_ids]]
        predicted = NearestClassMean().fit(support, task.support_labels).predict(query).argmax(1)
        accuracies.append(float((predicted == task.query_labels).mean()))
    return np.array(accuracies)


class SimpleShot(NearestClassMean):
    """SimpleShot CL2N (Wang et al. 2019): centre on the base-class mean, L2-normalise, then NCM.

    Args:
        base_mean: ``(dim,)`` mean feature of the base (training) split. ``None`` centres
            on the support mean instead, a transductive-free fallback for data with no base split.
    """

    def __init__(self, base_mean: np.ndarray | None = None) -> None:
        self.base_mean = None if base_mean is None else np.asarray(base_mean, dtype=np.float64)

    def _transform(self, features: np.ndarray) -> np.ndarray:
        return l2_normalize(np.asarray(features, dtype=np.float64) - self.center_)

    def fit(self, support_features, support_labels) -> SimpleShot:
        support_features = np.asarray(support_features, dtype=np.float64)
        self.center_ = self.base_mean if self.base_mean is not None else support_features.mean(axis=0)
        return super().fit(self._transform(support_features), support_labels)

    def predict(self, query_features) -> np.ndarray:
        return super().predict(self._transform(query_features))


class LogisticRegressionProbe:
    """Multinomial logistic regression on L2-normalised features (as RFS evaluates).

    ``predict`` returns ``(n_query, n_way)`` log-probabilities.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, normalize: bool = True) -> None:
        self.C = C
        self.max_iter = max_iter
        self.normalize = normalize

    def _transform(self, features) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        return l2_normalize(features) if self.normalize else features

    def fit(self, support_features, support_labels) -> LogisticRegressionProbe:
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model_.fit(self._transform(support_features), np.asarray(support_labels))
        return self

    def predict(self, query_features) -> np.ndarray:
        return self.model_.predict_log_proba(self._transform(query_features))
