"""Policies over arms as probability matrices (rows: members, columns: arms, column 0 = none).

* :func:`send_policy`: the engine's send rule on predicted effects. Like the engine's scoring
  (``serving.engine.scoring``: expected incremental value = value - cost, an offer is sent
  only when its value is above ``min_value``), each member gets the arm with the highest
  predicted incremental value net of the arm's cost, or nothing when no arm is worth its cost.
* :func:`fixed_arm`, :func:`uniform`: the simple alternatives (an arm to all, nobody, random).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from training.policy.randomized import PolicyInputError

__all__ = ["fixed_arm", "one_hot", "send_policy", "send_share", "uniform"]


def one_hot(choice: ArrayLike, n_arms: int) -> NDArray[np.float64]:
    """(n, n_arms) deterministic policy from one arm index per row."""
    idx = np.asarray(choice, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_arms):
        raise PolicyInputError(f"choice must lie in [0, {n_arms}); got {idx.min()}..{idx.max()}")
    out = np.zeros((idx.shape[0], n_arms))
    out[np.arange(idx.shape[0]), idx] = 1.0
    return out


def send_policy(
    effects: ArrayLike, cost: ArrayLike | float = 0.0, min_value: float = 0.0
) -> NDArray[np.float64]:
    """The engine's rule: per row, argmax of ``effect - cost`` over the arms 1..K, or arm 0
    (none) when that best net value is not above ``min_value``.

    ``effects`` is (n, K): predicted incremental value of each arm against none; ``cost`` is
    one number or one per arm (K,). Returns the (n, K + 1) one-hot policy.
    """
    eff = np.asarray(effects, dtype=np.float64)
    if eff.ndim != 2 or eff.shape[1] == 0:
        raise PolicyInputError(f"effects must have shape (n, arms >= 1); got {eff.shape}")
    if not np.isfinite(eff).all():
        r, c = np.argwhere(~np.isfinite(eff))[0]
        raise PolicyInputError(f"effects must be finite; row {r}, arm {c} is {eff[r, c]}")
    c = np.broadcast_to(np.asarray(cost, dtype=np.float64), (eff.shape[1],))
    if (c < 0).any() or not np.isfinite(c).all():
        raise PolicyInputError(f"cost must be finite and >= 0; got {c.tolist()}")
    net = eff - c[None, :]
    best = net.argmax(axis=1)
    send = net[np.arange(eff.shape[0]), best] > min_value
    return one_hot(np.where(send, best + 1, 0), eff.shape[1] + 1)


def fixed_arm(n: int, n_arms: int, arm: int) -> NDArray[np.float64]:
    """Everyone gets ``arm`` (0 = nobody gets anything)."""
    if not 0 <= arm < n_arms:
        raise PolicyInputError(f"arm must lie in [0, {n_arms}); got {arm}")
    return one_hot(np.full(n, arm), n_arms)


def uniform(n: int, n_arms: int) -> NDArray[np.float64]:
    """Every arm (none included) with probability ``1 / n_arms``."""
    return np.full((n, n_arms), 1.0 / n_arms)


def send_share(policy: NDArray[np.float64]) -> float:
    """Expected share of members who get an arm other than none (column 0)."""
    return float(1.0 - policy[:, 0].mean())
