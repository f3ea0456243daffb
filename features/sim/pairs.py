"""Deterministic per-(member, offer) random numbers: a hash of (seed, member, offer, stream).

The simulator and ``training.policy.truth`` must draw the same per-pair noise without
storing a (members x offers) table, so it is a pure function of integers (SplitMix64, exact
on every platform) turned into a uniform, a normal or an exponential.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

__all__ = ["pair_exponential", "pair_normal", "pair_uniform"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (uint64 in, uint64 out; wraps modulo 2**64 by design)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def pair_uniform(seed: int, member: np.ndarray, offer: np.ndarray, stream: int) -> np.ndarray:
    """Uniform (0, 1) float64 for each (member[i], offer[i]) pair; same inputs, same numbers."""
    mm = np.asarray(member, dtype=np.int64).astype(np.uint64)
    oo = np.asarray(offer, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = _mix(np.asarray(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(stream)))
        x = _mix(x ^ (mm * _GOLDEN))
        x = _mix(x ^ (oo + _GOLDEN))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def pair_normal(seed: int, member: np.ndarray, offer: np.ndarray, stream: int) -> np.ndarray:
    """Standard normal per pair (inverse CDF of :func:`pair_uniform`)."""
    return ndtri(pair_uniform(seed, member, offer, stream))


def pair_exponential(seed: int, member: np.ndarray, offer: np.ndarray, stream: int) -> np.ndarray:
    """Exponential(1) per pair."""
    return -np.log(pair_uniform(seed, member, offer, stream))
