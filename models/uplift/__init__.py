"""Uplift learners (S, T, X, class transformation) over gradient-boosted trees, and ONNX export.

All learners share one API (:class:`BaseUpliftLearner`): ``fit(X, y, treatment,
propensity=None)`` returns ``self``; ``predict(X)`` returns an ``(n, n_treatments)`` array of
effects against control, columns in the order of ``treatments_``.

Errors: :class:`UpliftInputError` (a ``ValueError``) for bad inputs, :class:`NotFittedError`
for predicting before ``fit``.
"""

from __future__ import annotations

from models.uplift.base import (
    BASE_LEARNERS,
    DEFAULT_BASE_PARAMS,
    BaseUpliftLearner,
    NotFittedError,
    UpliftInputError,
    make_base_estimator,
)
from models.uplift.class_transformation import ClassTransformationLearner
from models.uplift.meta import SLearner, TLearner, XLearner

LEARNERS: dict[str, type[BaseUpliftLearner]] = {
    "S": SLearner,
    "T": TLearner,
    "X": XLearner,
    "CT": ClassTransformationLearner,
}

__all__ = [
    "BASE_LEARNERS",
    "DEFAULT_BASE_PARAMS",
    "LEARNERS",
    "BaseUpliftLearner",
    "ClassTransformationLearner",
    "NotFittedError",
    "SLearner",
    "TLearner",
    "UpliftInputError",
    "XLearner",
    "make_base_estimator",
]
