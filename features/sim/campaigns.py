"""Past campaigns with randomised assignment, their offer events and the purchases they induce.

Each campaign (one send time, one channel) targets a random share of the opted-in members who
joined before the send. A member is kept only if at least one of the campaign's offers is
eligible for them (catalog eligibility, moment, per-member cap, as observable at the send). The
kept members are randomised: ``control_share`` of them are held out (a ``held_out`` event with
``propensity = control_share``); each of the others gets one of their K eligible offers drawn
uniformly (``propensity = (1 - control_share) / K``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

from features.catalog.model import Catalog, CatalogOffer
from features.sim import config as C
from features.sim.config import SimConfig
from features.sim.members import DAY, Members
from features.sim.outcomes import Outcome, outcomes, outcomes_hard
from features.sim.purchases import (
    Lines,
    Purchases,
    basket_places,
    line_amounts,
    sample_categories,
)
from features.sim.qualify import category_bits
from features.sim.response import (
    INDUCED_SIGMA,
    Context,
    OfferParams,
    baseline_probability,
    effects,
    redeem_probability,
)
from features.sources.schema import CHANNELS, EVENTS, LIFECYCLE_STAGES, OFFER_KINDS

__all__ = ["CampaignLog", "run_campaigns"]

EV = {e: np.int8(i) for i, e in enumerate(EVENTS)}
YEAR = 365.2425


@dataclass
class CampaignLog:
    """Everything the campaigns produced, as arrays (concatenated over campaigns)."""

    ids: list[str] = field(default_factory=list)
    events: dict[str, list[np.ndarray]] = field(default_factory=dict)
    truth: dict[str, list[np.ndarray]] = field(default_factory=dict)
    induced: list[Lines] = field(default_factory=list)
    bonus_points: np.ndarray | None = None
    sends: np.ndarray | None = None  # per member: offers received over all campaigns
    removed: np.ndarray | None = None  # basket numbers of baseline baskets that did not happen
    budget_spent: np.ndarray | None = None  # per offer, in its budget's unit
    budget_closed: np.ndarray | None = None  # per offer: left out of a campaign for its budget
    budget_sends: np.ndarray | None = None  # per offer: sends so far
    budget_redemptions: np.ndarray | None = None  # per offer: redemptions so far

    def add(self, store: dict[str, list[np.ndarray]], **cols: np.ndarray) -> None:
        for k, v in cols.items():
            store.setdefault(k, []).append(v)

    def cat(self, store: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in store.items()}


def _days(s: np.ndarray | int) -> np.ndarray:
    return np.asarray(s) // DAY


@dataclass
class _State:
    """What is observable about the targeted members at the send time."""

    stage: np.ndarray  # int index into LIFECYCLE_STAGES
    tier: np.ndarray  # int index into cfg.tiers
    points: np.ndarray
    annual_spend: np.ndarray
    baskets: np.ndarray
    days_to_birthday: np.ndarray
    days_to_anniversary: np.ndarray
    tenure_days: np.ndarray


def _state(
    m: Members,
    p: Purchases,
    induced: list[Lines],
    bonus: np.ndarray,
    idx: np.ndarray,
    t: int,
    cfg: SimConfig,
) -> _State:
    tt = np.full(len(idx), t, dtype=np.int64)
    last = p.last_before(idx, tt)
    year_ago = np.maximum(t - 365 * DAY, p.origin)
    _, spend = p.window(idx, np.full(len(idx), year_ago), tt)
    baskets, _ = p.window(idx, np.full(len(idx), p.origin), tt)
    spend = spend.astype(float)
    # Purchases induced by earlier campaigns count too (one line = one basket).
    pos = np.full(m.n, -1, dtype=np.int64)
    for ln in induced:
        before = ln.ts < t
        np.maximum.at(pos, ln.member[before], ln.ts[before])
        sel = before & (ln.ts >= year_ago)
        extra = np.bincount(ln.member[sel], weights=ln.amount[sel], minlength=m.n)
        spend += extra[idx]
        baskets = baskets + np.bincount(ln.member[before], minlength=m.n)[idx]
    last = np.maximum(last, pos[idx])
    tenure = (t - m.joined_at[idx]) / DAY
    since = np.where(last >= 0, (t - last) / DAY, np.inf)
    stage = np.select(
        [
            tenure < cfg.onboarding_days,
            since <= cfg.lapsing_after_days,
            since <= cfg.lapsed_after_days,
        ],
        [0, 1, 2],
        default=3,
    )
    covered = (t - year_ago) / DAY
    annual = spend * 365 / max(covered, 1.0)
    tier = np.searchsorted(np.asarray(cfg.tier_thresholds), annual, side="right") - 1
    points = np.floor(annual * m.keep_share[idx]) + bonus[idx]
    t_day = t // DAY
    return _State(
        stage=stage,
        tier=tier,
        points=points,
        annual_spend=annual,
        baskets=baskets,
        days_to_birthday=np.mod(_days(m.birth_date[idx]) - t_day, YEAR),
        days_to_anniversary=np.mod(_days(m.joined_at[idx]) - t_day, YEAR),
        tenure_days=tenure,
    )


def _eligible(o: CatalogOffer, s: _State, m: Members, idx: np.ndarray, cfg: SimConfig):
    ok = np.ones(len(idx), dtype=bool)
    e = o.eligibility
    if e is not None:
        if e.tiers is not None:
            ok &= np.isin(s.tier, [cfg.tiers.index(x) for x in e.tiers])
        if e.lifecycle_stages is not None:
            ok &= np.isin(s.stage, [LIFECYCLE_STAGES.index(x) for x in e.lifecycle_stages])
        if e.segments is not None:
            known = [C.SEGMENTS.index(x) for x in e.segments if x in C.SEGMENTS]
            seg = m.segment if m.published_segment is None else m.published_segment
            ok &= np.isin(seg[idx], known)
        if e.min_points is not None:
            ok &= s.points >= e.min_points
    if o.moment == "birthday":
        ok &= (s.days_to_birthday < 14) | (s.days_to_birthday > YEAR - 3)
    elif o.moment == "anniversary":
        ok &= (s.days_to_anniversary < 14) & (s.tenure_days > 300)
    elif o.moment == "tier_nudge":
        th = np.asarray((*cfg.tier_thresholds, np.inf))
        nxt = th[np.minimum(s.tier + 1, len(th) - 1)]
        ok &= (nxt - s.annual_spend) <= 0.2 * nxt
    elif o.moment == "milestone":
        ok &= (s.baskets >= 40) & (s.baskets < 50)
    elif o.moment == "onboarding":
        ok &= s.stage == 0
    return ok


def _valid_on(o: CatalogOffer, d: date, channel: str) -> bool:
    if o.valid_from is not None and d < o.valid_from:
        return False
    if o.valid_to is not None and d > o.valid_to:
        return False
    return o.channels is None or channel in o.channels


def _pool(
    rng: np.random.Generator,
    offers: list[CatalogOffer],
    used: np.ndarray,
    day: date,
    channel: str,
    cfg: SimConfig,
    open_: np.ndarray | None = None,
) -> np.ndarray:
    """Offers of one campaign: the least used regular offers plus every surprise offer
    (``open_``: offers whose budget is not used up yet; default all)."""
    n_off = len(offers)
    valid = np.array([_valid_on(o, day, channel) for o in offers])
    if open_ is not None:
        valid &= open_
    surprise = np.array([o.surprise for o in offers])
    order = np.lexsort((rng.random(n_off), used))  # least used first, random tie-break
    regular = [i for i in order if valid[i] and not surprise[i]][: cfg.offers_per_campaign]
    used[regular] += 1
    return np.array(sorted(regular + [i for i in range(n_off) if valid[i] and surprise[i]]))


def _randomise(
    rng: np.random.Generator, elig: np.ndarray, cfg: SimConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control flag, chosen pool column and propensity of members with >= 1 eligible offer."""
    n_t, n_elig = len(elig), elig.sum(axis=1)
    control = rng.random(n_t) < cfg.control_share
    pick = np.floor(rng.random(n_t) * n_elig).astype(np.int64)  # uniform among eligible
    col = np.argmax(np.cumsum(elig, axis=1) == (pick + 1)[:, None], axis=1)
    prop = np.where(control, cfg.control_share, (1 - cfg.control_share) / n_elig)
    return control, col, prop


def _induced_lines(
    rng: np.random.Generator,
    m: Members,
    op: OfferParams,
    cfg: SimConfig,
    mi: np.ndarray,
    oi: np.ndarray,
    out: Outcome,
    first_basket: int,
) -> Lines:
    """Induced baskets: one line in the offer's category (or a liked one), >= min_spend."""
    sel = out.induced
    im, io, n = mi[sel], oi[sel], int(sel.sum())
    cat = op.category[io]
    cat = np.where(cat >= 0, cat, sample_categories(rng, m.pref, im, cfg.chunk_rows))
    cat = cat.astype(np.int8)
    sku, qty, _ = line_amounts(rng, cat, m.spend_scale[im])
    above = out.r.mu[sel] - op.min_spend[io]
    noise = np.exp(rng.normal(-(INDUCED_SIGMA**2) / 2, INDUCED_SIGMA, n))  # mean 1
    amount = np.maximum(np.round(op.min_spend[io] + above * noise, 2), 0.2)
    chan, store = basket_places(rng, m, im)
    return Lines(
        member=im.astype(np.int32),
        basket=np.arange(first_basket, first_basket + n),
        ts=out.induced_ts[sel],
        category=cat,
        sku=sku,
        quantity=qty,
        amount=amount,
        channel=chan,
        store=store,
    )


def _within_budget(
    pool: np.ndarray,
    elig: np.ndarray,
    log: CampaignLog,
    budgets: np.ndarray,
    unit_cost: np.ndarray,
    cfg: SimConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The pool without the offers whose expected use in this send would overrun what is left
    of their budget (expected sends x the offer's redemption rate so far, prior 10 %); an
    offer's first send is always made.

    Offers are dropped from the whole campaign (never from some members only), so the logged
    propensities and the pool a policy evaluation rebuilds from the events stay exact.
    """
    assert log.budget_sends is not None and log.budget_redemptions is not None
    assert log.budget_spent is not None and log.budget_closed is not None
    k = np.maximum(elig.sum(axis=1, keepdims=True), 1)
    sends = (elig / k).sum(axis=0) * (1 - cfg.control_share)
    rate = (log.budget_redemptions[pool] + 1.0) / (log.budget_sends[pool] + 10.0)
    use = sends * rate * unit_cost[pool]
    # An offer never sent yet goes out once (its redemption rate is unknown); after that it
    # stays only while what is left covers the expected use.
    first = log.budget_sends[pool] == 0
    ok = first | (log.budget_spent[pool] + use <= budgets[pool])
    log.budget_closed[pool[~ok]] = True
    return pool[ok], elig[:, ok]


def run_campaigns(
    rng: np.random.Generator,
    m: Members,
    p: Purchases,
    mean_line: np.ndarray,
    catalog: Catalog,
    op: OfferParams,
    cfg: SimConfig,
    first_basket: int,
    budgets: np.ndarray | None = None,
    qualify: np.ndarray | None = None,
    pair_seed: int = 0,
) -> CampaignLog:
    """Run the past campaigns in time order; see the module docstring for the design.

    Non-easy levels: ``budgets`` (per offer, in the unit of its budget; inf: none) close an
    offer to later campaigns once its redemptions used it up; ``qualify`` and ``pair_seed``
    feed the response model (``features.sim.response.Context``).
    """
    d = cfg.difficulty
    sends = np.zeros(m.n, dtype=np.int32)  # offers received so far, per member (fatigue)
    bonus_points = np.zeros(m.n)  # log.bonus_points, added to in place below
    log = CampaignLog(bonus_points=bonus_points, sends=sends)
    offers = catalog.offers
    log.budget_spent = np.zeros(len(offers))
    unit_cost = np.array(
        [o.cost if o.budget is not None and o.budget.unit == "money" else 1.0 for o in offers]
    )
    removed: list[np.ndarray] = []
    log.budget_sends = np.zeros(len(offers))
    log.budget_redemptions = np.zeros(len(offers))
    log.budget_closed = np.zeros(len(offers), dtype=bool)
    if not d.is_easy:
        p.basket_no = np.arange(len(p.key))
        p.cat_bits = category_bits(p.lines.basket, p.lines.category, len(p.key))
    received = np.zeros((m.n, len(offers)), dtype=np.uint8)  # sends per member and offer
    used = np.zeros(len(offers))
    w = cfg.effect_window_days
    last_day = cfg.history_days - w - 2
    days = np.round(np.linspace(cfg.first_campaign_day, last_day, cfg.n_campaigns)).astype(int)
    next_basket = first_basket
    bonus_kind = OFFER_KINDS.index("bonus_points")
    for k, day in enumerate(days):
        t = int(p.origin + day * DAY + 10 * 3600)
        channel = cfg.campaign_channels[k % len(cfg.campaign_channels)]
        send_date = (datetime(1970, 1, 1) + timedelta(seconds=t)).date()
        log.ids.append(f"cmp-{k + 1:02d}-{send_date.isoformat()}-{channel}")
        ch, ci = np.int8(CHANNELS.index(channel)), np.int16(k)

        def emit(member, ts, ev, off, pr, ch=ch, ci=ci):
            nn = len(member)
            log.add(
                log.events,
                member=member,
                ts=ts,
                event=np.full(nn, EV[ev]),
                offer=off,
                propensity=pr,
                campaign=np.full(nn, ci),
                channel=np.full(nn, ch),
            )

        # Target, check eligibility at the send, randomise.
        opted = m.email_opt_in if channel == "email" else m.app_opt_in
        cand = opted & (m.joined_at < t) & (rng.random(m.n) < cfg.campaign_share)
        idx = np.flatnonzero(cand)
        s = _state(m, p, log.induced, bonus_points, idx, t, cfg)
        open_ = None if budgets is None else log.budget_spent < budgets
        pool = _pool(rng, offers, used, send_date, channel, cfg, open_)
        caps = np.array([offers[i].per_member_cap or 255 for i in pool])
        elig = np.column_stack([_eligible(offers[i], s, m, idx, cfg) for i in pool])
        elig &= received[idx][:, pool] < caps[None, :]
        if budgets is not None:  # size the send to what is left of each budget
            pool, elig = _within_budget(pool, elig, log, budgets, unit_cost, cfg)
        keep = elig.any(axis=1)
        idx, elig = idx[keep], elig[keep]
        send = t + rng.integers(0, 3600, len(idx))
        control, col, prop = _randomise(rng, elig, cfg)

        # Control: held_out events; truth rows without an offer.
        c_idx, c_send, n_c = idx[control], send[control], int(control.sum())
        emit(c_idx, c_send, "held_out", np.full(n_c, -1), prop[control])
        nan = np.full(n_c, np.nan, dtype=np.float32)
        log.add(
            log.truth,
            campaign=np.full(n_c, ci),
            member=c_idx,
            offer=np.full(n_c, -1),
            ts=c_send,
            propensity=prop[control],
            p_baseline=baseline_probability(m, c_idx, c_send, w),
            affinity=nan,
            tau_conversion=nan,
            tau_spend=nan,
            treated=np.zeros(n_c, bool),
        )

        # Treated: one offer each; what they do; the purchases it induces.
        tr = ~control
        mi, oi, st, n_t = idx[tr], pool[col[tr]], send[tr], int(tr.sum())
        received[mi, oi] += 1
        if d.is_easy:
            out = outcomes(rng, m, p, mean_line, op, cfg, channel, mi, oi, st)
            tau_c, tau_s = out.r.q * (1 - out.p0_window), out.r.q * out.r.mu
        else:
            ctx = Context(d, st, sends[mi], pair_seed, qualify)
            out = outcomes_hard(rng, m, p, mean_line, op, cfg, channel, mi, oi, st, ctx)
            _, tau_c, tau_s = effects(out.r, m, mi, st, w, d)
        sends[mi] += 1
        np.add.at(log.budget_spent, oi[out.redeemed], unit_cost[oi[out.redeemed]])
        np.add.at(log.budget_sends, oi, 1)
        np.add.at(log.budget_redemptions, oi[out.redeemed], 1)
        emit(mi, st, "sent", oi, prop[tr])
        for ev, mask, ts in (
            ("viewed", out.viewed, out.viewed_ts),
            ("redeemed", out.redeemed, out.redeemed_ts),
            ("dismissed", out.dismissed, out.dismissed_ts),
        ):
            emit(mi[mask], ts[mask], ev, oi[mask], np.full(int(mask.sum()), np.nan))
        log.add(
            log.truth,
            campaign=np.full(n_t, ci),
            member=mi,
            offer=oi,
            ts=st,
            propensity=prop[tr],
            p_baseline=out.p0_window,
            affinity=redeem_probability(out.r, out.p0_duration),
            tau_conversion=tau_c,
            tau_spend=tau_s,
            treated=np.ones(n_t, bool),
        )
        got = out.redeemed & (op.kind[oi] == bonus_kind)
        np.add.at(bonus_points, mi[got], op.reward_value[oi[got]] * cfg.points_per_value)
        lines = _induced_lines(rng, m, op, cfg, mi, oi, out, next_basket)
        log.induced.append(lines)
        next_basket += len(lines.member)
        if out.removed is not None and len(out.removed):
            assert p.basket_no is not None
            removed.append(p.basket_no[out.removed])
            p = p.without(out.removed)
    log.removed = np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)
    return log
