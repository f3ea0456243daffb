"""The serving bundle: models, catalog and member snapshot, built once and swapped whole.

``build_bundle(models, config)`` turns a loaded :class:`~serving.api.modelset.ModelSet`
(``affinity`` and ``uplift`` pyfuncs) plus the catalog and the member feature snapshot (the
Parquet written by ``offers features``) into a :class:`ServingBundle`: the snapshot as a
:class:`~serving.engine.MemberTable` (numpy arrays, row = member index), and both models' outputs
for every (member, offer) precomputed at load time. A request then only indexes arrays, adds the
basket context and calls the engine: no model call and no I/O on the hot path.

``lkg_loader`` (re-exported from :mod:`serving.loader`, the one model loader) downloads
``models:/name@alias`` into a last-known-good copy under ``OFFERS_HOME/serving/models`` and loads
from there, so the service starts and serves from that copy when the tracking server is down.
``seed_budgets`` is re-exported from :mod:`serving.api.budgets`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from features.catalog.model import load_catalog
from features.settings import OffersSettings
from features.sources import schema as S
from features.sources.io import find_table_file, read_raw, to_canonical_frame
from models.affinity import AffinityInputError, FoldIn
from serving.api.budgets import seed_budgets
from serving.api.modelset import ModelSet
from serving.engine import (
    DecisionBatch,
    DecisionContext,
    DecisionEngine,
    EngineSettings,
    FallbackTables,
    MemberTable,
    ScoreInputs,
)
from serving.engine.adapters import model_inputs, python_model, redeem_probability
from serving.engine.eligibility import member_eligibility
from serving.engine.fallback import fill
from serving.engine.moments import member_moments
from serving.engine.settings import PERSONALISED
from serving.engine.single import SingleDecider
from serving.engine.state import EventArrays, MemberOfferState, PastGrant, SnapshotHistory
from serving.loader import lkg_loader

__all__ = [
    "AFFINITY",
    "DEFAULT_MODELS",
    "UPLIFT",
    "BundleError",
    "BundleHolder",
    "BundleSettings",
    "ServingBundle",
    "build_bundle",
    "lkg_loader",
    "seed_budgets",
]

log = logging.getLogger(__name__)

AFFINITY = "affinity"
UPLIFT = "uplift"
DEFAULT_MODELS = {
    AFFINITY: "models:/offers-affinity@champion",
    UPLIFT: "models:/offers-uplift@champion",
}


class BundleError(RuntimeError):
    """The bundle cannot be built (names the missing model, file or column)."""


class BundleSettings(OffersSettings):
    """Where the bundle's files are (environment prefix ``OFFERS_``).

    OFFERS_CATALOG           catalog YAML (default ``$OFFERS_HOME/data/demo/catalog.yaml``)
    OFFERS_MEMBER_FEATURES   member feature snapshot, Parquet from ``offers features``
                             (default ``$OFFERS_HOME/features/member_features.parquet``)
    OFFERS_LKG_DIR           last-known-good model copies (default ``$OFFERS_HOME/serving/models``)
    OFFERS_OFFER_EVENTS      canonical ``offer_events`` (Parquet/CSV) the snapshot's members'
                             history comes from (default: the ``offer_events`` table next to
                             the catalog; none there: no history before the service's grants)
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    catalog: Path | None = None
    member_features: Path | None = None
    lkg_dir: Path | None = None
    offer_events: Path | None = None
    engine: EngineSettings = Field(default_factory=EngineSettings)

    def catalog_path(self) -> Path:
        return self.catalog or self.home / "data" / "demo" / "catalog.yaml"

    def features_path(self) -> Path:
        return self.member_features or self.home / "features" / "member_features.parquet"

    def lkg_path(self) -> Path:
        return self.lkg_dir or self.home / "serving" / "models"

    def offer_events_path(self) -> Path | None:
        if self.offer_events is not None:
            return self.offer_events
        return find_table_file(self.catalog_path().parent, "offer_events")


# -- the bundle ------------------------------------------------------------------------------
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
        table = self.members.take(safe) if len(self.members.ids) else _cold(len(rows))
        if not known.all():
            table = _blank_unknown(table, ~known)
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
    ) -> dict[str, Any]:
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
        pre: dict[str, np.ndarray] = {}
        if self.member_mask is not None and self.member_flags is not None:
            pre = {"member_mask": self.member_mask[row], "member_flags": self.member_flags[row]}
        if basket_total is not None:
            table = _with_basket(table, basket_total)
        left = self._left(exhausted)
        state = self.member_state(row, context, history)
        return self.single.decide(
            table, p, s, has, context, budget_left=left, state=state, served=served, **pre
        )

    def basket_p(self, row: int, basket: Sequence[str] | None) -> np.ndarray | None:
        """P(redeem) (m,) float32 of snapshot row ``row`` (-1: unknown member) with ``basket``
        folded in (:class:`~models.affinity.foldin.FoldIn`, closed-form ALS in numpy, the
        adapter's rule for missing probabilities); None when there is no fold-in or the model
        knows no entry of the basket (the decision is then the one without the basket)."""
        fold = self.foldin
        folded = fold.fold(row, basket) if fold is not None and basket else None
        if folded is None:
            return None
        score, p = folded
        if fold.calibrator is None:  # type: ignore[union-attr]
            return redeem_probability(p, score).astype(np.float32)
        # calibrated: NaN only for the offers the model does not know, which get 0 (the rule)
        p[~fold.known] = 0.0  # type: ignore[union-attr]
        return np.clip(p, 0.0, 1.0, out=p).astype(np.float32)

    def cold_spend(self) -> np.ndarray:
        """Incremental spend (m,) of a member without a snapshot row: the fallback chain's."""
        if not self._cold_spend:
            m = self.engine.offers.n
            cold = self._cold_row if self._cold_row is not None else _cold(1)
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
            table = _with_basket(table, basket_total)
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


def _cold(n: int) -> MemberTable:
    frame = pd.DataFrame({S.MEMBER_ID: [f"cold{i}" for i in range(n)]})
    frame["lifecycle_stage"] = "onboarding"
    return MemberTable.from_frame(frame)


def _blank_unknown(table: MemberTable, unknown: np.ndarray) -> MemberTable:
    """Rows of unknown members reset to a cold start (no features, onboarding stage)."""
    stage = table.stage.copy()
    stage[unknown] = 0  # LIFECYCLE_STAGES[0] == "onboarding"
    tier = table.tier.copy()
    tier[unknown] = -1
    seg = table.segment.copy()
    seg[unknown] = None
    nxt = table.next_tier.copy()
    nxt[unknown] = None
    num = {k: np.where(unknown, np.nan, v) for k, v in table.num.items()}
    shares = {k: np.where(unknown, np.nan, v) for k, v in table.shares.items()}
    return replace(
        table,
        stage=stage,
        tier=tier,
        segment=seg,
        next_tier=nxt,
        num=num,
        shares=shares,
        basket_reaches_next_tier=table.basket_reaches_next_tier & ~unknown,
        basket_is_milestone=table.basket_is_milestone & ~unknown,
        consent=None
        if table.consent is None
        else np.where(unknown[:, None], np.int8(-1), table.consent).astype(np.int8),
    )


def _with_basket(table: MemberTable, total: float | np.ndarray) -> MemberTable:
    """The live basket: its total, and whether it reaches the next tier (one point per unit
    of currency) or is a purchase milestone (the member is one purchase away)."""
    total = np.asarray(total, dtype=np.float64)
    if total.ndim == 0:  # one total for every row (np.broadcast_to costs ~25 us per call)
        total = np.full(table.n, float(total))
    else:
        total = np.broadcast_to(total, (table.n,)).copy()
    has = np.isfinite(total)
    num = dict(table.num)
    num["basket_total"] = total
    to_next = table.num["points_to_next_tier"]
    to_milestone = table.num["purchases_to_next_milestone"]
    # An unknown distance (NaN) never counts: NaN <= x is False (no nan_to_num pass needed).
    return replace(
        table,
        num=num,
        basket_reaches_next_tier=has & (to_next <= total),
        basket_is_milestone=has & (to_milestone <= 1),
    )


def build_bundle(models: ModelSet, config: BundleSettings) -> ServingBundle:
    """Load the catalog and the snapshot and precompute both models' outputs (see module doc)."""
    for name in (AFFINITY, UPLIFT):
        if name not in models.models:
            raise BundleError(f"models: {name!r} is not configured (have {sorted(models.models)})")
    catalog_path, features_path = config.catalog_path(), config.features_path()
    if not catalog_path.exists():
        raise BundleError(f"OFFERS_CATALOG: {catalog_path} does not exist")
    if not features_path.exists():
        raise BundleError(f"OFFERS_MEMBER_FEATURES: {features_path} does not exist")
    engine = DecisionEngine(load_catalog(catalog_path), config.engine)
    frame = pd.read_parquet(features_path)
    if S.MEMBER_ID not in frame:
        raise BundleError(f"OFFERS_MEMBER_FEATURES: {features_path} has no member_id column")
    frame = frame.drop_duplicates(S.MEMBER_ID, keep="last").reset_index(drop=True)
    members = engine.member_table(frame)
    seg_col = config.engine.segment_column
    inputs = model_inputs(
        models.models[AFFINITY].model,
        models.models[UPLIFT].model,
        frame,
        engine.offers,
        segment_column=seg_col,
        model_versions=models.versions(),
        uncertainty_z=config.engine.scoring.uncertainty_z,
    )
    p = inputs.p_redeem.astype(np.float32)
    s = inputs.incremental_spend.astype(np.float32)
    served = np.asarray(inputs.fallback, dtype=object)
    segments = frame[seg_col].to_numpy(dtype=object) if seg_col in frame else members.segment
    personal = served == PERSONALISED
    tables = FallbackTables.from_scores(
        p, s, segments, personal if personal.any() else np.ones(len(frame), dtype=bool)
    )
    cold = _blank_unknown(members.take(np.array([0])) if members.n else _cold(1), np.array([True]))
    as_of = pd.Timestamp(frame["as_of"].max()) if "as_of" in frame and len(frame) else None
    history = _snapshot_history(config, members, engine)
    bundle = ServingBundle(
        engine=engine,
        members=members,
        index=pd.Index(members.ids, dtype=object),
        p_redeem=p,
        spend=s,
        served=served,
        fallback_tables=tables,
        versions=models.versions(),
        snapshot_as_of=as_of,
        single=SingleDecider(engine, tables),
        history=history,
        member_mask=np.vstack(
            [member_eligibility(members, engine.offers), member_eligibility(cold, engine.offers)]
        ),
        member_flags=np.vstack(
            [
                member_moments(members, config.engine.moments).flags,
                member_moments(cold, config.engine.moments).flags,
            ]
        ),
        _cold_row=cold,
        foldin=_foldin(models.models[AFFINITY].model, engine.offers.ids, members.ids),
    )
    log.info(
        "bundle: %d members, %d offers, models %s", members.n, engine.offers.n, bundle.versions
    )
    return bundle


def _foldin(affinity: Any, offer_ids: Sequence[str], member_ids: np.ndarray) -> FoldIn | None:
    """The checkout's basket fold-in for the loaded affinity model (None, logged, when the
    model has no closed-form fold-in or its scores do not use ALS)."""
    try:
        fold = FoldIn.from_pyfunc(python_model(affinity), offer_ids, member_ids)
    except (AttributeError, AffinityInputError) as exc:
        log.warning("bundle: checkout baskets are not folded in: %s", exc)
        return None
    if not fold.personalises:
        log.warning(
            "bundle: checkout baskets are not folded in: the affinity model's scores do not "
            "use ALS (blend als_weight 0), so a basket cannot change them"
        )
        return None
    return fold


def _snapshot_history(
    config: BundleSettings, members: MemberTable, engine: DecisionEngine
) -> SnapshotHistory:
    """The snapshot members' sends and redemptions from the canonical ``offer_events``."""
    path = config.offer_events_path()
    if path is None:
        log.warning(
            "bundle: no offer_events next to %s (OFFERS_OFFER_EVENTS): member history is "
            "only the service's own grants",
            config.catalog_path(),
        )
        return SnapshotHistory.from_events(None, members.ids, engine.offers)
    try:
        raw = read_raw(path)
        events = to_canonical_frame(raw, "offer_events")
    except Exception as exc:
        raise BundleError(
            f"OFFERS_OFFER_EVENTS: {path} cannot be read as offer_events: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    history = SnapshotHistory.from_events(events, members.ids, engine.offers)
    log.info(
        "bundle: %d past offer events of snapshot members from %s", len(history.events.rows), path
    )
    return history


class BundleHolder:
    """The current bundle and the offers whose store budget ran out (learned at grant time)."""

    def __init__(self, config: BundleSettings) -> None:
        self.config = config
        self.current: ServingBundle | None = None
        self._lock = threading.Lock()
        self._exhausted: frozenset[str] = frozenset()

    def build(self, models: ModelSet) -> ServingBundle:
        bundle = build_bundle(models, self.config)
        self.current = bundle
        return bundle

    def swap(self, bundle: ServingBundle, exhausted: frozenset[str]) -> None:
        """Serve ``bundle`` with the offers not to offer as the store says now (a reload's
        budgets may have grown: the old exhausted set does not carry over)."""
        with self._lock:
            self.current = bundle
            self._exhausted = frozenset(exhausted)

    @property
    def exhausted(self) -> frozenset[str]:
        return self._exhausted

    def mark_exhausted(self, offer_ids: set[str] | frozenset[str]) -> None:
        with self._lock:
            self._exhausted = self._exhausted | frozenset(offer_ids)
