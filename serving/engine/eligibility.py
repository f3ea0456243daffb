"""Eligibility: which offers each member may receive now, as (members x offers) boolean masks.

Rules (every one must hold; the ``rules`` dict of :class:`Eligibility` keeps each mask when
asked, so a test or an explanation can say which rule excluded an offer):

==================  ================================================================================
rule                an offer passes for a member when
==================  ================================================================================
``tier``            the offer has no tier list, or the member's tier is in it (unknown tier: no)
``lifecycle_stage`` no stage list, or the member's stage is in it
``segment``         no segment list, or the member's segment is in it (unknown segment: no)
``min_points``      no minimum, or ``points_balance >= min_points`` (unknown balance: no)
``channel``         the offer has no channel list, or the decision's channel is in it
``consent``         e-mail and app: the member has not opted out of the channel (unknown consent:
                    ``consent.unknown``)
``validity``        the decision date is within ``[valid_from, valid_to]``
``min_spend``       at checkout: the current basket is at least the offer's ``min_spend``
``per_member_cap``  the member received it fewer than ``per_member_cap`` times
``active``          the member does not already hold it (sent, not redeemed, not expired)
``budget``          what is left of the offer's budget is above zero
``moment``          surprise offers only: the member is in the offer's moment (any moment when
                    the offer names none)
``surprise_cap``    surprise offers only: fewer than ``surprise.yearly_cap`` surprises this year
``no_repeat``       surprise offers only: not the member's previous surprise
==================  ================================================================================

Channel frequency caps limit how *many* offers a member may get (``slots``), not which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.sources.schema import CHANNELS
from serving.engine.context import DecisionContext
from serving.engine.errors import EngineInputError
from serving.engine.members import CONSENT_CHANNELS, MemberTable
from serving.engine.moments import DETECTED_MOMENTS, Moments
from serving.engine.offers import OfferTable
from serving.engine.settings import EngineSettings
from serving.engine.state import MemberOfferState

__all__ = [
    "MEMBER_RULES",
    "RULES",
    "Eligibility",
    "consent_ok",
    "eligibility",
    "member_eligibility",
]

RULES: tuple[str, ...] = (
    "tier",
    "lifecycle_stage",
    "segment",
    "min_points",
    "channel",
    "consent",
    "validity",
    "min_spend",
    "per_member_cap",
    "active",
    "budget",
    "moment",
    "surprise_cap",
    "no_repeat",
)


@dataclass
class Eligibility:
    """``mask[i, j]``: offer j may go to member i; ``slots[i]``: how many offers at most."""

    mask: np.ndarray
    slots: np.ndarray
    rules: dict[str, np.ndarray] = field(default_factory=dict)

    def failed(self, member: int, offer: int) -> list[str]:
        """Names of the rules that exclude ``offer`` for ``member`` (needs ``keep_rules``)."""
        return [r for r, m in self.rules.items() if not m[member, offer]]


def eligibility(
    members: MemberTable,
    offers: OfferTable,
    state: MemberOfferState,
    context: DecisionContext,
    moments: Moments,
    budget_left: np.ndarray,
    settings: EngineSettings,
    keep_rules: bool = False,
    member_mask: np.ndarray | None = None,
) -> Eligibility:
    """Evaluate every rule of the module docstring; ``keep_rules`` keeps each rule's mask.

    ``member_mask``: :func:`member_eligibility` of these members, computed earlier (serving
    computes it once per snapshot member); the rules it covers are then not evaluated again.
    """
    n, m = members.n, offers.n
    state.check(n, m)
    rules: dict[str, np.ndarray] = {}

    def apply(name: str, ok: np.ndarray) -> None:
        mask[...] &= ok  # broadcasts (1, m) and (n, m) alike
        if keep_rules:
            rules[name] = np.array(np.broadcast_to(ok, (n, m)), dtype=bool)

    if member_mask is None or keep_rules:
        mask = np.ones((n, m), dtype=bool)
        _member_rules(members, offers, apply)
    else:
        if np.shape(member_mask) != (n, m):
            raise EngineInputError(f"member_mask: shape {np.shape(member_mask)}, expected {(n, m)}")
        mask = np.array(member_mask, dtype=bool)
    ch = CHANNELS.index(context.channel)
    apply("channel", offers.channel_ok[:, ch][None, :])
    apply("consent", consent_ok(members, context.channel, settings)[:, None])
    apply("validity", _valid_on(offers, np.datetime64(context.as_of, "D")))
    if context.channel == "checkout":
        basket = members.get("basket_total")
        basket = np.where(np.isnan(basket), 0.0, basket)  # no basket: 0
        apply("min_spend", basket[:, None] >= offers.min_spend[None, :])
    else:
        apply("min_spend", np.ones((1, m), dtype=bool))
    apply("per_member_cap", state.received < offers.per_member_cap[None, :])
    apply("active", ~state.active)
    left = np.asarray(budget_left, dtype=np.float64)
    apply("budget", (np.isnan(left) | (left > 0))[None, :])

    surprise = offers.surprise[None, :]
    midx = _moment_index(offers)
    in_moment = np.where(midx >= 0, moments.flags[:, np.maximum(midx, 0)], moments.any[:, None])
    apply("moment", ~surprise | in_moment)
    under_cap = state.surprises_year < settings.surprise.yearly_cap
    apply("surprise_cap", ~surprise | under_cap[:, None])
    apply("no_repeat", ~surprise | (state.last_surprise[:, None] != np.arange(m)[None, :]))

    cap = settings.caps.per_channel.get(context.channel)
    k = context.k if context.k is not None else settings.k
    slots = np.full(n, k, dtype=np.int64)
    if cap is not None:
        slots = np.clip(cap - state.channel_recent[:, ch], 0, k)
    return Eligibility(mask=mask, slots=slots, rules=rules)


# Per catalog (an OfferTable is immutable): rules that depend only on the offers and the day,
# computed once per day instead of per request. Keyed by id() with the table kept alongside,
# so a new table with a reused id is not mistaken for the old one; a few entries at most.
_BY_OFFERS: dict[tuple[int, str, object], tuple[OfferTable, np.ndarray]] = {}
_MAX_CACHED = 64


def _cached(offers: OfferTable, what: str, key: object, make) -> np.ndarray:
    entry = _BY_OFFERS.get((id(offers), what, key))
    if entry is not None and entry[0] is offers:
        return entry[1]
    value = make()
    value.setflags(write=False)
    if len(_BY_OFFERS) >= _MAX_CACHED:
        _BY_OFFERS.clear()
    _BY_OFFERS[(id(offers), what, key)] = (offers, value)
    return value


def _valid_on(offers: OfferTable, day: np.datetime64) -> np.ndarray:
    """(1, m) bool: the ``validity`` rule on ``day`` (once per catalog and day)."""
    return _cached(
        offers,
        "validity",
        day,
        lambda: ((offers.valid_from <= day) & (day <= offers.valid_to))[None, :],
    )


def _moment_index(offers: OfferTable) -> np.ndarray:
    """(m,) int: each offer's moment in ``DETECTED_MOMENTS`` (-1: any moment)."""
    return _cached(
        offers,
        "moment",
        None,
        lambda: np.array(
            [DETECTED_MOMENTS.index(x) if x else -1 for x in offers.moment], dtype=np.int64
        ),
    )


def consent_ok(members: MemberTable, channel: str, settings: EngineSettings) -> np.ndarray:
    """(n,) bool: the member may be contacted on ``channel`` (see the ``consent`` rule)."""
    if channel not in CONSENT_CHANNELS or members.consent is None:
        return np.ones(members.n, dtype=bool)
    value = members.consent[:, CONSENT_CHANNELS.index(channel)]
    return (value == 1) | ((value < 0) & (settings.consent.unknown == "allow"))


MEMBER_RULES: tuple[str, ...] = ("tier", "lifecycle_stage", "segment", "min_points")


def member_eligibility(members: MemberTable, offers: OfferTable) -> np.ndarray:
    """(n, m) bool: the rules that depend on the member's features only (``MEMBER_RULES``)."""
    mask = np.ones((members.n, offers.n), dtype=bool)

    def apply(name: str, ok: np.ndarray) -> None:
        mask[...] &= ok

    _member_rules(members, offers, apply)
    return mask


def _member_rules(members: MemberTable, offers: OfferTable, apply) -> None:
    known_tier = members.tier >= 0
    tier_ok = offers.tier_ok.T[np.where(known_tier, members.tier, 0)]  # (n, m)
    apply("tier", tier_ok & (known_tier[:, None] | ~offers.tier_restricted[None, :]))
    apply("lifecycle_stage", offers.stage_ok.T[members.stage])
    apply("segment", _segment_ok(members.segment, offers))
    with np.errstate(invalid="ignore"):
        points = members.get("points_balance")
        apply(
            "min_points",
            (offers.min_points[None, :] <= 0) | (points[:, None] >= offers.min_points[None, :]),
        )


def _segment_ok(segment: np.ndarray, offers: OfferTable) -> np.ndarray:
    """(n, m) bool: the offer has no segment list or lists the member's segment."""
    codes, uniques = _factorize(segment)
    table = np.ones((len(uniques) + 1, offers.n), dtype=bool)  # last row: unknown segment
    for j, allowed in enumerate(offers.segments):
        if allowed is None:
            continue
        table[:-1, j] = [u in allowed for u in uniques]
        table[-1, j] = False
    return table[np.where(codes >= 0, codes, len(uniques))]


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return np.asarray(codes), [str(u) for u in uniques]
