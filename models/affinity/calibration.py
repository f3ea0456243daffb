"""Calibrated P(redeem | member, offer) from affinity scores (isotonic or Platt).

Fitted on (score, redeemed) pairs of the validation window, stored as plain arrays: isotonic as
its step thresholds (prediction by interpolation), Platt as two coefficients.
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np

from models.affinity.interactions import AffinityInputError

__all__ = ["RedeemCalibrator", "brier_score", "reliability_curve"]


def _check(scores: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise AffinityInputError("scores: must be finite")
    if labels is None:
        return s, np.empty(0)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise AffinityInputError(f"labels: {len(y)} labels for {len(s)} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise AffinityInputError("labels: must be 0 or 1")
    return s, y


class RedeemCalibrator:
    """Maps affinity scores to probabilities (``method``: ``isotonic`` or ``platt``)."""

    def __init__(self, method: Literal["isotonic", "platt"] = "isotonic") -> None:
        self.method = method

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> Self:
        """Learn the mapping from validation pairs; needs both classes."""
        s, y = _check(scores, labels)
        if len(np.unique(y)) < 2:
            raise AffinityInputError("labels: calibration needs both redeemed and not redeemed")
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        elif self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6).fit(s[:, None], y)
            self.x_ = np.asarray([lr.coef_[0, 0]])
            self.y_ = np.asarray([lr.intercept_[0]])
        else:
            raise AffinityInputError(f"method must be 'isotonic' or 'platt', got {self.method!r}")
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """P(redeem) for each score."""
        if not hasattr(self, "x_"):
            raise AffinityInputError("RedeemCalibrator is not fitted")
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(s, self.x_, self.y_)
        return 1.0 / (1.0 + np.exp(-(self.x_[0] * s + self.y_[0])))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"method": np.asarray(self.method), "x": self.x_, "y": self.y_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RedeemCalibrator:
        cal = cls(str(arrays["method"]))  # type: ignore[arg-type]
        cal.x_ = np.asarray(arrays["x"], dtype=np.float64)
        cal.y_ = np.asarray(arrays["y"], dtype=np.float64)
        return cal


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of probabilities against 0/1 outcomes."""
    p, y = _check(probs, labels)
    if ((p < 0) | (p > 1)).any():
        raise AffinityInputError("probs: must lie in [0, 1]")
    return float(np.mean((p - y) ** 2)) if len(p) else float("nan")


def reliability_curve(
    probs: np.ndarray, labels: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per quantile bin of predicted probability: mean prediction, observed rate, count."""
    p, y = _check(probs, labels)
    if len(p) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    n = np.bincount(idx, minlength=max(len(edges) - 1, 1))
    keep = n > 0
    mean_p = np.bincount(idx, weights=p, minlength=len(n))[keep] / n[keep]
    rate = np.bincount(idx, weights=y, minlength=len(n))[keep] / n[keep]
    return mean_p, rate, n[keep]
