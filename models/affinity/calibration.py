"""Calibrated P(redeem | member, offer) from affinity scores (isotonic or Platt).

Fitted on (score, redeemed) pairs of the validation window, stored as plain arrays: isotonic as
its step thresholds (prediction by interpolation), Platt as two coefficients.

Per offer (``groups``): one score -> probability map for every offer is badly off where offers
are redeemed at very different rates (a welcome bonus 0.38, a 25-off voucher 0.005 on the
realistic simulated program, both mapped to ~0.04), and P(redeem) x cost is the engine's cost
term. So each group (offer) gets a log-odds offset toward its own observed rate, shrunk toward
the map's prediction by ``prior_pairs`` pseudo-pairs (an offer seen 20 times moves little).
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

    def __init__(
        self, method: Literal["isotonic", "platt"] = "isotonic", prior_pairs: float = 50.0
    ) -> None:
        self.method = method
        self.prior_pairs = prior_pairs

    def fit(self, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> Self:
        """Learn the mapping from validation pairs; needs both classes. ``groups`` (one id per
        pair, e.g. the offer): also learn a shrunk log-odds offset per group."""
        s, y = _check(scores, labels)
        self.groups_ = np.empty(0, dtype=str)
        self.offsets_ = np.empty(0, dtype=np.float64)
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
        if groups is not None:
            g = np.asarray(groups).astype(str).ravel()
            if len(g) != len(s):
                raise AffinityInputError(f"groups: {len(g)} groups for {len(s)} scores")
            if not self.prior_pairs > 0:
                raise AffinityInputError(f"prior_pairs must be > 0, got {self.prior_pairs}")
            uniq, inv = np.unique(g, return_inverse=True)
            n = np.bincount(inv).astype(np.float64)
            base = np.bincount(inv, weights=self._map(s)) / n  # the map's mean per group
            rate = (np.bincount(inv, weights=y) + self.prior_pairs * base) / (n + self.prior_pairs)
            self.groups_ = uniq
            self.offsets_ = _logit(rate) - _logit(base)
        return self

    def add_rates(
        self,
        groups: np.ndarray,
        sends: np.ndarray,
        redemptions: np.ndarray,
        reference: float,
    ) -> Self:
        """Offsets for groups the pairs did not cover, from their own ``redemptions`` per
        ``sends`` (e.g. an offer's whole logged history) against ``reference`` (the map's mean
        prediction, an average offer), shrunk by ``prior_pairs`` as in :meth:`fit`. Groups
        that already have an offset, or no sends, are left as they are."""
        g = np.asarray(groups).astype(str).ravel()
        n = np.asarray(sends, dtype=np.float64).ravel()
        k = np.asarray(redemptions, dtype=np.float64).ravel()
        if not (len(g) == len(n) == len(k)):
            raise AffinityInputError(
                f"groups, sends and redemptions differ in length: {len(g)}, {len(n)}, {len(k)}"
            )
        if ((n < 0) | (k < 0) | (k > n)).any():
            raise AffinityInputError("sends and redemptions must be >= 0 with redemptions <= sends")
        if not 0 < reference < 1:
            raise AffinityInputError(f"reference must lie in (0, 1), got {reference}")
        have = set(getattr(self, "groups_", np.empty(0, dtype=str)).tolist())
        new = np.array([x not in have for x in g.tolist()], dtype=bool) & (n > 0)
        if not new.any():
            return self
        rate = (k[new] + self.prior_pairs * reference) / (n[new] + self.prior_pairs)
        groups_ = np.r_[getattr(self, "groups_", np.empty(0, dtype=str)), g[new]].astype(str)
        offsets_ = np.r_[getattr(self, "offsets_", np.empty(0)), _logit(rate) - _logit(reference)]
        order = np.argsort(groups_, kind="stable")
        self.groups_, self.offsets_ = groups_[order], offsets_[order]
        return self

    def _map(self, s: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return np.interp(s, self.x_, self.y_)
        return 1.0 / (1.0 + np.exp(-(self.x_[0] * s + self.y_[0])))

    def predict(self, scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """P(redeem) for each score; with ``groups`` (same shape, or one per column of a 2-d
        ``scores``), each group's offset applied (a group not seen in fitting: none)."""
        if not hasattr(self, "x_"):
            raise AffinityInputError("RedeemCalibrator is not fitted")
        s = np.asarray(scores, dtype=np.float64)
        p = self._map(s)
        offsets = getattr(self, "offsets_", None)
        if groups is None or offsets is None or not len(offsets):
            return p
        off = self.offsets_for(groups)
        if off.shape != p.shape:
            off = np.broadcast_to(off, p.shape)
        return np.where(off != 0.0, _sigmoid(_logit(p) + off), p)

    def offsets_for(self, groups: np.ndarray) -> np.ndarray:
        """The log-odds offset of each group (0 for a group not seen in fitting)."""
        g = np.asarray(groups).astype(str)
        if not len(self.groups_):
            return np.zeros(g.shape)
        pos = np.clip(np.searchsorted(self.groups_, g), 0, len(self.groups_) - 1)
        return np.where(self.groups_[pos] == g, self.offsets_[pos], 0.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"method": np.asarray(self.method), "x": self.x_, "y": self.y_}
        if len(getattr(self, "offsets_", ())):
            out |= {"groups": self.groups_.astype(str), "offsets": self.offsets_}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RedeemCalibrator:
        cal = cls(str(arrays["method"]))  # type: ignore[arg-type]
        cal.x_ = np.asarray(arrays["x"], dtype=np.float64)
        cal.y_ = np.asarray(arrays["y"], dtype=np.float64)
        cal.groups_ = np.asarray(arrays.get("groups", np.empty(0, dtype=str))).astype(str)
        cal.offsets_ = np.asarray(arrays.get("offsets", np.empty(0)), dtype=np.float64)
        return cal


_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


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
