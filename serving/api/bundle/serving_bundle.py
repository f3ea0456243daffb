"""The serving bundle: models' outputs, catalog and member snapshot, immutable, swapped whole.

A :class:`ServingBundle` (built by :func:`~serving.api.bundle.build_bundle`) holds the snapshot
as a :class:`~serving.engine.MemberTable` (numpy arrays, row = member index) and both models'
outputs for every (member, offer), precomputed at load time. A request then only indexes arrays,
adds the basket context and calls the engine: no model call and no I/O on the hot path.
``decide`` serves a list of members (the batch endpoint and member offers), ``decide_one`` one
member at checkout through the engine's single-member path; both apply the member's history
(snapshot events and the store's grants).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from models.affinity import FoldIn
from serving.api.bundle.member_rows import blank_unknown, cold_members, with_basket
from serving.engine import (
    Decision,
    DecisionBatch,
    DecisionContext,
    DecisionEngine,
    FallbackTables,
    MemberTable,
    ScoreInputs,
)
from serving.engine.adapters import redeem_probability
from serving.engine.fallback import fill
from serving.engine.settings import PERSONALISED
from serving.engine.single import SingleDecider
from serving.engine.state import EventArrays, MemberOfferState, PastGrant, SnapshotHistory

__all__ = ["BundleError", "ServingBundle"]


class BundleError(RuntimeError):
    """The bundle cannot be built or used (names the missing model, file or column)."""


_NO_HISTORY = SnapshotHistory(EventArrays.empty(), 0)


@dataclass(frozen=True)
class ServingBundle:
    """Everything a decision needs, immutable; ``BundleHolder.current`` is swapped whole."""

    engine: DecisionEngine
    members: MemberTable  # the snapshot, row = member index
    index: pd.Index  # member id -> row
    p_redeem: np.ndarray  # (n, m) float32, affinity P(redeem)
    spend: np.ndarray  # (n, m) float32, uplift incremental spend
    served: np.ndarray  # (n,) object: the affinity model's fallback name for the member
    fallback_tables: FallbackTables
    versions: dict[str, str]
    snapshot_as_of: pd.Timestamp | None
    single: SingleDecider | None = None  # the real-time path (built with the bundle)
    history: SnapshotHistory | None = None  # the snapshot members' past sends and redemptions
    _cold_row: MemberTable | None = None  # a one-row cold-start member (id replaced per call)
    foldin: FoldIn | None = None  # the checkout basket folded into the affinity (numpy)
    member_mask: np.ndarray | None = None  # (n + 1, m) member-only eligibility rules per
    member_flags: np.ndarray | None = None  # (n + 1, moments) snapshot moments; last: cold row
    _left_cache: dict[frozenset[str], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )
    _cold_spend: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)

    @property
    def offer_ids(self) -> tuple[str, ...]:
        return self.engine.offers.ids

    def rows(self, member_ids: list[str]) -> np.ndarray:
        """Snapshot row of each member id, -1 when unknown."""
        return self.index.get_indexer(pd.Index(member_ids, dtype=object))

    def inputs(
        self, member_ids: list[str], baskets: Sequence[Sequence[str] | None] | None = None
    ) -> tuple[MemberTable, ScoreInputs]:
        """Members and score inputs for ``member_ids``; unknown members get a cold-start row
        (lifecycle ``onboarding``, no segment, no model row: the fallback chain fills it).

        ``baskets`` (one per member, None or empty: no basket): each basket the affinity model
        knows is folded into that member's P(redeem) (:meth:`basket_p`), so the member is served
        ``personalised``; an unknown member then takes the fallback chain's incremental spend
        (the uplift model needs the features the snapshot does not have)."""
        rows = self.rows(member_ids)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        table = self.members.take(safe) if len(self.members.ids) else cold_members(len(rows))
        if not known.all():
            table = blank_unknown(table, ~known)
        table = replace(table, ids=np.asarray(member_ids, dtype=object))
        m = self.engine.offers.n
        if len(self.members.ids):
            p = np.where(known[:, None], self.p_redeem[safe], 0.0)
            s = np.where(known[:, None], self.spend[safe], 0.0)
            served = np.where(known, self.served[safe], PERSONALISED)
        else:
            p, s, served = np.zeros((len(rows), m)), np.zeros((len(rows), m)), None
        has = known
        if baskets is not None and self.foldin is not None:
            if len(baskets) != len(rows):
                raise BundleError(f"baskets: {len(baskets)} baskets for {len(rows)} members")
            folded = [(i, self.basket_p(int(rows[i]), b)) for i, b in enumerate(baskets) if b]
            folded = [(i, q) for i, q in folded if q is not None]
            if folded:
                p, s, has = np.array(p, dtype=np.float64), np.array(s), has.copy()
                served = np.full(len(rows), PERSONALISED, object) if served is None else served
                served = np.asarray(served, dtype=object).copy()
                for i, q in folded:
                    p[i], served[i] = q, PERSONALISED
                    if not has[i]:
                        s[i], has[i] = self.cold_spend(), True
        return table, ScoreInputs(
            p, s, has_row=has, model_versions=dict(self.versions), fallback=served
        )

    def decide_one(
        self,
        member_id: str,
        context: DecisionContext,
        *,
        basket_total: float | None = None,
        exhausted: frozenset[str] = frozenset(),
        history: Sequence[PastGrant] = (),
        basket: Sequence[str] | None = None,
    ) -> Decision:
        """The decision for one member as the API's dict (``serving.engine.single``): the same
        decision as :meth:`decide` for a batch of one, in well under a millisecond.

        ``basket``: the basket's categories / products (item keys such as ``category:coffee``
        or the model's bare ids), folded into the member's P(redeem) as in :meth:`inputs`.

        ``history``: the member's grants in the serving store (not released), applied with the
        snapshot's own history: per-offer caps, channel frequency caps, active offers and the
        last surprise."""
        if self.single is None or self._cold_row is None:
            raise BundleError("bundle built without the single-member path")
        try:
            row = int(self.index.get_loc(member_id))
        except KeyError:
            row = -1
        ids = np.array([member_id], dtype=object)
        m = self.engine.offers.n
        served = None
        if row >= 0:
            table = replace(self.members.take(np.array([row])), ids=ids)
            p, s, has, served = self.p_redeem[row], self.spend[row], True, self.served[row]
        else:
            table = replace(self._cold_row, ids=ids)
            p, s, has = np.zeros(m, np.float32), np.zeros(m, np.float32), False
        folded = self.basket_p(row, basket) if basket else None
        if folded is not None:
            p, served = folded, PERSONALISED
            if not has:
                s, has = self.cold_spend(), True
        mask: np.ndarray | None = None
        flags: np.ndarray | None = None
        if self.member_mask is not None and self.member_flags is not None:
            mask, flags = self.member_mask[row], self.member_flags[row]
        if basket_total is not None:
            table = with_basket(table, basket_total)
        left = self._left(exhausted)
        state = self.member_state(row, context, history)
        return self.single.decide(
            table,
            p,
            s,
            has,
            context,
            budget_left=left,
            state=state,
            served=served,
            member_mask=mask,
            member_flags=flags,
        )

    def basket_p(self, row: int, basket: Sequence[str] | None) -> np.ndarray | None:
        """P(redeem) (m,) float32 of snapshot row ``row`` (-1: unknown member) with ``basket``
        folded in (:class:`~models.affinity.foldin.FoldIn`, closed-form ALS in numpy, the
        adapter's rule for missing probabilities); None when there is no fold-in or the model
        knows no entry of the basket (the decision is then the one without the basket)."""
        fold = self.foldin
        if fold is None or not basket:
            return None
        folded = fold.fold(row, basket)
        if folded is None:
            return None
        score, p = folded
        if fold.calibrator is None:
            return redeem_probability(p, score).astype(np.float32)
        # calibrated: NaN only for the offers the model does not know, which get 0 (the rule)
        p[~fold.known] = 0.0
        return np.clip(p, 0.0, 1.0, out=p).astype(np.float32)

    def cold_spend(self) -> np.ndarray:
        """Incremental spend (m,) of a member without a snapshot row: the fallback chain's."""
        if not self._cold_spend:
            m = self.engine.offers.n
            cold = self._cold_row if self._cold_row is not None else cold_members(1)
            _, s, _ = fill(
                np.zeros((1, m)),
                np.zeros((1, m)),
                np.array([False]),
                cold.segment,
                self.fallback_tables,
                self.engine.settings.fallback_chain,
            )
            self._cold_spend.append(s[0])
        return self._cold_spend[0]

    def member_state(
        self, row: int, context: DecisionContext, history: Sequence[PastGrant] = ()
    ) -> MemberOfferState | None:
        """One member's counters at ``context.as_of`` (snapshot row ``row``, -1 unknown): the
        snapshot's events and the store's grants; None when there is neither."""
        events = self.history
        if not history and (
            events is None or row < 0 or events.offsets[row] == events.offsets[row + 1]
        ):
            return None
        if events is None:
            events = SnapshotHistory.from_events(
                None, np.zeros(0, dtype=object), self.engine.offers
            )
            row = -1
        period = self.engine.settings.caps.period_days
        return events.state_one(row, self.engine.offers, context.as_of, history, period)

    def _left(self, exhausted: frozenset[str]) -> np.ndarray | None:
        """Budgets left with the store-exhausted offers at 0 (one array per exhausted set)."""
        if not exhausted:
            return None
        cached = self._left_cache.get(exhausted)
        if cached is None:
            cached = self.engine.offers.budget.copy()
            cached[np.isin(np.asarray(self.offer_ids, dtype=object), list(exhausted))] = 0.0
            self._left_cache[exhausted] = cached  # exhausted sets only grow: a few entries
        return cached

    def decide(
        self,
        member_ids: list[str],
        context: DecisionContext,
        *,
        basket_total: float | np.ndarray | None = None,
        exhausted: frozenset[str] = frozenset(),
        histories: Sequence[Sequence[PastGrant]] | None = None,
        baskets: Sequence[Sequence[str] | None] | None = None,
    ) -> DecisionBatch:
        """The engine's decisions for ``member_ids`` (``basket_total``: checkout context, one
        value or one per member; NaN = no basket; ``histories``: each member's store grants,
        aligned with ``member_ids``; ``baskets``: each member's basket items, see
        :meth:`inputs`)."""
        table, inputs = self.inputs(member_ids, baskets)
        state = (self.history or _NO_HISTORY).state_many(
            self.rows(member_ids),
            self.engine.offers,
            context.as_of,
            histories,
            self.engine.settings.caps.period_days,
        )
        if basket_total is not None:
            table = with_basket(table, basket_total)
        left = None
        if exhausted:
            left = self.engine.offers.budget.copy()
            left[np.isin(np.asarray(self.offer_ids, dtype=object), list(exhausted))] = 0.0
        return self.engine.decide(
            table,
            inputs,
            context,
            state=state,
            budget_left=left,
            fallback_tables=self.fallback_tables,
        )
