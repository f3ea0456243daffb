"""What happens after one campaign send to each treated member (see features.sim.response).

:func:`outcomes` is the ``easy`` model (unchanged draws, so the same seed gives the same
bytes); :func:`outcomes_hard` adds, for the other levels, harm (a suppressed baseline basket),
pull-forward (an induced basket removes a later baseline one), qualifying baskets for
redemptions and auto-applied offers that are redeemed without being viewed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sim.config import SimConfig
from features.sim.members import DAY, Members
from features.sim.purchases import Purchases
from features.sim.qualify import qualifies
from features.sim.response import (
    Context,
    OfferParams,
    Response,
    baseline_probability,
    respond,
)

__all__ = ["Outcome", "outcomes", "outcomes_hard"]

_NONE = np.iinfo(np.int64).max


@dataclass
class Outcome:
    """What happened after one send to each treated member."""

    r: Response
    p0_window: np.ndarray
    p0_duration: np.ndarray
    induced: np.ndarray
    induced_ts: np.ndarray
    redeemed: np.ndarray
    redeemed_ts: np.ndarray
    viewed: np.ndarray
    viewed_ts: np.ndarray
    dismissed: np.ndarray
    dismissed_ts: np.ndarray
    removed: np.ndarray | None = None  # key positions of baseline baskets that did not happen


def outcomes(
    rng: np.random.Generator,
    m: Members,
    p: Purchases,
    mean_line: np.ndarray,
    op: OfferParams,
    cfg: SimConfig,
    channel: str,
    mi: np.ndarray,
    oi: np.ndarray,
    st: np.ndarray,
) -> Outcome:
    """The ``easy`` outcome of sends (member mi[i], offer oi[i]) at st[i]."""
    n, w = len(mi), cfg.effect_window_days
    r = respond(m, mean_line, op, mi, oi)
    dur = np.minimum(op.duration[oi], w)
    dur_s = (dur * DAY).astype(np.int64)
    base_ts = p.first_at_or_after(mi, st)
    has_base = base_ts < st + dur_s
    induced = rng.random(n) < r.q
    delay = np.maximum((dur_s * rng.beta(1.2, 2.5, n)).astype(np.int64), 300)
    ind_ts = st + np.minimum(delay, dur_s - 1)
    sure = ~induced & has_base & (rng.random(n) < r.alpha)  # redeemed on a baseline basket
    redeemed = r.redeemable & (induced | sure)
    red_ts = np.where(induced, ind_ts, np.where(has_base, base_ts, st))
    vp = np.clip(m.view_prob[mi] * (1.1 if channel == "app" else 0.95), 0, 0.98)
    viewed = redeemed | (rng.random(n) < vp)
    free_view = st + np.minimum(rng.exponential(1.5 * DAY, n).astype(np.int64), w * DAY - 7200)
    view_ts = np.where(
        redeemed, st + ((red_ts - st) * rng.uniform(0.05, 0.95, n)).astype(np.int64), free_view
    )
    dismissed = viewed & ~redeemed & (rng.random(n) < cfg.dismiss_share)
    dis_ts = np.minimum(view_ts + rng.exponential(2 * 3600, n).astype(np.int64), st + w * DAY - 1)
    return Outcome(
        r=r,
        p0_window=baseline_probability(m, mi, st, w),
        p0_duration=baseline_probability(m, mi, st, dur),
        induced=induced,
        induced_ts=ind_ts,
        redeemed=redeemed,
        redeemed_ts=red_ts,
        viewed=viewed,
        viewed_ts=view_ts,
        dismissed=dismissed,
        dismissed_ts=dis_ts,
    )


def first_qualifying(
    p: Purchases,
    member: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    min_spend: np.ndarray,
    category: np.ndarray,
) -> np.ndarray:
    """Key position of each member's first basket in [start, stop) that qualifies (-1: none)."""
    assert p.cat_bits is not None
    pos = p.first_pos(member, start, stop)
    last = np.searchsorted(p.key, p.member_key(member, stop), side="left")
    out = np.full(len(member), -1, dtype=np.int64)
    todo = np.flatnonzero(pos >= 0)
    cur = pos[todo]
    while len(todo):
        ok = qualifies(p.totals(cur), p.cat_bits[cur], min_spend[todo], category[todo])
        out[todo[ok]] = cur[ok]
        nxt = cur + 1
        go = ~ok & (nxt < last[todo])
        todo, cur = todo[go], nxt[go]
    return out


def outcomes_hard(
    rng: np.random.Generator,
    m: Members,
    p: Purchases,
    mean_line: np.ndarray,
    op: OfferParams,
    cfg: SimConfig,
    channel: str,
    mi: np.ndarray,
    oi: np.ndarray,
    st: np.ndarray,
    ctx: Context,
) -> Outcome:
    """The outcome of sends at a non-easy level (see the module docstring)."""
    d = cfg.difficulty
    n, w = len(mi), cfg.effect_window_days
    r = respond(m, mean_line, op, mi, oi, ctx)
    assert r.h is not None and r.a is not None and r.auto is not None
    dur = np.minimum(op.duration[oi], w)
    dur_s = (dur * DAY).astype(np.int64)
    if d.redemption_rules:
        q_pos = first_qualifying(p, mi, st, st + dur_s, op.min_spend[oi], op.category[oi])
    else:
        q_pos = p.first_pos(mi, st, st + dur_s)
    has_qual = q_pos >= 0
    q_ts = np.where(has_qual, (p.key[np.maximum(q_pos, 0)] & ((1 << p.bits) - 1)) + p.origin, st)
    u = rng.random(n)
    induced = u < r.q
    suppressed = ~induced & (u < r.q + r.h)
    delay = np.maximum((dur_s * rng.beta(1.2, 2.5, n)).astype(np.int64), 300)
    ind_ts = st + np.minimum(delay, dur_s - 1)
    sure = ~induced & ~suppressed & has_qual & (rng.random(n) < r.a)
    redeemed = r.redeemable & (induced | sure)
    red_ts = np.where(induced, ind_ts, q_ts)
    vp = np.clip(m.view_prob[mi] * (1.1 if channel == "app" else 0.95), 0, 0.98)
    # Auto-applied offers are redeemed at checkout whether or not the member saw them.
    viewed = (redeemed & ~r.auto) | (rng.random(n) < vp)
    free_view = st + np.minimum(rng.exponential(1.5 * DAY, n).astype(np.int64), w * DAY - 7200)
    before = st + ((red_ts - st) * rng.uniform(0.05, 0.95, n)).astype(np.int64)
    view_ts = np.where(redeemed, before, free_view)
    dismissed = viewed & ~redeemed & (rng.random(n) < cfg.dismiss_share)
    dis_ts = np.minimum(view_ts + rng.exponential(2 * 3600, n).astype(np.int64), st + w * DAY - 1)

    # Baseline baskets that no longer happen: the first in W of a suppressed member, and the
    # first after W (within pull_forward_days) of a member whose basket was pulled forward.
    w_s = w * DAY
    gone = p.first_pos(mi[suppressed], st[suppressed], st[suppressed] + w_s)
    pulled = induced & (rng.random(n) < d.pull_forward)
    a = st[pulled] + w_s
    later = p.first_pos(mi[pulled], a, a + d.pull_forward_days * DAY)
    removed = np.unique(np.concatenate([gone[gone >= 0], later[later >= 0]]))
    return Outcome(
        r=r,
        p0_window=baseline_probability(m, mi, st, w),
        p0_duration=baseline_probability(m, mi, st, dur),
        induced=induced,
        induced_ts=ind_ts,
        redeemed=redeemed,
        redeemed_ts=red_ts,
        viewed=viewed,
        viewed_ts=view_ts,
        dismissed=dismissed,
        dismissed_ts=dis_ts,
        removed=removed,
    )
