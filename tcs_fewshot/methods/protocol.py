"""The one protocol every method follows, scikit-learn style.

A method is any object with ``fit(support_inputs, support_labels)`` and
``predict(query_inputs)``, or a plain function ``(support_x, support_y, query_x) ->
predictions``. Nothing needs to subclass anything of ours. ``fit`` is called once per
task on the same object, so it must reset whatever an earlier task left (as scikit-learn
estimators do).

Two optional hooks the evaluator honours: a true ``transductive`` attribute makes it call
``fit(support_inputs, support_labels, unlabelled=query_inputs)`` (the queries' inputs, never
their labels); ``fit_threads() -> int | None`` is the torch thread count the runner sets
around ``fit`` (and restores), so that ``fit`` itself never changes process-wide state.

Predictions are either labels ``(n_query,)`` in ``0..n_way-1`` or scores/logits
``(n_query, n_way)``, as numpy arrays, torch tensors or lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tcs_fewshot.errors import TcsFewshotError


@runtime_checkable
class FewShotMethod(Protocol):
    def fit(self, support_inputs: Any, support_labels: np.ndarray) -> Any: ...

    def predict(self, query_inputs: Any) -> Any: ...


class FunctionMethod:
    """Adapts ``function(support_x, support_y, query_x) -> predictions`` to the protocol."""

    def __init__(self, function: Callable[[Any, np.ndarray, Any], Any]) -> None:
        self.function = function
        self._support: tuple[Any, np.ndarray] | None = None

    def fit(self, support_inputs: Any, support_labels: np.ndarray) -> FunctionMethod:
        self._support = (support_inputs, support_labels)
        return self

    def predict(self, query_inputs: Any) -> Any:
        if self._support is None:
            raise RuntimeError("predict called before fit")
        return self.function(*self._support, query_inputs)

    def __repr__(self) -> str:
        return f"FunctionMethod({getattr(self.function, '__name__', self.function)!r})"


def as_method(method: Any) -> FewShotMethod:
    """Return ``method`` if it has fit/predict, wrap it if it is a plain function."""
    if isinstance(method, FewShotMethod):
        return method
    if callable(method):
        return FunctionMethod(method)
    raise TcsFewshotError(
        f"{method!r} is not a method: give an object with fit(support_x, support_y) and "
        "predict(query_x), or a function (support_x, support_y, query_x) -> predictions"
    )


def to_numpy(values: Any) -> np.ndarray:
    """A numpy array of a torch tensor (any device), array or list."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


class InvalidPredictions(ValueError):
    """A method returned predictions of the wrong shape, range or with NaN (recorded as a failure)."""


def predicted_labels(predictions: Any, n_query: int, n_way: int) -> np.ndarray:
    """Convert a method's output to ``(n_query,)`` int64 labels, or raise InvalidPredictions."""
    array = to_numpy(predictions)
    if array.ndim == 2 and array.shape == (n_query, n_way):
        if not np.isfinite(array).all():
            raise InvalidPredictions(f"scores contain {int((~np.isfinite(array)).sum())} NaN or infinite values")
        return array.argmax(axis=1).astype(np.int64)
    if array.ndim == 1 and array.shape[0] == n_query:
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise InvalidPredictions("predicted labels contain NaN or infinite values")
            if not np.all(array == np.round(array)):
                raise InvalidPredictions("predicted labels are not whole numbers")
        elif array.dtype.kind not in "iub":
            raise InvalidPredictions(f"predicted labels have dtype {array.dtype}; return ints in 0..{n_way - 1}")
        labels = array.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= n_way):
            raise InvalidPredictions(f"predicted labels outside 0..{n_way - 1}")
        return labels
    raise InvalidPredictions(
        f"predictions have shape {array.shape}; expected labels ({n_query},) or scores ({n_query}, {n_way})"
    )
