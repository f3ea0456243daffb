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

import math

import numpy as np
import pandas as pd

from features.sources.schema import TIERS
from serving.engine.members import MemberTable
from serving.engine.moments import DETECTED_MOMENTS, Moments
from serving.engine.offers import OfferTable
from serving.engine.settings import (
    GLOBAL_POPULAR,
    SEGMENT_POPULAR,
    ExplanationSettings,
    MomentSettings,
)

__all__ = ["MemberView", "explain", "explain_one", "moment_of", "moment_phrase"]

_YEAR_DAYS = 365
_STR = np.dtypes.StringDType()


def _int_text(x: np.ndarray) -> np.ndarray:
    """Rounded integer text (null -> "0")."""
    return np.round(np.nan_to_num(x)).astype(np.int64).astype(_STR)


def _ordinal(x: np.ndarray) -> np.ndarray:
    v = np.round(np.nan_to_num(x)).astype(np.int64)
    suffix = np.where(
        (v % 100 >= 11) & (v % 100 <= 13),
        "th",
        np.select([v % 10 == 1, v % 10 == 2, v % 10 == 3], ["st", "nd", "rd"], "th"),
    )
    return v.astype(_STR) + suffix.astype(_STR)


def _plural(x: np.ndarray, one: str, many: str) -> np.ndarray:
    return np.where(np.round(np.nan_to_num(x)) == 1, one, many).astype(_STR)


def _by_value(values: np.ndarray, fn) -> np.ndarray:
    """``fn`` applied once per distinct value of a small object array (nulls included)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
    table = np.array([fn(u) for u in uniques] + [""], dtype=_STR)
    return table[codes]


def _null_to(value: object, default: str) -> object:
    return default if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _phrase(
    name: str, members: MemberTable, rows: np.ndarray, settings: MomentSettings, currency: str
) -> np.ndarray:
    """The phrase of moment ``name`` for the members at ``rows`` (StringDType array)."""
    num = members.num
    if name == "birthday":
        dtb = num["days_to_birthday"][rows]
        ago = _YEAR_DAYS - dtb
        out = ("birthday " + _int_text(ago)) + " days ago"
        in_days = ("birthday in " + _int_text(dtb)) + " days"
        conds = [dtb == 0, dtb == 1, dtb <= settings.birthday_days_before, ago == 1]
        fixed = ["birthday today", "birthday tomorrow", None, "birthday yesterday"]
        # np.select semantics: the first condition that holds wins
        done = np.zeros(len(rows), dtype=bool)
        for cond, text in zip(conds, fixed, strict=True):
            hit = cond & ~done
            out = np.where(hit, in_days if text is None else text, out)
            done |= cond
        return out.astype(_STR)
    if name == "anniversary":
        dta = num["days_to_anniversary"][rows]
        tail = ("membership anniversary in " + _int_text(dta)) + _plural(dta, " day", " days")
        return np.where(dta == 0, "membership anniversary today", tail).astype(_STR)
    if name == "tier_nudge":
        nxt = _by_value(
            members.next_tier[rows], lambda v: str(_null_to(v, "the next tier")).capitalize()
        )
        return (_int_text(np.ceil(num["points_to_next_tier"][rows])) + " points from ") + nxt
    if name == "onboarding":
        tenure, buys = num["tenure_days"][rows], num["n_purchases_total"][rows]
        joined, later = tenure <= settings.welcome_days, tenure > settings.welcome_days
        out = np.where(joined, "welcome: joined ", "welcome: ").astype(_STR)
        days = _int_text(tenure) + _plural(tenure, " day ago", " days ago")
        out = np.where(later, out, out + days)
        so_far = _int_text(buys) + _plural(buys, " purchase so far", " purchases so far")
        return np.where(joined, out, out + so_far).astype(_STR)
    if name == "win_back":
        return ("last visit " + _int_text(num["days_since_last_purchase"][rows])) + " days ago"
    if name == "milestone":
        to_m, next_m = num["purchases_to_next_milestone"][rows], num["next_milestone"][rows]
        nth = _ordinal(next_m)
        away = (
            _int_text(to_m) + _plural(to_m, " visit from your ", " visits from your ") + nth
        ) + " visit"
        return np.where(members.basket_is_milestone[rows], ("this is your " + nth) + " visit", away)
    if name == "streak":
        return _int_text(num["purchase_streak_weeks"][rows]) + "-week shopping streak"
    if name == "large_basket":
        basket, avg = num["basket_total"][rows], num["avg_basket"][rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(avg > 0, basket / avg, np.nan)
        # few rows (checkout surprises): Python's float formatting, exactly as before
        money = np.array([f"{x:.2f}" for x in np.nan_to_num(basket)], dtype=_STR)
        times = np.array([f"{x:.1f}" for x in np.nan_to_num(factor)], dtype=_STR)
        return ((("basket of " + currency) + money) + ", ") + times + "x your usual"
    raise KeyError(name)


def moment_phrases(
    members: MemberTable, rows: np.ndarray, settings: MomentSettings, currency: str = ""
) -> dict[str, pd.Series]:
    """The phrase of every moment for the members at ``rows`` (one Series per moment)."""
    rows = np.asarray(rows)
    return {
        name: pd.Series(_phrase(name, members, rows, settings, currency).astype(object)).astype(str)
        for name in DETECTED_MOMENTS
    }


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


def _append(out: np.ndarray, where: np.ndarray, text: np.ndarray | str) -> None:
    """Append ``text`` (one per selected row, or one for all) to ``out`` at the ``where`` rows,
    joined with "; " when the row already has text."""
    sel = np.flatnonzero(where)
    if not len(sel):
        return
    cur = out[sel]
    t = np.asarray(text, dtype=_STR)
    out[sel] = np.where(cur != "", (cur + "; ") + t, t)


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
    """One explanation string per shown (member row, offer).

    Vectorised: each phrase is built only for the rows that show it, and appended in order."""
    n = len(rows)
    if n == 0:
        return np.empty(0, dtype=object)
    rows = np.asarray(rows)
    offer = np.asarray(offer)
    cur = settings.currency
    out = np.zeros(n, dtype=_STR)
    # moment codes: position in DETECTED_MOMENTS, -1 for none (compared as ints below)
    code = pd.Index(DETECTED_MOMENTS).get_indexer(np.asarray(moment, dtype=object))
    # Moment of a surprise; a close next tier for bonus-points offers.
    for c, name in enumerate(DETECTED_MOMENTS):
        hit = code == c
        if hit.any():
            out[hit] = _phrase(name, members, rows[hit], moment_settings, cur)
    tags = offers.tags
    has = {t: np.array([t in tags[j] for j in range(offers.n)], dtype=bool)[offer] for t in _TAGS}
    close = moments.flags[rows, DETECTED_MOMENTS.index("tier_nudge")]
    hit = has["bonus_points"] & close & (code != DETECTED_MOMENTS.index("tier_nudge"))
    _append(out, hit, _phrase("tier_nudge", members, rows[hit], moment_settings, cur))
    _append(out, has["onboarding"] & (members.stage[rows] == 0), "welcome offer for new members")
    idle = members.num["days_since_last_purchase"][rows]
    hit = has["win_back"] & (code != DETECTED_MOMENTS.index("win_back")) & np.isfinite(idle)
    _append(
        out, hit, "we miss you: " + _phrase("win_back", members, rows[hit], moment_settings, cur)
    )
    tier = members.tier[rows]
    hit = has["member_only"] & (tier >= 0)
    _append(out, hit, np.array([f"{t} member offer" for t in _TIER_NAMES], _STR)[tier[hit]])
    # Affinity: the member often buys in the offer's category.
    cats = np.array([c or "" for c in offers.category], dtype=object)
    often = np.zeros(n, dtype=bool)
    for cat, share in members.shares.items():
        often |= (cats[offer] == cat) & (np.nan_to_num(share[rows]) >= settings.often_buys_share)
    text = np.array([f"often buys {c}" for c in cats], dtype=_STR)
    _append(out, often, text[offer[often]])
    hit = fallback == SEGMENT_POPULAR
    seg = _by_value(
        members.segment[rows[hit]], lambda v: f"popular with {_null_to(v, '')!s} members"
    )
    _append(out, hit, seg)
    _append(out, fallback == GLOBAL_POPULAR, "popular with members")
    _append(out, np.asarray(explored, dtype=bool), "something new to try")
    out[out == ""] = "picked for you"
    return out.astype(object)


_TAGS = ("bonus_points", "onboarding", "win_back", "member_only")
_TIER_NAMES = tuple(t.capitalize() for t in TIERS)


# ---- one member ------------------------------------------------------------------------------
# The real-time path explains a handful of offers for ONE member: the same phrases as
# :func:`explain` in plain Python (a few strings are cheaper to format than to build with array
# operations). ``tests/unit/test_engine_single.py`` checks both give identical text.

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


def _nz_one(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _int_one(x: float) -> str:
    return str(round(_nz_one(x)))


def _is_one_one(x: float) -> bool:
    return round(_nz_one(x)) == 1


def _ordinal_one(x: float) -> str:
    v = round(_nz_one(x))
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
            return f"birthday in {_int_one(dtb)} days"
        if ago == 1:
            return "birthday yesterday"
        return f"birthday {_int_one(ago)} days ago"
    if name == "anniversary":
        dta = g["days_to_anniversary"]
        if dta == 0:
            return "membership anniversary today"
        return f"membership anniversary in {_int_one(dta)}{' day' if _is_one_one(dta) else ' days'}"
    if name == "tier_nudge":
        nxt = m.next_tier if m.next_tier is not None else "the next tier"
        points = _int_one(math.ceil(_nz_one(g["points_to_next_tier"])))
        return f"{points} points from {nxt.capitalize()}"
    if name == "onboarding":
        tenure, buys = g["tenure_days"], g["n_purchases_total"]
        early = tenure <= s.welcome_days
        text = "welcome: joined " if early else "welcome: "
        if not tenure > s.welcome_days:
            text += _int_one(tenure) + (" day ago" if _is_one_one(tenure) else " days ago")
        if not early:
            text += _int_one(buys) + (
                " purchase so far" if _is_one_one(buys) else " purchases so far"
            )
        return text
    if name == "win_back":
        return f"last visit {_int_one(g['days_since_last_purchase'])} days ago"
    if name == "milestone":
        nxt = _ordinal_one(g["next_milestone"])
        if m.basket_is_milestone:
            return f"this is your {nxt} visit"
        to_m = g["purchases_to_next_milestone"]
        return f"{_int_one(to_m)}{' visit from your ' if _is_one_one(to_m) else ' visits from your '}{nxt} visit"  # noqa: E501
    if name == "streak":
        return f"{_int_one(g['purchase_streak_weeks'])}-week shopping streak"
    if name == "large_basket":
        basket, avg = g["basket_total"], g["avg_basket"]
        factor = basket / avg if avg > 0 else math.nan
        return f"basket of {currency}{_nz_one(basket):.2f}, {_nz_one(factor):.1f}x your usual"
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
    if (
        category
        and category in m.shares
        and _nz_one(m.shares[category]) >= settings.often_buys_share
    ):
        parts.append("often buys " + category)
    if fallback == SEGMENT_POPULAR:
        parts.append(f"popular with {m.segment or ''} members")
    elif fallback == GLOBAL_POPULAR:
        parts.append("popular with members")
    if explored:
        parts.append("something new to try")
    text = "; ".join(p for p in parts if p)
    return text or "picked for you"
