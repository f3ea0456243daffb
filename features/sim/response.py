"""How members respond to offers: affinity, incrementality and the true treatment effects.

For a member m sent offer o at time t (window W = ``effect_window_days``):

* ``alpha(m, o)`` = sigmoid(A0 + kind base + 0.9 log(C * pref[m, category(o)])
  + log responsiveness[m, kind(o)] + 1.2 (price_sensitivity - 0.5) [monetary kind]
  + 0.3 log(1 + reward_value) - 0.5 log(1 + min_spend / basket_mean[m])): how much m likes o.
* ``iota(m, o)`` = sigmoid(kind incrementality + 1.5 (price_sensitivity - 0.5) + z[m] - 0.2).
* ``q = alpha * iota`` (x ``INFORMATIONAL_EFFECT`` for informational offers): the probability
  that the send *induces* an extra basket in the window (one that would not happen otherwise).
* A redeemable offer is redeemed on the induced basket, or else, with probability alpha, on
  the member's first baseline basket in the offer's validity (``min(duration, W)`` days).
  Informational offers are never redeemed.

So, with p0 = P(baseline basket in the window) = 1 - exp(-rate * exposure):

* ``P(redeem | sent) = q + (1 - q) * p0_duration * alpha`` (0 for informational) — the affinity;
* ``tau_conversion = q * (1 - p0_W)`` — the true lift of P(any purchase in W);
* ``tau_spend = q * (min_spend + mu)`` — the true lift of spend in W, where mu is the mean
  amount above ``min_spend`` of an induced basket.

That is the ``easy`` level. The other levels (``SimConfig.difficulty``, a :class:`Context`
per call) change the response of a pair sent at t to a member with n earlier receipts:

* ``alpha_n = alpha * fatigue**n``; ``q = effect_scale * alpha_n * iota * reach * e^(s z - s^2/2)``
  (capped at 0.5), with z a per-pair standard normal (``features.sim.pairs``), ``reach`` =
  ``lapsed_reach`` after the member's lapse time and 1 before;
* ``h = harm_scale * (1 - alpha) * E`` (capped at 0.5), E a per-pair Exponential(1): the chance
  that the send suppresses the member's first baseline basket in W (exclusive with an induced
  basket; a suppressed member does not redeem);
* redemption on a baseline basket needs a *qualifying* basket (>= min_spend, with a line in the
  offer's category; share ``pi`` per basket, ``features.sim.qualify``) and happens with
  probability ``a`` = alpha_n, or 1 for auto-applied kinds;
* an induced basket removes, with probability ``pull_forward``, the member's first baseline
  basket in the ``pull_forward_days`` after W.

Then ``P(redeem) = q + (1 - q - h) a (1 - (1 - p0_d)^pi)``,
``tau_conversion = q (1 - p0_W) - h p1_W`` (p1: exactly one baseline basket in W) and
``tau_spend = q mu - h p0_W B - q pull_forward p0_F B`` (B: mean basket, p0_F: a baseline
basket in the pull-forward window): the net spend over W plus the pull-forward window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.catalog.model import Catalog
from features.sim import config as C
from features.sim.config import Difficulty
from features.sim.members import DAY, Members
from features.sim.pairs import pair_exponential, pair_normal
from features.sources.schema import OFFER_KINDS

__all__ = [
    "Context",
    "OfferParams",
    "Response",
    "baseline_probability",
    "effects",
    "offer_params",
    "respond",
]

A0 = -1.6
INDUCED_SIGMA = 0.5  # log-normal spread of the induced basket amount above min_spend


@dataclass(frozen=True)
class OfferParams:
    """Numeric view of the catalog's offers (arrays in catalog order)."""

    ids: tuple[str, ...]
    kind: np.ndarray  # int index into OFFER_KINDS
    category: np.ndarray  # int index into C.CATEGORIES, -1 when none / unknown
    reward_value: np.ndarray
    min_spend: np.ndarray  # 0 when none
    duration: np.ndarray  # days, the effect window when none


def offer_params(catalog: Catalog, window_days: int) -> OfferParams:
    """Arrays of the offers' kind, category, value, minimum spend and duration."""
    cat_index = {c: i for i, c in enumerate(C.CATEGORIES)}
    offers = catalog.offers
    return OfferParams(
        ids=tuple(o.offer_id for o in offers),
        kind=np.array([C.KIND_INDEX[o.kind] for o in offers]),
        category=np.array([cat_index.get(o.category or "", -1) for o in offers]),
        reward_value=np.array([o.reward_value for o in offers]),
        min_spend=np.array([o.min_spend or 0.0 for o in offers]),
        duration=np.array([o.duration_days or window_days for o in offers], dtype=float),
    )


@dataclass
class Response:
    """Response parameters of (member, offer) pairs (float32 arrays, one value per pair)."""

    alpha: np.ndarray
    q: np.ndarray  # probability of an induced basket
    mu: np.ndarray  # mean amount of an induced basket (min_spend included)
    redeemable: np.ndarray  # bool
    # Non-easy levels only (None at easy):
    h: np.ndarray | None = None  # probability that the send suppresses a baseline basket
    a: np.ndarray | None = None  # P(redeem on a qualifying baseline basket)
    pi: np.ndarray | None = None  # P(one baseline basket qualifies)
    auto: np.ndarray | None = None  # bool: auto-applied at checkout (no view needed)
    basket_mean: np.ndarray | None = None  # mean amount of a baseline basket


@dataclass
class Context:
    """What a non-easy response needs beyond the pair: the level, the send time(s), each
    pair's earlier receipts, the pair-noise seed and the qualifying shares (members x offers)."""

    difficulty: Difficulty
    t: np.ndarray | int
    n_prev: np.ndarray
    seed: int
    qualify: np.ndarray | None


def respond(
    m: Members,
    mean_line: np.ndarray,
    op: OfferParams,
    member: np.ndarray,
    offer: np.ndarray,
    ctx: Context | None = None,
) -> Response:
    """Affinity, induced-basket probability and amount of the pairs (member[i], offer[i])."""
    f32 = np.float32
    kind = op.kind[offer]
    cat = op.category[offer]
    has_cat = cat >= 0
    catc = np.where(has_cat, cat, 0)
    n_cat = f32(len(C.CATEGORIES))
    pref_term = np.where(has_cat, np.clip(np.log(m.pref[member, catc] * n_cat), -3, 2), 0)
    ps = m.price_sensitivity[member]
    basket_mean = mean_line[member] * f32(float(np.dot(np.arange(1, 4), C.LINES_P)))
    logit = (
        A0
        + C.KIND_BASE[kind]
        + 0.9 * pref_term
        + m.log_resp[member, kind]
        + 1.2 * (ps - 0.5) * C.KIND_MONETARY[kind]
        + 0.3 * np.log1p(op.reward_value[offer])
        - 0.5 * np.log1p(op.min_spend[offer] / basket_mean)
    )
    alpha = (1 / (1 + np.exp(-logit))).astype(f32)
    iota = 1 / (1 + np.exp(-(C.KIND_INCR[kind] + 1.5 * (ps - 0.5) + m.incr_z[member] - 0.2)))
    informational = kind == OFFER_KINDS.index("informational")
    q = (alpha * iota * np.where(informational, C.INFORMATIONAL_EFFECT, 1.0)).astype(f32)
    unit = np.where(has_cat, C.UNIT_PRICE[catc] * m.spend_scale[member], mean_line[member])
    mu = (op.min_spend[offer] + 1.3 * unit).astype(f32)
    if ctx is None or ctx.difficulty.is_easy:
        return Response(alpha=alpha, q=q, mu=mu, redeemable=~informational)
    d = ctx.difficulty
    alpha_n = alpha * np.power(d.fatigue, np.asarray(ctx.n_prev, dtype=np.float64))
    sigma = d.pair_sigma
    noise = np.exp(sigma * pair_normal(ctx.seed, member, offer, 1) - sigma**2 / 2)
    reach = np.where(np.asarray(ctx.t) >= m.lapse_at[member], d.lapsed_reach, 1.0)
    info = np.where(informational, C.INFORMATIONAL_EFFECT, 1.0)
    q = np.minimum(d.effect_scale * alpha_n * iota * info * reach * noise, 0.5).astype(f32)
    harm = d.harm_scale * (1 - alpha) * pair_exponential(ctx.seed, member, offer, 2)
    auto = np.isin(kind, [C.KIND_INDEX[k] for k in d.auto_apply_kinds])
    pi = ctx.qualify[member, offer] if d.redemption_rules and ctx.qualify is not None else 1.0
    return Response(
        alpha=alpha_n.astype(f32),
        q=q,
        mu=mu,
        redeemable=~informational,
        h=np.minimum(harm, 0.5).astype(f32),
        a=np.where(auto, 1.0, alpha_n).astype(f32),
        pi=np.broadcast_to(np.asarray(pi, dtype=f32), q.shape),
        auto=auto,
        basket_mean=basket_mean.astype(f32),
    )


def baseline_probability(
    m: Members, member: np.ndarray, t: np.ndarray | int, days: np.ndarray | float
) -> np.ndarray:
    """P(at least one baseline basket in [t, t + days)): Poisson with the member's rate."""
    stop = np.minimum(np.asarray(t) + (np.asarray(days) * DAY).astype(np.int64), m.lapse_at[member])
    exposure = np.maximum(stop - np.maximum(t, m.joined_at[member]), 0) / DAY
    return (1 - np.exp(-m.rate[member] / 365 * exposure)).astype(np.float32)


def redeem_probability(r: Response, p0_duration: np.ndarray) -> np.ndarray:
    """P(redeem | sent) given the probability of a baseline basket in the offer's duration."""
    if r.h is None:
        p = r.q + (1 - r.q) * p0_duration * r.alpha
    else:
        assert r.pi is not None and r.a is not None
        p0 = np.asarray(p0_duration, dtype=np.float64)
        qual = 1 - np.power(1 - p0, r.pi.astype(np.float64))
        p = r.q + (1 - r.q - r.h) * r.a * qual
    return np.where(r.redeemable, p, 0).astype(np.float32)


def effects(
    r: Response,
    m: Members,
    member: np.ndarray,
    t: np.ndarray | int,
    window_days: int,
    difficulty: Difficulty,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p0 over the window, tau_conversion, tau_spend) of the pairs sent at ``t`` (float32)."""
    p0 = baseline_probability(m, member, t, window_days)
    if r.h is None:
        return p0, r.q * (1 - p0), r.q * r.mu
    p0d = np.minimum(p0.astype(np.float64), 1 - 1e-12)
    lam = -np.log1p(-p0d)
    p1 = lam * np.exp(-lam)  # exactly one baseline basket in the window
    later = np.asarray(t) + window_days * DAY
    p0f = baseline_probability(m, member, later, difficulty.pull_forward_days).astype(np.float64)
    assert r.basket_mean is not None
    q, h, b = (x.astype(np.float64) for x in (r.q, r.h, r.basket_mean))
    tau_c = q * (1 - p0d) - h * p1
    tau_s = q * r.mu - h * p0d * b - q * difficulty.pull_forward * p0f * b
    return p0, tau_c.astype(np.float32), tau_s.astype(np.float32)
