"""Surprise moments: detectors over member features (and the live basket at checkout).

Each detector is a vectorised rule with thresholds from :class:`MomentSettings`; a member can
be in several moments at once. The catalog names a moment per surprise offer
(``features.catalog.MOMENTS``); a surprise offer without a moment fits any detected moment.

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

import numpy as np

from features.catalog import MOMENTS
from serving.engine.members import MemberTable
from serving.engine.settings import MomentSettings

__all__ = ["DETECTED_MOMENTS", "Moments", "detect_moments"]

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
        return self.flags.any(axis=1)


def detect_moments(members: MemberTable, settings: MomentSettings) -> Moments:
    """Run every detector on every member (nulls never fire a detector)."""
    s = settings
    g = members.get
    with np.errstate(invalid="ignore"):
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
        tier_nudge = (close & (to_next > 0)) | members.basket_reaches_next_tier
        tenure = g("tenure_days")
        onboarding_stage = tenure < s.onboarding_days
        n_buys = g("n_purchases_total")
        onboarding = onboarding_stage & (
            (tenure <= s.welcome_days) | np.isin(n_buys, np.asarray(s.onboarding_purchases))
        )
        idle = g("days_since_last_purchase")
        win_back = (idle >= s.lapse_risk_days) & (idle <= s.lapse_max_days)
        milestone = (g("purchases_to_next_milestone") <= s.milestone_within) | (
            members.basket_is_milestone
        )
        streak = g("purchase_streak_weeks") >= s.streak_weeks
        basket = g("basket_total")
        large = (basket >= s.large_basket_factor * g("avg_basket")) & (basket >= s.large_basket_min)
    by_name = {
        "birthday": birthday,
        "anniversary": anniversary,
        "tier_nudge": tier_nudge,
        "onboarding": onboarding,
        "win_back": win_back,
        "milestone": milestone,
        "streak": streak,
        "large_basket": large,
    }
    missing = set(DETECTED_MOMENTS) - set(by_name)
    if missing:  # a moment added to the catalog without a detector
        raise NotImplementedError(f"no detector for moment(s) {sorted(missing)}")
    flags = np.column_stack([by_name[name] for name in DETECTED_MOMENTS]).astype(bool)
    return Moments(flags.reshape(members.n, len(DETECTED_MOMENTS)))
