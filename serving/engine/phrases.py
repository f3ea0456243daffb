"""Explanations for ONE member, in plain Python: the same phrases as ``serving.engine.explain``
(which builds them vectorised over many rows) for the real-time path, where a handful of
strings is cheaper to format than to build with array operations.

``tests/unit/test_engine_single.py`` checks that both give identical text, member by member.
"""

from __future__ import annotations

import math

from features.schema import TIERS
from serving.engine.moments import DETECTED_MOMENTS
from serving.engine.settings import (
    GLOBAL_POPULAR,
    SEGMENT_POPULAR,
    ExplanationSettings,
    MomentSettings,
)

__all__ = ["MemberView", "explain_one", "moment_phrase"]

_YEAR_DAYS = 365
_TIER_NAMES = tuple(t.capitalize() for t in TIERS)
_TIER_NUDGE = DETECTED_MOMENTS.index("tier_nudge")


class MemberView:
    """One member's numbers as Python floats (nan = null), read once per decision."""

    __slots__ = ("basket_is_milestone", "next_tier", "num", "segment", "shares", "stage", "tier")

    def __init__(
        self,
        num: dict[str, float],
        shares: dict[str, float],
        stage: int,
        tier: int,
        segment: str | None,
        next_tier: str | None,
        basket_is_milestone: bool,
    ) -> None:
        self.num = num
        self.shares = shares
        self.stage = stage
        self.tier = tier
        self.segment = segment
        self.next_tier = next_tier
        self.basket_is_milestone = basket_is_milestone


def _nz(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _int(x: float) -> str:
    return str(round(_nz(x)))


def _is_one(x: float) -> bool:
    return round(_nz(x)) == 1


def _ordinal(x: float) -> str:
    v = round(_nz(x))
    suffix = "th" if 11 <= v % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(v % 10, "th")
    return f"{v}{suffix}"


def moment_phrase(name: str, m: MemberView, s: MomentSettings, currency: str = "") -> str:
    """The phrase of moment ``name`` for the member (as ``explain.moment_phrases``)."""
    g = m.num
    if name == "birthday":
        dtb = g["days_to_birthday"]
        ago = _YEAR_DAYS - dtb
        if dtb == 0:
            return "birthday today"
        if dtb == 1:
            return "birthday tomorrow"
        if dtb <= s.birthday_days_before:
            return f"birthday in {_int(dtb)} days"
        if ago == 1:
            return "birthday yesterday"
        return f"birthday {_int(ago)} days ago"
    if name == "anniversary":
        dta = g["days_to_anniversary"]
        if dta == 0:
            return "membership anniversary today"
        return f"membership anniversary in {_int(dta)}{' day' if _is_one(dta) else ' days'}"
    if name == "tier_nudge":
        nxt = m.next_tier if m.next_tier is not None else "the next tier"
        return f"{_int(math.ceil(_nz(g['points_to_next_tier'])))} points from {nxt.capitalize()}"
    if name == "onboarding":
        tenure, buys = g["tenure_days"], g["n_purchases_total"]
        early = tenure <= s.welcome_days
        text = "welcome: joined " if early else "welcome: "
        if not tenure > s.welcome_days:
            text += _int(tenure) + (" day ago" if _is_one(tenure) else " days ago")
        if not early:
            text += _int(buys) + (" purchase so far" if _is_one(buys) else " purchases so far")
        return text
    if name == "win_back":
        return f"last visit {_int(g['days_since_last_purchase'])} days ago"
    if name == "milestone":
        nxt = _ordinal(g["next_milestone"])
        if m.basket_is_milestone:
            return f"this is your {nxt} visit"
        to_m = g["purchases_to_next_milestone"]
        return f"{_int(to_m)}{' visit from your ' if _is_one(to_m) else ' visits from your '}{nxt} visit"  # noqa: E501
    if name == "streak":
        return f"{_int(g['purchase_streak_weeks'])}-week shopping streak"
    if name == "large_basket":
        basket, avg = g["basket_total"], g["avg_basket"]
        factor = basket / avg if avg > 0 else math.nan
        return f"basket of {currency}{_nz(basket):.2f}, {_nz(factor):.1f}x your usual"
    return ""


def explain_one(
    moment: str,
    tags: frozenset[str],
    category: str | None,
    flags: tuple[bool, ...],
    fallback: str,
    explored: bool,
    m: MemberView,
    moment_settings: MomentSettings,
    settings: ExplanationSettings,
) -> str:
    """The explanation of one shown offer (as ``explain.explain`` for one row)."""
    cur = settings.currency
    parts: list[str] = []
    if moment:
        parts.append(moment_phrase(moment, m, moment_settings, cur))
    if "bonus_points" in tags and flags[_TIER_NUDGE] and moment != "tier_nudge":
        parts.append(moment_phrase("tier_nudge", m, moment_settings, cur))
    if "onboarding" in tags and m.stage == 0:
        parts.append("welcome offer for new members")
    idle = m.num["days_since_last_purchase"]
    if "win_back" in tags and moment != "win_back" and math.isfinite(idle):
        parts.append("we miss you: " + moment_phrase("win_back", m, moment_settings, cur))
    if "member_only" in tags and m.tier >= 0:
        parts.append(_TIER_NAMES[m.tier] + " member offer")
    if category and category in m.shares and _nz(m.shares[category]) >= settings.often_buys_share:
        parts.append("often buys " + category)
    if fallback == SEGMENT_POPULAR:
        parts.append(f"popular with {m.segment or ''} members")
    elif fallback == GLOBAL_POPULAR:
        parts.append("popular with members")
    if explored:
        parts.append("something new to try")
    text = "; ".join(p for p in parts if p)
    return text or "picked for you"
