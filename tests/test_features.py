import numpy as np
import pytest

from tcs_fewshot import FeatureSet, TcsFewshotError


def test_features_with_nan_are_refused_unless_the_source_checked_them():
    with pytest.raises(TcsFewshotError, match="NaN or infinite"):
        FeatureSet(["a", "b"], np.array([[0.0, np.nan], [1.0, 2.0]]))
    trusted = FeatureSet(["a", "b"], np.array([[0.0, 1.0], [1.0, 2.0]]), check_finite=False)
    assert trusted.rows(["b", "a"]).tolist() == [[1.0, 2.0], [0.0, 1.0]]


def test_unknown_ids_and_shape_mismatch_are_named():
    features = FeatureSet(["a", "b"], np.ones((2, 3)))
    with pytest.raises(TcsFewshotError, match="no features for item 'c'"):
        features.rows(["a", "c"])
    with pytest.raises(TcsFewshotError, match="one row per id"):
        FeatureSet(["a", "b", "c"], np.ones((2, 3)))
    with pytest.raises(TcsFewshotError, match="not unique"):
        FeatureSet(["a", "a"], np.ones((2, 3)))
