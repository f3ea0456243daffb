"""Which baskets can carry a redemption: total >= the offer's min_spend and, when the offer has
a category, at least one line in it (the ``redemption_rules`` of the non-easy levels).

:func:`qualify_share` estimates, for every (member, offer), the probability that one of the
member's baseline baskets qualifies, from ``mc_baskets`` baskets per member drawn with the
simulator's own basket model and a fixed seed: ``training.policy.truth`` recomputes exactly
the same numbers from the latent traits, so the truth files and the rebuilt model agree.
"""

from __future__ import annotations

import numpy as np

from features.sim import config as C
from features.sim.purchases import line_amounts, sample_categories

__all__ = ["category_bits", "qualifies", "qualify_share"]

_CHUNK_MEMBERS = 8192  # members per block of the estimate (fixed: the numbers depend on it)


def category_bits(basket: np.ndarray, category: np.ndarray, n_baskets: int) -> np.ndarray:
    """Per basket, a bit mask of the categories of its lines (bit c = category c)."""
    bits = np.zeros(n_baskets, dtype=np.int16)
    np.bitwise_or.at(bits, basket, (np.int16(1) << category.astype(np.int16)))
    return bits


def qualifies(
    total: np.ndarray, bits: np.ndarray, min_spend: np.ndarray, category: np.ndarray
) -> np.ndarray:
    """Whether each basket (total, category bits) qualifies for its paired offer."""
    has_cat = category >= 0
    in_cat = (bits >> np.where(has_cat, category, 0).astype(np.int16)) & 1
    return (total >= min_spend) & (~has_cat | (in_cat == 1))


def qualify_share(
    pref: np.ndarray,
    spend_scale: np.ndarray,
    min_spend: np.ndarray,
    category: np.ndarray,
    k: int,
    seed: int,
) -> np.ndarray:
    """(members, offers) float32: share of ``k`` simulated baskets per member that qualify.

    Exact for offers without a minimum spend: 1 without a category, else the probability
    that one of the basket's 1-3 lines is in it.
    """
    n, n_off = len(pref), len(min_spend)
    out = np.ones((n, n_off), dtype=np.float32)
    for j in np.flatnonzero((category >= 0) & (min_spend <= 0)):
        miss = 1.0 - pref[:, category[j]].astype(np.float64)
        p_any = sum(p * (1 - miss ** (i + 1)) for i, p in enumerate(C.LINES_P))
        out[:, j] = p_any.astype(np.float32)
    open_ = min_spend <= 0
    if open_.all() or n == 0:
        return out
    for block, a in enumerate(range(0, n, _CHUNK_MEMBERS)):
        rng = np.random.default_rng([seed, 0x5157, block])
        members = np.arange(a, min(a + _CHUNK_MEMBERS, n))
        nb = len(members) * k
        b_member = np.repeat(members, k)
        n_lines = rng.choice(3, size=nb, p=C.LINES_P) + 1
        basket = np.repeat(np.arange(nb), n_lines)
        l_member = b_member[basket]
        cat = sample_categories(rng, pref, l_member, 2_000_000)
        _, _, amount = line_amounts(rng, cat, spend_scale[l_member])
        total = np.bincount(basket, weights=amount, minlength=nb)
        bits = category_bits(basket, cat, nb)
        for j in np.flatnonzero(~open_):
            ok = qualifies(total, bits, min_spend[j], np.full(nb, category[j]))
            out[members, j] = ok.reshape(len(members), k).mean(axis=1)
    return out
