"""Explanations in loyalty language for every shown offer ("birthday in 3 days",
"120 points from Gold", "often buys coffee"), built vectorised over the shown rows.

Phrases, in this order, joined with "; ":

* the moment of a surprise (or, for a bonus-points offer, a close next tier):
  ``birthday in 3 days`` / ``birthday today`` / ``birthday 2 days ago``,
  ``membership anniversary in 5 days``, ``120 points from Gold``,
  ``welcome: joined 4 days ago`` / ``welcome: 3 purchases so far``, ``last visit 52 days ago``,
  ``1 visit from your 50th visit``, ``6-week shopping streak``,
  ``basket of 142.50, 2.4x your usual``;
* lifecycle: ``welcome offer for new members``, ``we miss you: last visit 52 days ago``,
  ``Gold member offer``;
* affinity: ``often buys coffee`` (share of spend in the offer's category >= 20 %);
* how it was chosen: ``popular with commuter members`` / ``popular with members`` (fallbacks),
  ``something new to try`` (exploration); ``picked for you`` when nothing else applies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import TIERS
from serving.engine.members import MemberTable
from serving.engine.moments import DETECTED_MOMENTS, Moments
from serving.engine.offers import OfferTable
from serving.engine.settings import (
    GLOBAL_POPULAR,
    SEGMENT_POPULAR,
    ExplanationSettings,
    MomentSettings,
)

__all__ = ["explain", "moment_of"]

_YEAR_DAYS = 365


def _int_text(x: np.ndarray) -> pd.Series:
    return pd.Series(np.round(np.nan_to_num(x)).astype(np.int64)).astype(str)


def _ordinal(x: np.ndarray) -> pd.Series:
    v = np.round(np.nan_to_num(x)).astype(np.int64)
    suffix = np.where(
        (v % 100 >= 11) & (v % 100 <= 13),
        "th",
        np.select([v % 10 == 1, v % 10 == 2, v % 10 == 3], ["st", "nd", "rd"], "th"),
    )
    return pd.Series(v).astype(str) + pd.Series(suffix)


def _when(mask: np.ndarray, text: pd.Series | str, n: int) -> pd.Series:
    t = text if isinstance(text, pd.Series) else pd.Series([text] * n)
    return t.where(pd.Series(mask), "")


def _plural(x: np.ndarray, one: str, many: str) -> pd.Series:
    return pd.Series(np.where(np.round(np.nan_to_num(x)) == 1, one, many))


def moment_phrases(
    members: MemberTable, rows: np.ndarray, settings: MomentSettings, currency: str = ""
) -> dict[str, pd.Series]:
    """The phrase of every moment for the members at ``rows`` (one Series per moment)."""
    g = {k: v[rows] for k, v in members.num.items()}
    dtb = g["days_to_birthday"]
    ago = _YEAR_DAYS - dtb
    birthday = pd.Series(
        np.select(
            [dtb == 0, dtb == 1, dtb <= settings.birthday_days_before, ago == 1],
            [
                "birthday today",
                "birthday tomorrow",
                ("birthday in " + _int_text(dtb) + " days").to_numpy(dtype=object),
                "birthday yesterday",
            ],
            ("birthday " + _int_text(ago) + " days ago").to_numpy(dtype=object),
        ),
        dtype=object,
    )
    dta = g["days_to_anniversary"]
    anniversary = pd.Series(
        np.where(dta == 0, "membership anniversary today", "membership anniversary in ")
    )
    anniversary = anniversary.where(
        dta == 0, anniversary + _int_text(dta) + _plural(dta, " day", " days")
    )
    nxt = pd.Series(members.next_tier[rows], dtype=object).fillna("the next tier")
    tier = _int_text(np.ceil(g["points_to_next_tier"])) + " points from " + nxt.str.capitalize()
    tenure, buys = g["tenure_days"], g["n_purchases_total"]
    onboarding = pd.Series(
        np.where(
            tenure <= settings.welcome_days,
            "welcome: joined ",
            "welcome: ",
        )
    )
    onboarding = onboarding.where(
        tenure > settings.welcome_days,
        onboarding + _int_text(tenure) + _plural(tenure, " day ago", " days ago"),
    )
    onboarding = onboarding.where(
        tenure <= settings.welcome_days,
        onboarding + _int_text(buys) + _plural(buys, " purchase so far", " purchases so far"),
    )
    idle = g["days_since_last_purchase"]
    win_back = "last visit " + _int_text(idle) + " days ago"
    to_m, next_m = g["purchases_to_next_milestone"], g["next_milestone"]
    milestone = (
        _int_text(to_m)
        + _plural(to_m, " visit from your ", " visits from your ")
        + _ordinal(next_m)
        + " visit"
    )
    milestone = milestone.where(
        ~pd.Series(members.basket_is_milestone[rows]),
        "this is your " + _ordinal(next_m) + " visit",
    )
    streak = _int_text(g["purchase_streak_weeks"]) + "-week shopping streak"
    basket, avg = g["basket_total"], g["avg_basket"]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(avg > 0, basket / avg, np.nan)
    large = (
        "basket of "
        + currency
        + pd.Series(np.nan_to_num(basket)).map("{:.2f}".format)
        + ", "
        + pd.Series(np.nan_to_num(factor)).map("{:.1f}".format)
        + "x your usual"
    )
    out = {
        "birthday": birthday,
        "anniversary": anniversary,
        "tier_nudge": tier,
        "onboarding": onboarding,
        "win_back": win_back,
        "milestone": milestone,
        "streak": streak,
        "large_basket": large,
    }
    return {k: v.reset_index(drop=True).astype(str) for k, v in out.items()}


def moment_of(
    offer: np.ndarray, offers: OfferTable, moments: Moments, rows: np.ndarray
) -> np.ndarray:
    """The moment a shown surprise answers: its own, or the first detected one ("" if none)."""
    names = np.asarray(DETECTED_MOMENTS, dtype=object)
    own = np.array([m or "" for m in offers.moment], dtype=object)[offer]
    flags = moments.flags[rows]
    first = np.where(flags.any(axis=1), names[np.argmax(flags, axis=1)], "")
    is_surprise = offers.surprise[offer]
    return np.where(is_surprise, np.where(own != "", own, first), "").astype(object)


def explain(
    rows: np.ndarray,
    offer: np.ndarray,
    moment: np.ndarray,
    fallback: np.ndarray,
    explored: np.ndarray,
    members: MemberTable,
    offers: OfferTable,
    moments: Moments,
    moment_settings: MomentSettings,
    settings: ExplanationSettings,
) -> np.ndarray:
    """One explanation string per shown (member row, offer)."""
    n = len(rows)
    if n == 0:
        return np.empty(0, dtype=object)
    phrases = moment_phrases(members, rows, moment_settings, settings.currency)
    parts: list[pd.Series] = []
    # Moment of a surprise; a close next tier for bonus-points offers.
    moment_s = pd.Series(moment, dtype=object)
    text = pd.Series([""] * n, dtype=object)
    for name, phrase in phrases.items():
        text = text.where(moment_s != name, phrase)
    parts.append(text.astype(str))
    tags = offers.tags
    has = {t: np.array([t in tags[j] for j in range(offers.n)])[offer] for t in _TAGS}
    close = moments.flags[rows, DETECTED_MOMENTS.index("tier_nudge")]
    parts.append(
        _when(has["bonus_points"] & close & (moment_s != "tier_nudge"), phrases["tier_nudge"], n)
    )
    stage = members.stage[rows]
    parts.append(_when(has["onboarding"] & (stage == 0), "welcome offer for new members", n))
    parts.append(
        _when(
            has["win_back"]
            & (moment_s != "win_back")
            & np.isfinite(members.num["days_since_last_purchase"][rows]),
            "we miss you: " + phrases["win_back"],
            n,
        )
    )
    tier_name = pd.Series(members.tier[rows]).map(dict(enumerate(_TIER_NAMES))).fillna("")
    parts.append(
        _when(has["member_only"] & (members.tier[rows] >= 0), tier_name + " member offer", n)
    )
    # Affinity: the member often buys in the offer's category.
    cats = np.array([c or "" for c in offers.category], dtype=object)[offer]
    often = np.zeros(n, dtype=bool)
    for cat, share in members.shares.items():
        often |= (cats == cat) & (np.nan_to_num(share[rows]) >= settings.often_buys_share)
    parts.append(_when(often, "often buys " + pd.Series(cats, dtype=object).astype(str), n))
    segment = pd.Series(members.segment[rows], dtype=object).fillna("").astype(str)
    parts.append(_when(fallback == SEGMENT_POPULAR, "popular with " + segment + " members", n))
    parts.append(_when(fallback == GLOBAL_POPULAR, "popular with members", n))
    parts.append(_when(explored, "something new to try", n))
    out = parts[0]
    for p in parts[1:]:
        both = (out != "") & (p != "")
        out = out.where(p == "", p.where(~both, out + "; " + p))
    out = out.where(out != "", "picked for you")
    return out.to_numpy(dtype=object)


_TAGS = ("bonus_points", "onboarding", "win_back", "member_only")
_TIER_NAMES = tuple(t.capitalize() for t in TIERS)
