"""The report's inputs from a canonical data directory or from the serving store.

From the store: the events are the ones ``offers export`` writes
(``serving.batch.export.store_events``: ``sent`` per offer of a decision, ``held_out`` per
decision of a program holdout member as the decision recorded it, feedback with the campaign of
its decision; API decisions grouped per channel and day), plus a redemption for every redeemed
grant. Checkout sessions are the purchases (a checkout is a basket, and a checkout's decision
counts purchases strictly after its own); the store keeps no amounts, so spend, margin and ROI
need ``--data`` too.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy import select

from features.sources import schema as S
from features.sources.io import find_table_file, read_raw
from serving.reports.incrementality import IncrementalityError, ReportInputs

if TYPE_CHECKING:
    from serving.store import OffersStore

__all__ = ["from_data_dir", "from_store", "offers_frame"]

log = logging.getLogger(__name__)


def _read(data: Path, table: str, columns: list[str], required: bool = True) -> pd.DataFrame | None:
    path = find_table_file(data, table)
    if path is None:
        if required:
            raise IncrementalityError(f"--data {data}: no {table}.parquet or {table}.csv")
        return None
    if path.name.endswith(".parquet"):
        have = set(pq.read_schema(path).names)
        return pq.read_table(path, columns=[c for c in columns if c in have]).to_pandas()
    df = read_raw(path)
    return df[[c for c in columns if c in df.columns]]


def offers_frame(offers: pd.DataFrame | None, catalog_path: Path | None) -> pd.DataFrame:
    """offer_id, name, kind, cost and moment, from the ``offers`` table and/or the catalog
    (the moment of a surprise offer lives only in the catalog)."""
    frame = offers
    if catalog_path is not None and catalog_path.exists():
        from features.catalog.model import load_catalog

        catalog = load_catalog(catalog_path)
        cat = pd.DataFrame(
            [
                {
                    "offer_id": o.offer_id,
                    "name": o.name,
                    "kind": o.kind,
                    "cost": o.cost,
                    "moment": o.moment,
                }
                for o in catalog.offers
            ]
        )
        frame = (
            cat
            if frame is None
            else frame.drop(columns=["moment"], errors="ignore").merge(
                cat[["offer_id", "moment"]], on="offer_id", how="left"
            )
        )
    if frame is None:
        raise IncrementalityError("offers: neither an offers table nor a catalog was given")
    return frame


def from_data_dir(data: Path, catalog: Path | None = None) -> ReportInputs:
    """Inputs from a canonical data directory (``catalog.yaml`` in it gives the moments)."""
    data = Path(data)
    if not data.is_dir():
        raise IncrementalityError(f"--data {data}: not a directory")
    events = _read(
        data,
        "offer_events",
        [S.MEMBER_ID, S.TS, S.EVENT, S.OFFER_ID, S.CAMPAIGN_ID, S.DECISION_ID],
    )
    baskets = _read(data, "transactions", [S.TRANSACTION_ID, S.MEMBER_ID, S.TS, S.AMOUNT])
    offers = _read(data, "offers", [S.OFFER_ID, S.NAME, S.KIND, S.COST])
    members = _read(data, "members", [S.MEMBER_ID, S.JOINED_AT])
    assert events is not None and members is not None  # required
    cat = catalog if catalog is not None else data / "catalog.yaml"
    return ReportInputs(
        events=events,
        baskets=baskets,
        offers=offers_frame(offers, cat),
        joined=members.set_index(S.MEMBER_ID)[S.JOINED_AT],
    )


def from_store(
    store: OffersStore,
    catalog: Path,
    data: Path | None = None,
    since: datetime | None = None,
) -> ReportInputs:
    """Inputs from an open ``OffersStore`` and the catalog it serves. ``data``: a data
    directory whose transactions and members give spend and the onboarding stage (else
    checkouts are the purchases and spend is not estimated). ``since``: only decisions made
    from then on (and what followed them)."""
    from serving.batch.export import store_events
    from serving.store.tables import checkout_sessions, grants

    events, _read, unknown = store_events(store, since)
    if unknown:
        log.info("%d decision(s) without offers and no holdout flag: not compared", unknown)
    after = since or datetime.min
    engine = store.engine
    with engine.connect() as c:
        redeemed = pd.DataFrame(
            c.execute(
                select(
                    grants.c.member_id,
                    grants.c.offer_id,
                    grants.c.decision_id,
                    grants.c.redeemed_at,
                )
                .where(grants.c.state == "redeemed")
                .where(grants.c.granted_at >= after)
            ).all(),
            columns=[S.MEMBER_ID, S.OFFER_ID, S.DECISION_ID, S.TS],
        )
        sessions = pd.DataFrame(
            c.execute(
                select(
                    checkout_sessions.c.transaction_id,
                    checkout_sessions.c.member_id,
                    checkout_sessions.c.created_at,
                    checkout_sessions.c.decision_id,
                ).where(checkout_sessions.c.created_at >= after)
            ).all(),
            columns=[S.TRANSACTION_ID, S.MEMBER_ID, S.TS, S.DECISION_ID],
        )
    campaign = events.dropna(subset=[S.DECISION_ID]).drop_duplicates(S.DECISION_ID)
    campaign = campaign.set_index(S.DECISION_ID)[S.CAMPAIGN_ID]
    redeemed = redeemed.assign(
        **{S.EVENT: "redeemed", S.CAMPAIGN_ID: redeemed[S.DECISION_ID].map(campaign)}
    )
    events = pd.concat([events, redeemed], ignore_index=True)
    # A checkout's decision happens at its purchase: the unit starts at the session's time and
    # outcomes come strictly after it (its own basket is not its outcome).
    at_checkout = sessions.drop_duplicates(S.DECISION_ID).set_index(S.DECISION_ID)[S.TS]
    moved = events[S.DECISION_ID].map(at_checkout)
    events[S.TS] = moved.where(moved.notna() & (events[S.EVENT] != "redeemed"), events[S.TS])
    sessions = sessions.drop(columns=S.DECISION_ID)

    joined = pd.Series(dtype="datetime64[us]")
    baskets: pd.DataFrame | None = sessions.assign(**{S.AMOUNT: float("nan")})
    offers = None
    if data is not None:
        d = from_data_dir(data, catalog)
        baskets, joined, offers = d.baskets, d.joined, d.offers
    return ReportInputs(
        events=events,
        baskets=baskets,
        offers=offers if offers is not None else offers_frame(None, catalog),
        joined=joined,
        after_seconds=1,  # a checkout's own basket is not its outcome
    )
