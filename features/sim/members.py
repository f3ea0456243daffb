"""Members and their latent traits (vectorised, one draw per trait for all members)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sim import config as C
from features.sim.config import SimConfig

__all__ = ["DAY", "Members", "make_members", "publish_segment"]

DAY = 86_400  # seconds
YEAR_DAYS = 365.25


@dataclass
class Members:
    """Observed attributes and latent traits of the members, as numpy arrays (one row each).

    Times are int64 seconds since the Unix epoch (naive UTC). ``lapse_at`` is the time activity
    stops (``NO_LAPSE`` for members who never lapse).
    """

    n: int
    joined_at: np.ndarray  # int64 s
    birth_date: np.ndarray  # int64 s (midnight)
    age: np.ndarray  # float, whole years at `end`
    gender: np.ndarray  # int8 index into C.GENDERS
    income: np.ndarray  # float
    region: np.ndarray  # int8 index into C.REGIONS
    home_store: np.ndarray  # int16 store number within the region
    segment: np.ndarray  # int8 index into C.SEGMENTS
    email_opt_in: np.ndarray  # bool
    app_opt_in: np.ndarray  # bool
    # latent
    pref: np.ndarray  # float32 (n, n_categories), rows sum to 1
    price_sensitivity: np.ndarray  # float32 in (0, 1)
    rate: np.ndarray  # float: baskets per year while active
    lapse_at: np.ndarray  # int64 s
    spend_scale: np.ndarray  # float32 multiplier of prices paid
    view_prob: np.ndarray  # float32 P(view an offer)
    log_resp: np.ndarray  # float32 (n, n_kinds) log responsiveness per offer kind
    incr_z: np.ndarray  # float32 member shift of the incrementality logit
    keep_share: np.ndarray  # float32 share of earned points not yet spent
    # The program's own segment label when it differs from the true ``segment`` (non-easy
    # levels publish a noisy one; eligibility rules see only the published label).
    published_segment: np.ndarray | None = None

    NO_LAPSE = np.iinfo(np.int64).max


def make_members(rng: np.random.Generator, n: int, cfg: SimConfig, end_s: int) -> Members:
    """Draw ``n`` members: join dates over several years, demographics, segment, latent traits."""
    seg = rng.choice(len(C.SEGMENTS), size=n, p=C.SEGMENT_SHARE).astype(np.int8)

    # Tenure: some new members (onboarding), the rest exponential after the onboarding window.
    new = rng.random(n) < cfg.new_member_share
    tenure = np.where(
        new,
        rng.uniform(3600, cfg.onboarding_days * DAY, n),
        cfg.onboarding_days * DAY + rng.exponential(cfg.mean_tenure_days * DAY, n),
    )
    tenure = np.minimum(tenure, cfg.max_tenure_days * DAY).astype(np.int64)
    joined_at = end_s - tenure

    age_years = np.clip(rng.normal(41, 13, n), 18, 88)
    birth_days = np.floor((end_s / DAY) - age_years * YEAR_DAYS)
    birth_date = birth_days.astype(np.int64) * DAY
    age = np.floor((end_s - birth_date) / (DAY * YEAR_DAYS))

    gender = rng.choice(len(C.GENDERS), size=n, p=[0.52, 0.45, 0.03]).astype(np.int8)
    income = np.round(
        42_000 * C.SEGMENT_INCOME[seg] * np.exp(rng.normal(0, 0.45, n)) * (0.8 + age / 200), -2
    )
    region = rng.integers(0, len(C.REGIONS), n).astype(np.int8)
    home_store = rng.integers(0, C.STORES_PER_REGION, n).astype(np.int16)
    email_opt_in = rng.random(n) < 0.72
    app_opt_in = rng.random(n) < np.where(seg == 0, 0.65, 0.40)

    # Category preferences: Dirichlet with a segment-dependent concentration (via Gammas).
    alpha = C.BASE_ALPHA[None, :] * C.SEGMENT_ALPHA[seg]
    g = rng.standard_gamma(alpha).astype(np.float32)
    pref = g / g.sum(axis=1, keepdims=True)
    del g, alpha

    ps_mean = C.SEGMENT_PRICE_SENS[seg]
    conc = 8.0
    price_sens = rng.beta(ps_mean * conc, (1 - ps_mean) * conc).astype(np.float32)

    # Purchase rate while active; members who churn stop at `lapse_at` (some long ago).
    rate = cfg.baskets_per_year * C.SEGMENT_RATE[seg] * rng.gamma(2.5, 1 / 2.5, n)
    churn = rng.random(n) < cfg.churn_share
    lapse_gap = rng.uniform(14 * DAY, 2 * cfg.history_days * DAY, n).astype(np.int64)
    lapse_at = np.where(
        churn, np.maximum(end_s - lapse_gap, joined_at + 14 * DAY), Members.NO_LAPSE
    )
    lapse_at = np.where(lapse_at >= end_s, Members.NO_LAPSE, lapse_at)

    spend_scale = (
        np.exp(rng.normal(0, 0.25, n)) * (1.15 - 0.3 * price_sens) * (income / 42_000) ** 0.15
    ).astype(np.float32)
    view_prob = rng.beta(4, 3, n).astype(np.float32)
    log_resp = (C.SEGMENT_KIND[seg] + rng.normal(0, 0.5, (n, C.SEGMENT_KIND.shape[1]))).astype(
        np.float32
    )
    incr_z = rng.normal(0, 0.5, n).astype(np.float32)
    keep_share = rng.beta(5, 2, n).astype(np.float32)

    return Members(
        n=n,
        joined_at=joined_at,
        birth_date=birth_date,
        age=age,
        gender=gender,
        income=income,
        region=region,
        home_store=home_store,
        segment=seg,
        email_opt_in=email_opt_in,
        app_opt_in=app_opt_in,
        pref=pref,
        price_sensitivity=price_sens,
        rate=rate,
        lapse_at=lapse_at,
        spend_scale=spend_scale,
        view_prob=view_prob,
        log_resp=log_resp,
        incr_z=incr_z,
        keep_share=keep_share,
    )


def publish_segment(rng: np.random.Generator, m: Members, accuracy: float) -> np.ndarray:
    """A noisy program segment: the true one for ``accuracy`` of the members, otherwise a
    segment drawn at the population shares (which may coincide with the true one)."""
    other = rng.choice(len(C.SEGMENTS), size=m.n, p=C.SEGMENT_SHARE).astype(np.int8)
    return np.where(rng.random(m.n) < accuracy, m.segment, other).astype(np.int8)
