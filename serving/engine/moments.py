"""Surprise moments: detectors over member features (and the live basket at checkout).

Each detector is a vectorised rule with thresholds from :class:`MomentSettings`; a member can
be in several moments at once. The catalog names a moment per surprise offer
(``features.catalog.model.MOMENTS``); a surprise offer without a moment fits any detected moment.

========================  ==========================================================================
moment                    fires when (defaults)
========================  ==========================================================================
``birthday``              ``days_to_birthday <= 14``, or the birthday was at most 3 days ago
``anniversary``           ``days_to_anniversary <= 14`` and ``tenure_days >= 300``
``tier_nudge``            ``points_to_next_tier <= 0.2 x`` the next tier's threshold (optionally
                          also ``<= tier_nudge_max_points``), or this basket reaches the next tier
``onboarding``            onboarding (``tenure_days < 60``) and joined within 7 days or the
                          purchase count is one of (1, 3)
``win_back``              ``40 <= days_since_last_purchase <= 365`` (lapse risk)
``milestone``             ``purchases_to_next_milestone <= 1`` or this basket is a milestone
``streak``                ``purchase_streak_weeks >= 4``
``large_basket``          checkout only: ``basket_total >= 2 x avg_basket`` and ``>= 30``
========================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from features.catalog.model import MOMENTS
from serving.engine.members import MemberTable
from serving.engine.settings import MomentSettings

__all__ = [
    "DETECTED_MOMENTS",
    "Moments",
    "basket_moments",
    "detect_moments",
    "member_moments",
]

# The catalog's moments plus the checkout-only one.
DETECTED_MOMENTS: tuple[str, ...] = (*MOMENTS, "large_basket")
_YEAR_DAYS = 365


@dataclass(frozen=True)
class Moments:
    """(n_members x len(DETECTED_MOMENTS)) flags, in DETECTED_MOMENTS order."""

    flags: np.ndarray

    def of(self, name: str) -> np.ndarray:
        return self.flags[:, DETECTED_MOMENTS.index(name)]

    @property
    def any(self) -> np.ndarray:
        return cast("np.ndarray", self.flags.any(axis=1))  # flags is 2-D: an array


def detect_moments(members: MemberTable, settings: MomentSettings) -> Moments:
    """Run every detector on every member (nulls never fire a detector)."""
    return Moments(
        member_moments(members, settings).flags | basket_moments(members, settings).flags
    )


def member_moments(members: MemberTable, settings: MomentSettings) -> Moments:
    """The detectors over the member's features only (no live basket): what a feature
    snapshot determines, so serving can compute it once per member at load time."""
    return _detect(members, settings, basket=False)


def basket_moments(members: MemberTable, settings: MomentSettings) -> Moments:
    """The detectors over the live basket only (reaches the next tier, milestone purchase,
    large basket); ``detect_moments`` is ``member_moments | basket_moments``."""
    if members.n == 1:
        return _basket_one(members, settings)
    return _detect(members, settings, basket=True)


_BASKET_SLOTS = tuple(
    DETECTED_MOMENTS.index(x) for x in ("tier_nudge", "milestone", "large_basket")
)


def _basket_one(members: MemberTable, s: MomentSettings) -> Moments:
    """``basket_moments`` of one member in plain Python (the checkout path; the same rules:
    a comparison with an unknown value, NaN, is False as in numpy)."""
    total = float(members.get("basket_total")[0])
    large = total >= s.large_basket_factor * float(members.get("avg_basket")[0]) and (
        total >= s.large_basket_min
    )
    flags = np.zeros((1, len(DETECTED_MOMENTS)), dtype=bool)
    tier, milestone, big = _BASKET_SLOTS
    flags[0, tier] = bool(members.basket_reaches_next_tier[0])
    flags[0, milestone] = bool(members.basket_is_milestone[0])
    flags[0, big] = large
    return Moments(flags)


def _detect(members: MemberTable, settings: MomentSettings, basket: bool) -> Moments:
    s = settings
    g = members.get
    n = members.n
    none = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        if basket:
            total = g("basket_total")
            large = (total >= s.large_basket_factor * g("avg_basket")) & (
                total >= s.large_basket_min
            )
            by_name = dict.fromkeys(DETECTED_MOMENTS, none)
            by_name["tier_nudge"] = members.basket_reaches_next_tier
            by_name["milestone"] = members.basket_is_milestone
            by_name["large_basket"] = large
        else:
            by_name = _member_detectors(members, s)
            by_name["large_basket"] = none
    missing = set(DETECTED_MOMENTS) - set(by_name)
    if missing:  # a moment added to the catalog without a detector
        raise NotImplementedError(f"no detector for moment(s) {sorted(missing)}")
    flags = np.column_stack([by_name[name] for name in DETECTED_MOMENTS]).astype(bool)
    return Moments(flags.reshape(n, len(DETECTED_MOMENTS)))


def _member_detectors(members: MemberTable, s: MomentSettings) -> dict[str, np.ndarray]:
    g = members.get
    dtb = g("days_to_birthday")
    # days_to_birthday counts to the *next* birthday, so a birthday d days ago shows as
    # 365 - d (366 - d after 29 February in a leap year: one day of slack).
    after = (dtb >= _YEAR_DAYS - s.birthday_days_after) & (s.birthday_days_after > 0)
    birthday = (dtb <= s.birthday_days_before) | after
    anniversary = (g("days_to_anniversary") <= s.anniversary_days_before) & (
        g("tenure_days") >= s.anniversary_min_tenure_days
    )
    to_next = g("points_to_next_tier")
    threshold = g("points_tier_window") + to_next
    close = to_next <= s.tier_nudge_share * threshold
    if s.tier_nudge_max_points is not None:
        close &= to_next <= s.tier_nudge_max_points
    tenure = g("tenure_days")
    onboarding_stage = tenure < s.onboarding_days
    n_buys = g("n_purchases_total")
    idle = g("days_since_last_purchase")
    return {
        "birthday": birthday,
        "anniversary": anniversary,
        "tier_nudge": close & (to_next > 0),
        "onboarding": onboarding_stage
        & ((tenure <= s.welcome_days) | np.isin(n_buys, np.asarray(s.onboarding_purchases))),
        "win_back": (idle >= s.lapse_risk_days) & (idle <= s.lapse_max_days),
        "milestone": g("purchases_to_next_milestone") <= s.milestone_within,
        "streak": g("purchase_streak_weeks") >= s.streak_weeks,
    }
