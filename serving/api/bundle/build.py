"""Building a :class:`~serving.api.bundle.ServingBundle`: load the catalog and the member
snapshot and precompute both models' outputs for every (member, offer).

``build_bundle(models, settings)`` checks that the model set has ``affinity`` and ``uplift``,
reads the catalog (``OFFERS_CATALOG``) and the snapshot (``OFFERS_MEMBER_FEATURES``, the Parquet
written by ``offers features``), turns the models' outputs into engine inputs through the one
adapter (:func:`serving.engine.adapters.model_inputs`), and adds what the real-time path needs:
the member-only eligibility and moment flags, the cold-start row, the checkout basket's fold-in
and the snapshot members' past offer events (``OFFERS_OFFER_EVENTS``). A missing input raises
:class:`~serving.api.bundle.BundleError` naming the variable and the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.catalog.model import load_catalog
from features.sources import schema as S
from features.sources.io import read_raw, to_canonical_frame
from models.affinity import AffinityInputError, FoldIn
from serving.api.bundle.member_rows import blank_unknown, cold_members
from serving.api.bundle.serving_bundle import BundleError, ServingBundle
from serving.api.modelset import AFFINITY, UPLIFT, ModelSet
from serving.engine import DecisionEngine, FallbackTables, MemberTable
from serving.engine.adapters import model_inputs, python_model
from serving.engine.eligibility import member_eligibility
from serving.engine.moments import member_moments
from serving.engine.settings import PERSONALISED
from serving.engine.single import SingleDecider
from serving.engine.state import SnapshotHistory
from serving.settings import Settings

__all__ = ["build_bundle"]

log = logging.getLogger(__name__)


def build_bundle(models: ModelSet, settings: Settings) -> ServingBundle:
    """Load the catalog and the snapshot and precompute both models' outputs (see module doc)."""
    for name in (AFFINITY, UPLIFT):
        if name not in models.models:
            raise BundleError(f"models: {name!r} is not configured (have {sorted(models.models)})")
    catalog_path, features_path = settings.catalog_path(), settings.features_path()
    if not catalog_path.exists():
        raise BundleError(f"OFFERS_CATALOG: {catalog_path} does not exist")
    if not features_path.exists():
        raise BundleError(f"OFFERS_MEMBER_FEATURES: {features_path} does not exist")
    engine = DecisionEngine(load_catalog(catalog_path), settings.engine)
    frame = pd.read_parquet(features_path)
    if S.MEMBER_ID not in frame:
        raise BundleError(f"OFFERS_MEMBER_FEATURES: {features_path} has no member_id column")
    frame = frame.drop_duplicates(S.MEMBER_ID, keep="last").reset_index(drop=True)
    members = engine.member_table(frame)
    seg_col = settings.engine.segment_column
    inputs = model_inputs(
        models.models[AFFINITY].model,
        models.models[UPLIFT].model,
        frame,
        engine.offers,
        segment_column=seg_col,
        model_versions=models.versions(),
        uncertainty_z=settings.engine.scoring.uncertainty_z,
    )
    p = inputs.p_redeem.astype(np.float32)
    s = inputs.incremental_spend.astype(np.float32)
    served = np.asarray(inputs.fallback, dtype=object)
    segments = frame[seg_col].to_numpy(dtype=object) if seg_col in frame else members.segment
    personal = served == PERSONALISED
    tables = FallbackTables.from_scores(
        p, s, segments, personal if personal.any() else np.ones(len(frame), dtype=bool)
    )
    cold = blank_unknown(
        members.take(np.array([0])) if members.n else cold_members(1), np.array([True])
    )
    as_of = pd.Timestamp(frame["as_of"].max()) if "as_of" in frame and len(frame) else None
    history = _snapshot_history(settings, members, engine)
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
                member_moments(members, settings.engine.moments).flags,
                member_moments(cold, settings.engine.moments).flags,
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
    settings: Settings, members: MemberTable, engine: DecisionEngine
) -> SnapshotHistory:
    """The snapshot members' sends and redemptions from the canonical ``offer_events``."""
    path = settings.offer_events_path()
    if path is None:
        log.warning(
            "bundle: no offer_events next to %s (OFFERS_OFFER_EVENTS): member history is "
            "only the service's own grants",
            settings.catalog_path(),
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
