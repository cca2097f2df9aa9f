"""scikit-learn's parameter protocol without depending on scikit-learn's base class.

``get_params``/``set_params`` read the ``__init__`` signatures of the class and its bases, so
``sklearn.base.clone`` works on a subclass whose ``__init__`` stores every parameter as given
under its own name (and does nothing else).
"""

from __future__ import annotations

import inspect
from typing import Any

from tcs_fewshot.errors import TcsFewshotError


class Estimator:
    """Base giving ``get_params``/``set_params``; subclasses keep parameters in ``__init__`` only."""

    @classmethod
    def _param_names(cls) -> list[str]:
        names = []
        for klass in cls.__mro__:
            if "__init__" in vars(klass) and klass is not object:
                signature = inspect.signature(klass.__init__)
                names += [name for name, parameter in signature.parameters.items()
                          if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)]
        return list(dict.fromkeys(names))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` parameters by name (scikit-learn's protocol; ``deep`` is accepted for it)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise TcsFewshotError(f"{type(self).__name__} has no parameter '{unknown[0]}'; valid: {', '.join(self._param_names())}")
        for name, value in params.items():
            setattr(self, name, value)
        return self
