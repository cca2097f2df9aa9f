import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tcs_fewshot import LogisticRegressionProbe, NearestClassMean, SimpleShot
from tcs_fewshot.methods import build_probe
from tcs_fewshot.methods.probes import class_means
from tcs_fewshot.methods.protocol import InvalidPredictions, as_method, predicted_labels


@pytest.fixture
def task():
    rng = np.random.default_rng(3)
    support = rng.normal(size=(15, 8))
    labels = np.repeat(np.arange(3), 5)
    query = rng.normal(size=(12, 8))
    return support, labels, query


def test_class_means_match_a_loop(task):
    support, labels, _ = task
    expected = np.stack([support[labels == c].mean(axis=0) for c in range(3)])
    assert np.allclose(class_means(support, labels), expected)


def test_ncm_scores_are_negative_squared_distances(task):
    support, labels, query = task
    scores = NearestClassMean().fit(support, labels).predict(query)
    means = class_means(support, labels)
    expected = -((query[:, None, :] - means[None]) ** 2).sum(axis=2)
    assert scores.shape == (12, 3)
    assert np.allclose(scores, expected)


def test_simpleshot_centres_on_base_mean_then_normalises(task):
    support, labels, query = task
    base_mean = np.full(8, 0.5)
    scores = SimpleShot(base_mean).fit(support, labels).predict(query)

    def transform(x):
        centred = x - base_mean
        return centred / np.linalg.norm(centred, axis=1, keepdims=True)

    expected = NearestClassMean().fit(transform(support), labels).predict(transform(query))
    assert np.allclose(scores, expected)
    assert not np.allclose(scores, NearestClassMean().fit(support, labels).predict(query))


def test_logistic_regression_equals_sklearn_on_normalised_features(task):
    support, labels, query = task
    probe = LogisticRegressionProbe(C=0.5).fit(support, labels)

    def normalise(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    reference = LogisticRegression(C=0.5, max_iter=1000).fit(normalise(support), labels)
    assert np.allclose(probe.predict(query), reference.predict_log_proba(normalise(query)))


def test_probes_refit_cleanly_between_tasks(task):
    support, labels, query = task
    probe = build_probe("ncm")
    probe.fit(support[:10] * 5, labels[:10] % 2)
    assert np.allclose(probe.fit(support, labels).predict(query), NearestClassMean().fit(support, labels).predict(query))


def test_prediction_conversion():
    assert predicted_labels(np.array([[0.1, 0.9], [2.0, 1.0]]), 2, 2).tolist() == [1, 0]
    assert predicted_labels([1, 0, 1], 3, 2).tolist() == [1, 0, 1]
    for bad, message in [
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.array([0, 2]), "outside 0..1"),
        (np.array([0.5, 1.0]), "whole numbers"),
        (np.zeros((2, 3)), "expected labels"),
    ]:
        with pytest.raises(InvalidPredictions, match=message):
            predicted_labels(bad, len(bad), 2)


def test_a_plain_function_is_a_method(task):
    support, labels, query = task

    def nearest_neighbour(support_x, support_y, query_x):
        distances = ((query_x[:, None] - support_x[None]) ** 2).sum(axis=2)
        return support_y[distances.argmin(axis=1)]

    method = as_method(nearest_neighbour)
    assert method.fit(support, labels).predict(query).shape == (12,)
    with pytest.raises(Exception, match="not a method"):
        as_method(42)
