"""Shared pieces of the uplift learners: input checks, base estimators, the linear readout.

Treatment labels. ``treatment`` holds one label per row: all ints or all strings. The label
given by the learner's ``control`` parameter (default ``0``) marks the control group; every other
label is a treatment. ``predict(X)`` returns an array of shape ``(n, n_treatments)``: column
``j`` is the estimated effect of ``treatments_[j]`` against control, and ``treatments_`` is the
sorted list of treatment labels seen in ``fit``. So ``0 = control, 1..K = treatments`` works as
is, and so do offer kinds with ``control="held_out"``.

Outcomes. ``outcome="binary"`` (0/1, e.g. conversion: effects are differences of predicted
probabilities), ``"continuous"`` (e.g. spend: differences of predicted means) or ``"auto"``
(binary when ``y`` only holds 0 and 1).

Propensity. ``fit(..., propensity=p)`` takes, per row, the logged probability that the row got
the arm it got (its own treatment, or control). Rows are then weighted by ``1 / p`` in every
base model, so each arm's data stands for the whole population even when assignment depended
on the member (inverse propensity weighting).

Prediction is a *linear readout* of base-model outputs (:class:`Readout`): every learner's
effect is ``intercept + sum_i weight_i * output_i(X)``, where each output is one base model's
probability of class 1 or predicted value, evaluated on ``X`` with optional constant treatment
indicator columns appended. The native ``predict`` and the ONNX export share that description,
so they compute the same thing.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ALL_COLUMNS",
    "BASE_LEARNERS",
    "DEFAULT_BASE_PARAMS",
    "NO_COLUMN",
    "BaseUpliftLearner",
    "NotFittedError",
    "Readout",
    "Term",
    "UpliftInputError",
    "make_base_estimator",
]

BASE_LEARNERS: tuple[str, ...] = ("lightgbm", "hgb")
# selections of :meth:`Readout.term_outputs` besides a column index
ALL_COLUMNS = -1
NO_COLUMN = -2
Outcome = Literal["auto", "binary", "continuous"]

# LightGBM defaults chosen on Hillstrom, on tuning splits separate from the reported ones
# (docs/benchmarks.md, "Uplift"): small trees and a slow learning rate, because the treatment
# effect is a small difference between two noisy rates. The HGB settings mirror them.
DEFAULT_BASE_PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "n_estimators": 100,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 50,
        "reg_lambda": 1.0,
        "n_jobs": 1,
        "verbose": -1,
    },
    "hgb": {
        "max_iter": 100,
        "learning_rate": 0.05,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
        "early_stopping": False,
    },
}


class UpliftInputError(ValueError):
    """An uplift learner got an input it cannot use (names the argument and the value)."""


class NotFittedError(RuntimeError):
    """``predict`` (or an export) was called before ``fit``."""


def make_base_estimator(
    base_learner: str,
    task: Literal["classifier", "regressor"],
    params: dict[str, Any] | None = None,
    random_state: int | None = 0,
) -> Any:
    """A fresh base estimator: LightGBM or scikit-learn's HistGradientBoosting.

    ``params`` override :data:`DEFAULT_BASE_PARAMS` and ``random_state`` overrides both; the
    benchmark passes the same call to the peer libraries so that every library trains the same
    trees.
    """
    if base_learner not in BASE_LEARNERS:
        raise UpliftInputError(f"base_learner must be one of {BASE_LEARNERS}; got {base_learner!r}")
    if task not in ("classifier", "regressor"):
        raise UpliftInputError(f"task must be 'classifier' or 'regressor'; got {task!r}")
    merged = {**DEFAULT_BASE_PARAMS[base_learner], **(params or {}), "random_state": random_state}
    if base_learner == "lightgbm":
        import lightgbm

        cls = lightgbm.LGBMClassifier if task == "classifier" else lightgbm.LGBMRegressor
    else:
        from sklearn import ensemble

        cls = (
            ensemble.HistGradientBoostingClassifier
            if task == "classifier"
            else ensemble.HistGradientBoostingRegressor
        )
    return cls(**merged)


@dataclass(frozen=True)
class Term:
    """One base-model output: ``estimator`` on ``X`` with ``indicator`` columns appended.

    ``output`` is ``"proba"`` (probability of class 1 of a binary classifier) or ``"value"``
    (a regressor's prediction).
    """

    estimator: Any
    output: Literal["proba", "value"]
    indicator: tuple[float, ...] = ()

    def evaluate(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """This term's output for every row of ``X``."""
        if self.indicator:
            extra = np.broadcast_to(
                np.asarray(self.indicator, dtype=X.dtype), (X.shape[0], len(self.indicator))
            )
            X = np.hstack([X, extra])
        if self.output == "proba":
            return self.estimator.predict_proba(X)[:, 1].astype(np.float64)
        return np.asarray(self.estimator.predict(X), dtype=np.float64)


@dataclass(frozen=True)
class Readout:
    """Effects as ``intercept + outputs @ weights`` (``weights``: n_terms x n_treatments)."""

    terms: tuple[Term, ...]
    weights: NDArray[np.float64]
    intercept: NDArray[np.float64]

    def evaluate(self, X: NDArray[np.floating], chunk_rows: int = 100_000) -> NDArray[np.float64]:
        """Effects for every row of ``X``: shape ``(n, n_treatments)``, ``chunk_rows`` rows at a
        time (a term with indicator columns copies its rows; a chunk's copy stays small)."""
        out = np.empty((X.shape[0], self.weights.shape[1]))
        for start in range(0, X.shape[0], chunk_rows):
            part = X[start : start + chunk_rows]
            outputs = np.column_stack([term.evaluate(part) for term in self.terms])
            out[start : start + len(part)] = outputs @ self.weights + self.intercept
        return out

    def term_outputs(
        self, X: NDArray[np.floating], own: NDArray[np.integer], chunk_rows: int = 100_000
    ) -> NDArray[np.float64]:
        """The terms' outputs a selection of effects needs: shape ``(n, n_terms)``.

        ``own[i]`` selects the effects of row ``i``: a column ``j`` (``0 <= j < n_treatments``,
        e.g. the row's own treatment), :data:`ALL_COLUMNS` (every column, e.g. a control row
        that every treatment's ranking compares against) or :data:`NO_COLUMN`. A term is
        evaluated only on the rows whose selection has a non-zero weight on it (an S-learner
        row of treatment ``j`` needs 2 of its ``k + 1`` terms); the others hold 0. Pass the
        result to :meth:`combine`, with this readout or one with the same terms."""
        own = self._check_own(X, own)
        outputs = np.zeros((X.shape[0], len(self.terms)))
        every = own == ALL_COLUMNS
        for i, term in enumerate(self.terms):
            users = np.flatnonzero(self.weights[i] != 0)
            idx = np.flatnonzero(every | np.isin(own, users))
            for start in range(0, len(idx), chunk_rows):
                part = idx[start : start + chunk_rows]
                outputs[part, i] = term.evaluate(X[part])
        return outputs

    def combine(
        self, outputs: NDArray[np.float64], own: NDArray[np.integer]
    ) -> NDArray[np.float64]:
        """Effects from :meth:`term_outputs` (same ``own``): shape ``(n, n_treatments)``, NaN
        where ``own`` did not select the column; the selected ones equal :meth:`evaluate`."""
        own = np.asarray(own)
        k = self.weights.shape[1]
        if outputs.shape != (len(own), len(self.terms)):
            raise ValueError(
                f"outputs must have shape ({len(own)}, {len(self.terms)}); got {outputs.shape}"
            )
        out = outputs @ self.weights + self.intercept
        out[(own[:, None] != ALL_COLUMNS) & (np.arange(k)[None, :] != own[:, None])] = np.nan
        return out

    def evaluate_selected(
        self, X: NDArray[np.floating], own: NDArray[np.integer], chunk_rows: int = 100_000
    ) -> NDArray[np.float64]:
        """:meth:`combine` of :meth:`term_outputs`: the selected effects, NaN elsewhere."""
        return self.combine(self.term_outputs(X, own, chunk_rows), own)

    def _check_own(self, X: NDArray[np.floating], own: NDArray[np.integer]) -> NDArray[np.int64]:
        arr = np.asarray(own)
        if arr.shape != (X.shape[0],) or (arr.size and arr.dtype.kind not in "iu"):
            raise UpliftInputError(
                f"own must be 1-D integers, one per row of X ({X.shape[0]}); got shape "
                f"{arr.shape}, dtype {arr.dtype}"
            )
        k = self.weights.shape[1]
        bad = (arr >= k) | ((arr < 0) & (arr != ALL_COLUMNS) & (arr != NO_COLUMN))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise UpliftInputError(
                f"own[{first}] = {int(arr[first])}: must be a column 0..{k - 1}, "
                f"ALL_COLUMNS ({ALL_COLUMNS}) or NO_COLUMN ({NO_COLUMN})"
            )
        return arr.astype(np.int64, copy=False)


def _as_matrix(X: ArrayLike | pd.DataFrame) -> tuple[NDArray[np.floating], list[str] | None]:
    """``X`` as a 2-D float array: a float32 array stays float32 (no copy; the encoder's
    float32 matrix holds the same values as its float64 one), anything else becomes float64."""
    names = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else None
    dtype = np.float32 if isinstance(X, np.ndarray) and X.dtype == np.float32 else np.float64
    try:
        arr = np.asarray(X, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise UpliftInputError(
            f"X must be numeric (encode categoricals first); could not convert: {exc}"
        ) from exc
    if arr.ndim != 2:
        raise UpliftInputError(f"X must be 2-D (rows x features); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UpliftInputError(f"X is empty; got shape {arr.shape}")
    if np.isinf(arr).any():
        row, col = np.argwhere(np.isinf(arr))[0]
        raise UpliftInputError(f"X has infinite values; first at row {row}, column {col}")
    return arr.astype(dtype, copy=False), names


def _as_vector(name: str, values: ArrayLike, n: int) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise UpliftInputError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise UpliftInputError(f"{name} has {arr.shape[0]} rows but X has {n}")
    return arr


class BaseUpliftLearner(abc.ABC):
    """Common ``fit`` / ``predict`` of the uplift learners (see the module docstring).

    Learned attributes: ``treatments_`` (treatment labels, the columns of ``predict``),
    ``outcome_`` (``"binary"`` or ``"continuous"``), ``n_features_in_``,
    ``feature_names_in_`` (when ``X`` was a DataFrame, else None) and ``readout_``.
    """

    supports_continuous: bool = True

    def __init__(
        self,
        base_learner: str = "lightgbm",
        base_params: dict[str, Any] | None = None,
        control: int | str = 0,
        outcome: Outcome = "auto",
        random_state: int | None = 0,
    ) -> None:
        self.base_learner = base_learner
        self.base_params = base_params
        self.control = control
        self.outcome = outcome
        self.random_state = random_state

    # ---- public API ------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike | pd.DataFrame,
        y: ArrayLike,
        treatment: ArrayLike,
        propensity: ArrayLike | None = None,
    ) -> BaseUpliftLearner:
        """Validate the inputs, fit the base models and return ``self``."""
        if self.base_learner not in BASE_LEARNERS:
            raise UpliftInputError(
                f"base_learner must be one of {BASE_LEARNERS}; got {self.base_learner!r}"
            )
        X_arr, names = _as_matrix(X)
        n = X_arr.shape[0]
        y_arr = self._check_y(_as_vector("y", y, n))
        labels = self._check_treatment(_as_vector("treatment", treatment, n))
        weights = self._check_propensity(propensity, n)
        self.treatments_ = sorted({v for v in labels.tolist() if v != self.control})
        # group index per row: 0 = control, j + 1 = treatments_[j]
        codes = {self.control: 0} | {t: j + 1 for j, t in enumerate(self.treatments_)}
        group = pd.Series(labels).map(codes).to_numpy(dtype=np.int64)
        self._check_groups(y_arr, group)
        self.n_features_in_ = X_arr.shape[1]
        self.feature_names_in_ = names
        self.readout_ = self._fit(X_arr, y_arr, group, weights)
        return self

    def predict(self, X: ArrayLike | pd.DataFrame) -> NDArray[np.float64]:
        """Effect of each treatment against control: shape ``(n, len(treatments_))``."""
        X_arr = self._checked(X)
        return self.readout_.evaluate(X_arr)

    def predict_selected(self, X: ArrayLike | pd.DataFrame, own: ArrayLike) -> NDArray[np.float64]:
        """:meth:`predict` of only the selected effects (``own``, see
        :meth:`Readout.term_outputs`), NaN elsewhere: a metric that needs each treated row's
        own treatment and every treatment on control rows costs a fraction of ``predict``."""
        X_arr = self._checked(X)
        return self.readout_.evaluate_selected(X_arr, np.asarray(own))

    def _checked(self, X: ArrayLike | pd.DataFrame) -> NDArray[np.floating]:
        if not hasattr(self, "readout_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(X, y, treatment)")
        X_arr, _ = _as_matrix(X)
        if X_arr.shape[1] != self.n_features_in_:
            raise UpliftInputError(
                f"X has {X_arr.shape[1]} features but {type(self).__name__} was fitted "
                f"with {self.n_features_in_}"
            )
        return X_arr

    def columns_of(self, labels: ArrayLike) -> NDArray[np.int64]:
        """Each label's column in :meth:`predict` (its treatment), :data:`ALL_COLUMNS` for the
        control label and :data:`NO_COLUMN` for a label the learner does not model."""
        col = {t: j for j, t in enumerate(self.treatments_)} | {self.control: ALL_COLUMNS}
        values = pd.Series(np.asarray(labels, dtype=object))
        return values.map(col).fillna(NO_COLUMN).to_numpy(dtype=np.int64, copy=True)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseUpliftLearner:
        """Set constructor parameters (scikit-learn convention)."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise UpliftInputError(f"unknown parameter {name!r}; valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    # ---- for subclasses --------------------------------------------------------------------
    @abc.abstractmethod
    def _fit(
        self,
        X: NDArray[np.floating],
        y: NDArray[np.float64],
        group: NDArray[np.int64],
        weights: NDArray[np.float64] | None,
    ) -> Readout:
        """Fit the base models; ``group`` is 0 for control and j + 1 for ``treatments_[j]``."""

    def _estimator(self, task: Literal["classifier", "regressor"]) -> Any:
        return make_base_estimator(self.base_learner, task, self.base_params, self.random_state)

    def _outcome_task(self) -> Literal["classifier", "regressor"]:
        return "classifier" if self.outcome_ == "binary" else "regressor"

    def _outcome_output(self) -> Literal["proba", "value"]:
        return "proba" if self.outcome_ == "binary" else "value"

    @staticmethod
    def _fit_estimator(
        estimator: Any, X: NDArray, y: NDArray, weights: NDArray[np.float64] | None
    ) -> Any:
        if weights is None:
            return estimator.fit(X, y)
        return estimator.fit(X, y, sample_weight=weights)

    # ---- checks ----------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> Sequence[str]:
        import inspect

        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def _check_y(self, y: NDArray[Any]) -> NDArray[np.float64]:
        try:
            y_f = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise UpliftInputError(f"y must be numeric; got dtype {y.dtype}") from exc
        bad = ~np.isfinite(y_f)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise UpliftInputError(
                f"y has {int(bad.sum())} NaN or infinite value(s); first at index {first}"
            )
        if self.outcome not in ("auto", "binary", "continuous"):
            raise UpliftInputError(
                f"outcome must be 'auto', 'binary' or 'continuous'; got {self.outcome!r}"
            )
        not_binary = np.unique(y_f[~np.isin(y_f, (0.0, 1.0))])[:5].tolist()
        if self.outcome == "binary" and not_binary:
            raise UpliftInputError(f"outcome='binary' needs y in {{0, 1}}; got values {not_binary}")
        if self.outcome == "auto":
            self.outcome_ = "continuous" if not_binary else "binary"
        else:
            self.outcome_ = self.outcome
        if self.outcome_ == "continuous" and not self.supports_continuous:
            raise UpliftInputError(
                f"{type(self).__name__} supports binary outcomes only; got "
                f"outcome={self.outcome!r} and y values outside {{0, 1}}: {not_binary[:3]}"
            )
        return y_f

    def _check_treatment(self, treatment: NDArray[Any]) -> NDArray[Any]:
        values = pd.Series(treatment)
        if values.isna().any():
            first = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise UpliftInputError(f"treatment has missing labels; first at index {first}")
        labels = values.to_numpy(dtype=object, copy=True)
        kinds = set(map(type, labels))
        if kinds != {str}:  # numpy scalars become Python ones (all-str labels need nothing)
            labels = values.map(lambda v: v.item() if hasattr(v, "item") else v).to_numpy(object)
            kinds = set(map(type, labels))
        if kinds - {int, str, bool} or len(kinds & {int, str}) > 1:
            raise UpliftInputError(
                f"treatment labels must be all ints or all strings; got types "
                f"{sorted(k.__name__ for k in kinds)}"
            )
        present = set(labels.tolist())
        if self.control not in present:
            raise UpliftInputError(
                f"control label {self.control!r} not found in treatment; labels seen: "
                f"{sorted(map(str, present))[:10]}"
            )
        if len(present) < 2:
            raise UpliftInputError(
                f"treatment holds only the control label {self.control!r}; need at least one "
                "treatment group"
            )
        return labels

    def _check_propensity(self, propensity: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
        if propensity is None:
            return None
        p = _as_vector("propensity", propensity, n).astype(np.float64)
        bad = ~(np.isfinite(p) & (p > 0.0) & (p <= 1.0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise UpliftInputError(
                f"propensity must be in (0, 1]; got {float(p[first])} at index {first}"
            )
        return 1.0 / p

    def _check_groups(self, y: NDArray[np.float64], group: NDArray[np.int64]) -> None:
        labels = [self.control, *self.treatments_]
        counts = np.bincount(group, minlength=len(labels))
        for j, label in enumerate(labels):
            if counts[j] < 2:
                raise UpliftInputError(
                    f"treatment group {label!r} has {counts[j]} row(s); need at least 2"
                )
            if self.outcome_ == "binary":
                n_pos = int(y[group == j].sum())
                if n_pos in (0, counts[j]):
                    raise UpliftInputError(
                        f"treatment group {label!r} has only y={int(n_pos > 0)} "
                        f"({counts[j]} rows); a binary outcome needs both 0 and 1 in every group"
                    )
