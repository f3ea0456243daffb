"""A numeric view of the catalog: one array per offer attribute, in catalog order.

Every engine step works on (members x offers) arrays whose columns are the catalog's offers in
file order; :class:`OfferTable` holds what those steps need about each offer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property

import numpy as np

from features.catalog.model import Catalog
from features.sources.schema import CHANNELS, LIFECYCLE_STAGES, OFFER_KINDS, TIERS
from serving.engine.errors import EngineInputError

__all__ = ["OfferTable"]

_FAR_PAST = np.datetime64("1900-01-01", "D")
_FAR_FUTURE = np.datetime64("2999-12-31", "D")


@dataclass(frozen=True)
class OfferTable:
    """Attributes of the catalog's offers as arrays (index j = the j-th offer of the catalog)."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    kind: np.ndarray  # int index into OFFER_KINDS
    reward_value: np.ndarray
    cost: np.ndarray
    min_spend: np.ndarray  # 0 when none
    duration_days: np.ndarray  # nan when open-ended
    category: tuple[str | None, ...]
    tier_ok: np.ndarray  # (n_offers, len(TIERS)) bool; all True when unrestricted
    tier_restricted: np.ndarray  # bool
    stage_ok: np.ndarray  # (n_offers, len(LIFECYCLE_STAGES)) bool
    segments: tuple[frozenset[str] | None, ...]  # None: any segment
    min_points: np.ndarray  # 0 when none
    channel_ok: np.ndarray  # (n_offers, len(CHANNELS)) bool
    valid_from: np.ndarray  # datetime64[D]
    valid_to: np.ndarray  # datetime64[D], inclusive
    budget_unit: tuple[str | None, ...]  # "count", "money" or None
    budget: np.ndarray  # nan when none
    per_member_cap: np.ndarray  # int, a large number when none
    surprise: np.ndarray  # bool
    moment: tuple[str | None, ...]
    tags: tuple[frozenset[str], ...]

    @property
    def n(self) -> int:
        return len(self.ids)

    @cached_property
    def index_of(self) -> dict[str, int]:
        """Column of each offer id."""
        return {o: j for j, o in enumerate(self.ids)}

    def index(self, offer_ids: list[str] | np.ndarray) -> np.ndarray:
        """Column index of each offer id; raises on an unknown id."""
        lookup = self.index_of
        bad = [o for o in offer_ids if o not in lookup]
        if bad:
            raise EngineInputError(f"offer_id: {bad[:5]} not in the catalog")
        return np.array([lookup[o] for o in offer_ids], dtype=np.int64)

    def kind_names(self) -> np.ndarray:
        return np.asarray(OFFER_KINDS, dtype=object)[self.kind]

    @classmethod
    def from_catalog(
        cls, catalog: Catalog, extra_tags: dict[str, list[str]] | None = None
    ) -> OfferTable:
        """Build the table from a validated catalog (``features.catalog.model.load_catalog``)."""
        offers = catalog.offers
        extra = extra_tags or {}
        unknown = sorted(set(extra) - {o.offer_id for o in offers})
        if unknown:
            raise EngineInputError(f"lifecycle.extra_tags: offers {unknown} not in the catalog")
        n = len(offers)
        tier_ok = np.ones((n, len(TIERS)), dtype=bool)
        stage_ok = np.ones((n, len(LIFECYCLE_STAGES)), dtype=bool)
        channel_ok = np.ones((n, len(CHANNELS)), dtype=bool)
        tier_restricted = np.zeros(n, dtype=bool)
        segments: list[frozenset[str] | None] = []
        min_points = np.zeros(n)
        tags: list[frozenset[str]] = []
        for j, o in enumerate(offers):
            e = o.eligibility
            t: set[str] = {o.kind}
            if e is not None and e.tiers is not None:
                tier_ok[j] = [x in e.tiers for x in TIERS]
                tier_restricted[j] = not tier_ok[j].all()
            if e is not None and e.lifecycle_stages is not None:
                stage_ok[j] = [x in e.lifecycle_stages for x in LIFECYCLE_STAGES]
                stages = set(e.lifecycle_stages)
                if stages == {"onboarding"}:
                    t.add("onboarding")
                if stages and stages <= {"lapsing", "lapsed"}:
                    t.add("win_back")
            segments.append(
                frozenset(e.segments) if e is not None and e.segments is not None else None
            )
            if e is not None and e.min_points is not None:
                min_points[j] = e.min_points
            if tier_restricted[j] or min_points[j] > 0:
                t.add("member_only")
            if o.channels is not None:
                channel_ok[j] = [c in o.channels for c in CHANNELS]
            if o.surprise:
                t.add("surprise")
            if o.moment is not None:
                t.add(o.moment)
            if o.category:
                t.add(f"category:{o.category}")
            t.update(extra.get(o.offer_id, []))
            tags.append(frozenset(t))
        return cls(
            ids=tuple(o.offer_id for o in offers),
            names=tuple(o.name for o in offers),
            kind=np.array([OFFER_KINDS.index(o.kind) for o in offers], dtype=np.int64),
            reward_value=np.array([o.reward_value for o in offers], dtype=np.float64),
            cost=np.array([o.cost for o in offers], dtype=np.float64),
            min_spend=np.array([o.min_spend or 0.0 for o in offers], dtype=np.float64),
            duration_days=np.array(
                [o.duration_days if o.duration_days else np.nan for o in offers], dtype=np.float64
            ),
            category=tuple(o.category for o in offers),
            tier_ok=tier_ok,
            tier_restricted=tier_restricted,
            stage_ok=stage_ok,
            segments=tuple(segments),
            min_points=min_points,
            channel_ok=channel_ok,
            valid_from=np.array([_day(o.valid_from, _FAR_PAST) for o in offers]),
            valid_to=np.array([_day(o.valid_to, _FAR_FUTURE) for o in offers]),
            budget_unit=tuple(o.budget.unit if o.budget else None for o in offers),
            budget=np.array([o.budget.amount if o.budget else np.nan for o in offers]),
            per_member_cap=np.array(
                [o.per_member_cap if o.per_member_cap else 2**31 - 1 for o in offers],
                dtype=np.int64,
            ),
            surprise=np.array([o.surprise for o in offers], dtype=bool),
            moment=tuple(o.moment for o in offers),
            tags=tuple(tags),
        )


def _day(d: date | None, default: np.datetime64) -> np.datetime64:
    return np.datetime64(d, "D") if d is not None else default
