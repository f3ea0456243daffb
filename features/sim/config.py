"""Parameters of the synthetic loyalty program: the knobs (:class:`SimConfig`) and the fixed
tables the model is built from (product categories, member segments, kind effects)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from features.sources.schema import OFFER_KINDS, TIERS

__all__ = [
    "CATEGORIES",
    "DIFFICULTIES",
    "KIND_INDEX",
    "SEGMENTS",
    "Difficulty",
    "SimConfig",
    "difficulty",
]

# ---- product categories: mean price of one line (one unit) and base popularity -----------------
CATEGORIES: tuple[str, ...] = (
    "coffee",
    "bakery",
    "grocery",
    "beauty",
    "home",
    "apparel",
    "electronics",
    "sports",
    "toys",
    "pets",
)
UNIT_PRICE = np.array([4.2, 4.8, 21.0, 17.0, 24.0, 34.0, 75.0, 28.0, 19.0, 20.0])
BASE_ALPHA = np.array([1.6, 1.2, 2.4, 0.7, 0.8, 0.7, 0.25, 0.45, 0.35, 0.55])
SKUS_PER_CATEGORY = 200

# ---- member segments --------------------------------------------------------------------------
SEGMENTS: tuple[str, ...] = ("commuter", "family", "bargain_hunter", "premium", "casual")
SEGMENT_SHARE = np.array([0.22, 0.24, 0.20, 0.12, 0.22])
# Multipliers of the Dirichlet concentration of category preferences, per segment.
SEGMENT_ALPHA = np.ones((len(SEGMENTS), len(CATEGORIES)))
SEGMENT_ALPHA[0, [0, 1, 2]] = [3.0, 2.0, 0.5]  # commuter: coffee, bakery
SEGMENT_ALPHA[1, [2, 4, 8, 9]] = [1.5, 1.5, 4.0, 1.5]  # family: grocery, home, toys, pets
SEGMENT_ALPHA[2, [2, 4]] = [1.3, 1.2]  # bargain hunter
SEGMENT_ALPHA[3, [0, 3, 5, 6]] = [1.2, 2.5, 2.5, 3.0]  # premium: beauty, apparel, electronics
SEGMENT_RATE = np.array([1.45, 1.1, 1.0, 0.9, 0.55])  # purchase frequency multiplier
SEGMENT_PRICE_SENS = np.array([0.40, 0.50, 0.80, 0.20, 0.45])  # mean price sensitivity
SEGMENT_INCOME = np.array([1.0, 1.1, 0.75, 1.8, 0.95])  # income multiplier

# ---- offer kinds ------------------------------------------------------------------------------
KIND_INDEX: dict[str, int] = {k: i for i, k in enumerate(OFFER_KINDS)}
# Base logit of the affinity per kind (in OFFER_KINDS order).
KIND_BASE = np.array([0.0, 0.1, -0.1, -0.2, 0.2, 0.3, -0.3, -1.1, -0.9, -0.4])
# Base logit of incrementality per kind: how often a redemption is a purchase that would not
# have happened without the offer.
KIND_INCR = np.array([0.0, 0.2, -0.4, 0.0, 0.1, 0.3, 0.4, 0.5, -0.6, 0.0])
# Kinds whose value is money off (price-sensitive members like them more).
KIND_MONETARY = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=float)
# Segment x kind shift of the log responsiveness.
SEGMENT_KIND = np.zeros((len(SEGMENTS), len(OFFER_KINDS)))
SEGMENT_KIND[0, [2, 4, 5]] = [0.2, 0.3, 0.5]  # commuter: points, bogo, free items
SEGMENT_KIND[1, [3, 4, 5]] = [0.3, 0.4, 0.3]  # family: shipping, bogo, free items
SEGMENT_KIND[2, [0, 1, 2, 4, 6, 7]] = [0.5, 0.4, 0.3, 0.6, -0.3, -0.5]  # bargain hunter
SEGMENT_KIND[3, [0, 4, 6, 7, 8]] = [-0.3, -0.5, 0.7, 0.7, 0.3]  # premium: early access, exp.
SEGMENT_KIND[4, :] = -0.2  # casual
INFORMATIONAL_EFFECT = 0.25  # informational offers: share of the effect of a redeemable one

REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
STORES_PER_REGION = 8
GENDERS: tuple[str, ...] = ("F", "M", "U")
# Day-of-week weights of shopping (Monday first) and hour-of-day weights.
WEEKDAY_WEIGHT = np.array([0.85, 0.80, 0.85, 0.95, 1.15, 1.35, 1.05])
_NIGHT, _MORNING = [0.0] * 6, [0.3, 1.2, 2.0, 1.4, 1.2, 1.6]
_AFTERNOON, _EVENING = [2.2, 1.9, 1.2, 1.1, 1.4, 2.1], [2.3, 1.7, 1.1, 0.6, 0.2, 0.0]
HOUR_WEIGHT = np.array(_NIGHT + _MORNING + _AFTERNOON + _EVENING)
LINES_P = np.array([0.55, 0.3, 0.15])  # 1, 2, 3 lines per basket
QUANTITY_P = np.array([0.75, 0.18, 0.07])  # 1, 2, 3 units per line
TXN_CHANNELS: tuple[str, ...] = ("store", "web", "app")
TXN_CHANNEL_P = np.array([0.80, 0.12, 0.08])


@dataclass(frozen=True)
class Difficulty:
    """How hard the program's offers make a decision engine's life (docs/simulator.md).

    ``easy`` is the original model: every send helps (q (1 - p0) >= 0), effects follow the
    latent traits closely, every redemption is viewed, the published segment is the true one
    and the catalog's budgets are used as written. The other levels switch on the mechanics
    below; their default values are the ``realistic`` calibration.
    """

    name: str = "easy"
    effect_scale: float = 1.0  # multiplier of the persuasion probability q
    pair_sigma: float = 0.0  # sd of the log-normal per (member, offer) noise on q
    harm_scale: float = 0.0  # mean chance that a send suppresses a baseline basket
    pull_forward: float = 0.0  # P(an induced basket removes a baseline basket 14-42 d later)
    pull_forward_days: int = 28  # length of that later window (after the 14-day window)
    fatigue: float = 1.0  # response multiplier per earlier receipt (1: none)
    lapsed_reach: float = 1.0  # persuasion multiplier for members past their lapse time
    redemption_rules: bool = False  # a redemption needs a basket >= min_spend with the category
    auto_apply_kinds: tuple[str, ...] = ()  # kinds applied at checkout (no view needed)
    segment_accuracy: float = 1.0  # share of members whose published segment is the true one
    budget_rate: float = 0.0  # reward budgets as a share of spend (0: the catalog's budgets)
    mc_baskets: int = 64  # baskets per member to estimate P(a basket qualifies) (truth)

    @property
    def is_easy(self) -> bool:
        return self.name == "easy"


_REALISTIC = Difficulty(
    name="realistic",
    effect_scale=0.13,
    pair_sigma=0.6,
    harm_scale=0.0022,
    pull_forward=0.4,
    fatigue=0.9,
    lapsed_reach=0.5,
    redemption_rules=True,
    auto_apply_kinds=("bonus_points", "free_shipping"),
    segment_accuracy=0.6,
    budget_rate=0.0006,
)
DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(),
    "realistic": _REALISTIC,
    "hard": replace(
        _REALISTIC,
        name="hard",
        effect_scale=_REALISTIC.effect_scale / 2,
        harm_scale=_REALISTIC.harm_scale * 2,
        pull_forward=min(1.0, _REALISTIC.pull_forward * 2),
    ),
}


def difficulty(name: str) -> Difficulty:
    """The named difficulty level (easy, realistic, hard); a clear error names a bad value."""
    try:
        return DIFFICULTIES[name]
    except KeyError:
        raise ValueError(f"difficulty: {name!r} is not one of {', '.join(DIFFICULTIES)}") from None


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulation. Defaults give the documented program (docs/simulator.md)."""

    end: datetime = datetime(2026, 10, 31)  # observation end (naive UTC), exclusive
    history_days: int = 365  # purchases are generated over [end - history_days, end)
    max_tenure_days: int = 8 * 365  # oldest member joined this long before `end`
    new_member_share: float = 0.07  # share who joined in the last `onboarding_days`
    mean_tenure_days: float = 800.0  # mean tenure of the others (exponential, after 60 d)
    baskets_per_year: float = 32.0  # mean purchase rate of a member who has not lapsed
    churn_share: float = 0.30  # share of members whose activity stops before `end`
    # Tier thresholds in points (1 point per currency unit spent over the trailing 12 months).
    tier_thresholds: tuple[float, ...] = (0.0, 600.0, 1500.0, 2600.0)
    points_per_value: float = 100.0  # points per currency unit of a bonus_points reward
    # Lifecycle stages (as the simulator's targeting sees them at a send time).
    onboarding_days: int = 60
    lapsing_after_days: int = 45
    lapsed_after_days: int = 120
    # Past campaigns.
    n_campaigns: int = 7
    first_campaign_day: int = 130  # days after the history start
    campaign_channels: tuple[str, ...] = ("email", "app")
    campaign_share: float = 0.5  # share of opted-in members targeted by a campaign
    control_share: float = 0.2  # share of the targeted held out (control)
    offers_per_campaign: int = 8  # regular offers per campaign (surprise offers come on top)
    effect_window_days: int = 14
    dismiss_share: float = 0.3  # viewed and not redeemed -> dismissed
    catalog_path: Path | None = None  # None: the example catalog shipped with the package
    chunk_rows: int = 2_000_000  # rows per chunk of vectorised work (bounds peak memory)
    tiers: tuple[str, ...] = field(default=TIERS)
    difficulty: Difficulty = field(default_factory=Difficulty)  # easy | realistic | hard

    def __post_init__(self) -> None:
        if len(self.tier_thresholds) != len(self.tiers):
            raise ValueError("tier_thresholds: need one threshold per tier")
        if not 0 < self.control_share < 1:
            raise ValueError(f"control_share: {self.control_share} is not in (0, 1)")
        if self.first_campaign_day + self.effect_window_days >= self.history_days:
            raise ValueError("first_campaign_day: no room for campaigns in the history")
        if isinstance(self.difficulty, str):  # SimConfig(difficulty="realistic")
            object.__setattr__(self, "difficulty", difficulty(self.difficulty))
