"""Off-policy value estimators for logs with known propensities, with 95% intervals.

Every estimator takes the logged data as plain arrays:

* ``actions`` (n,): the logged action per row, an integer in ``[0, m)``;
* ``rewards`` (n,): the observed reward of that action (finite);
* ``propensities`` (n,): the probability the logging policy gave the logged action, in (0, 1];
* ``policy`` (n, m): the evaluated policy's probability of every action per row (each row in
  [0, 1] and summing to at most 1; a deterministic policy is one-hot);
* ``q`` (n, m), for DR only: a reward model's prediction for every action per row.

and returns an :class:`Estimate` (value, standard error, normal 95% interval, rows):

* **IPS**: ``mean(w * r)`` with ``w = policy[i, a_i] / p_i``;
* **SNIPS**: ``sum(w * r) / sum(w)`` (standard error by the delta method);
* **DR**: ``mean(sum_a policy[i, a] q[i, a] + w * (r - q[i, a_i]))``;
* :func:`ips_contrast`: IPS of ``V(policy) - V(reference)`` on the same rows, with the paired
  standard error (e.g. incremental value over sending nothing).

Bad inputs raise :class:`PolicyInputError` naming the argument and the offending value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Z95",
    "Estimate",
    "PolicyInputError",
    "dr",
    "ips",
    "ips_contrast",
    "snips",
]

Z95 = 1.959963984540054  # two-sided 95% normal quantile


class PolicyInputError(ValueError):
    """An estimator got an input it cannot use (names the argument and the value)."""


@dataclass(frozen=True)
class Estimate:
    """A policy value with its standard error and normal 95% interval over ``n`` rows."""

    value: float
    se: float
    low: float
    high: float
    n: int

    @classmethod
    def from_mean(cls, value: float, se: float, n: int) -> Estimate:
        """The estimate ``value ± 1.96 se``."""
        return cls(float(value), float(se), float(value - Z95 * se), float(value + Z95 * se), n)

    def shifted(self, offset: float) -> Estimate:
        """The same estimate plus a known constant (e.g. minus a known cost)."""
        return Estimate(self.value + offset, self.se, self.low + offset, self.high + offset, self.n)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vector(name: str, values: ArrayLike, n: int | None = None) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise PolicyInputError(f"{name} must be 1-D; got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise PolicyInputError(f"{name} has {arr.shape[0]} rows but actions has {n}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise PolicyInputError(f"{name} must be finite; row {bad[0]} is {arr[bad[0]]}")
    return arr


def _matrix(name: str, values: ArrayLike, n: int) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise PolicyInputError(f"{name} must have shape (n={n}, actions); got {arr.shape}")
    if arr.shape[1] == 0:
        raise PolicyInputError(f"{name} has no action columns")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        r, c = bad[0]
        raise PolicyInputError(f"{name} must be finite; row {r}, action {c} is {arr[r, c]}")
    return arr


def _checked(
    actions: ArrayLike, rewards: ArrayLike, propensities: ArrayLike, policy: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    raw = np.asarray(actions)
    if raw.ndim != 1:
        raise PolicyInputError(f"actions must be 1-D; got shape {raw.shape}")
    n = raw.shape[0]
    if n == 0:
        raise PolicyInputError("actions is empty: no logged rows")
    if not np.issubdtype(raw.dtype, np.integer):
        raise PolicyInputError(f"actions must be integers; got dtype {raw.dtype}")
    a = raw.astype(np.int64)
    r = _vector("rewards", rewards, n)
    p = _vector("propensities", propensities, n)
    bad = np.flatnonzero((p <= 0) | (p > 1))
    if bad.size:
        raise PolicyInputError(f"propensities must lie in (0, 1]; row {bad[0]} is {p[bad[0]]}")
    pi = _matrix("policy", policy, n)
    if pi.min() < 0 or pi.max() > 1:
        r_, c_ = np.argwhere((pi < 0) | (pi > 1))[0]
        raise PolicyInputError(
            f"policy probabilities must lie in [0, 1]; row {r_}, action {c_} is {pi[r_, c_]}"
        )
    over = np.flatnonzero(pi.sum(axis=1) > 1 + 1e-9)
    if over.size:
        raise PolicyInputError(
            f"policy rows must sum to at most 1; row {over[0]} sums to {pi[over[0]].sum()}"
        )
    out = np.flatnonzero((a < 0) | (a >= pi.shape[1]))
    if out.size:
        raise PolicyInputError(
            f"actions must lie in [0, {pi.shape[1]}) (the policy's columns); "
            f"row {out[0]} is {a[out[0]]}"
        )
    return a, r, p, pi


def _weights(a: NDArray[np.int64], p: NDArray[np.float64], pi: NDArray[np.float64]):
    return pi[np.arange(a.shape[0]), a] / p


def _mean_estimate(terms: NDArray[np.float64]) -> Estimate:
    n = terms.shape[0]
    se = terms.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return Estimate.from_mean(float(terms.mean()), float(se), n)


def ips(
    actions: ArrayLike, rewards: ArrayLike, propensities: ArrayLike, policy: ArrayLike
) -> Estimate:
    """Inverse propensity scoring: ``mean(policy[i, a_i] / p_i * r_i)``."""
    a, r, p, pi = _checked(actions, rewards, propensities, policy)
    return _mean_estimate(_weights(a, p, pi) * r)


def snips(
    actions: ArrayLike, rewards: ArrayLike, propensities: ArrayLike, policy: ArrayLike
) -> Estimate:
    """Self-normalised IPS: ``sum(w r) / sum(w)``; delta-method standard error.

    Raises :class:`PolicyInputError` when every weight is 0 (the policy never takes a logged
    action, so the logs say nothing about it).
    """
    a, r, p, pi = _checked(actions, rewards, propensities, policy)
    w = _weights(a, p, pi)
    total = w.sum()
    if total <= 0:
        raise PolicyInputError("policy: gives probability 0 to every logged action (SNIPS)")
    value = float((w * r).sum() / total)
    n = a.shape[0]
    se = float(np.sqrt((w**2 * (r - value) ** 2).sum()) / total) if n > 1 else float("nan")
    return Estimate.from_mean(value, se, n)


def dr(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    policy: ArrayLike,
    q: ArrayLike,
) -> Estimate:
    """Doubly robust: the reward model's value of the policy plus an IPS correction."""
    a, r, p, pi = _checked(actions, rewards, propensities, policy)
    qm = _matrix("q", q, a.shape[0])
    if qm.shape != pi.shape:
        raise PolicyInputError(f"q has shape {qm.shape} but policy has {pi.shape}")
    rows = np.arange(a.shape[0])
    terms = (pi * qm).sum(axis=1) + _weights(a, p, pi) * (r - qm[rows, a])
    return _mean_estimate(terms)


def ips_contrast(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    policy: ArrayLike,
    reference: ArrayLike,
) -> Estimate:
    """IPS of ``V(policy) - V(reference)`` on the same logged rows (paired standard error)."""
    a, r, p, pi = _checked(actions, rewards, propensities, policy)
    _, _, _, ref = _checked(a, r, p, reference)
    if ref.shape != pi.shape:
        raise PolicyInputError(f"reference has shape {ref.shape} but policy has {pi.shape}")
    return _mean_estimate((_weights(a, p, pi) - _weights(a, p, ref)) * r)
