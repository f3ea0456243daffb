"""The report's inputs from a canonical data directory or from the serving store.

From the store: each decision with offers is a ``sent`` per offer (its decision is its
campaign), a decision without offers for a member in the program holdout (the engine's
deterministic hash, ``serving.engine.holdout``) is a ``held_out``; ``redeemed`` feedback
events and redeemed grants are redemptions; checkout sessions are the purchases (a checkout
is a basket, and a checkout's decision counts purchases strictly after its own; the store
keeps no amounts, so spend, margin and ROI need ``--data`` too).
"""

from __future__ import annotations

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
    from serving.engine.settings import HoldoutSettings

__all__ = ["from_data_dir", "from_store", "offers_frame"]


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
    store: object,
    catalog: Path,
    holdout: HoldoutSettings | None = None,
    data: Path | None = None,
    since: datetime | None = None,
) -> ReportInputs:
    """Inputs from an open ``OffersStore`` and the catalog it serves. ``holdout``: the
    engine's ``HoldoutSettings`` (default: from the environment, as the service reads it).
    ``data``: a data directory whose transactions and members give spend and the onboarding
    stage (else checkouts are the purchases and spend is not estimated). ``since``: only
    decisions made from then on (and what followed them)."""
    from serving.engine.holdout import in_holdout
    from serving.engine.settings import EngineSettings
    from serving.store.tables import checkout_sessions, decisions, feedback_events, grants

    engine = store.engine  # type: ignore[attr-defined]
    with engine.connect() as c:
        dec = pd.DataFrame(
            c.execute(
                select(
                    decisions.c.decision_id,
                    decisions.c.member_id,
                    decisions.c.channel,
                    decisions.c.offers,
                    decisions.c.created_at,
                ).where(decisions.c.created_at >= (since or datetime.min))
            ).all(),
            columns=["decision_id", "member_id", "channel", "offers", "ts"],
        )
        fb = pd.DataFrame(
            c.execute(
                select(
                    feedback_events.c.member_id,
                    feedback_events.c.offer_id,
                    feedback_events.c.decision_id,
                    feedback_events.c.ts,
                )
                .where(feedback_events.c.event == "redeemed")
                .where(feedback_events.c.ts >= (since or datetime.min))
            ).all(),
            columns=["member_id", "offer_id", "decision_id", "ts"],
        )
        gr = pd.DataFrame(
            c.execute(
                select(
                    grants.c.member_id,
                    grants.c.offer_id,
                    grants.c.decision_id,
                    grants.c.redeemed_at,
                )
                .where(grants.c.state == "redeemed")
                .where(grants.c.granted_at >= (since or datetime.min))
            ).all(),
            columns=["member_id", "offer_id", "decision_id", "ts"],
        )
        sessions = pd.DataFrame(
            c.execute(
                select(
                    checkout_sessions.c.transaction_id,
                    checkout_sessions.c.member_id,
                    checkout_sessions.c.created_at,
                    checkout_sessions.c.decision_id,
                ).where(checkout_sessions.c.created_at >= (since or datetime.min))
            ).all(),
            columns=["transaction_id", "member_id", "ts", "decision_id"],
        )
    settings = holdout if holdout is not None else EngineSettings().holdout  # type: ignore[call-arg]
    # A checkout's decision happens at its purchase: the unit starts at the session's time and
    # outcomes strictly after it (its own basket is not its outcome).
    at_checkout = sessions.drop_duplicates("decision_id").set_index("decision_id")["ts"]
    dec["ts"] = dec["decision_id"].map(at_checkout).fillna(dec["ts"])
    sessions = sessions.drop(columns="decision_id")
    n_offers = dec["offers"].map(len) if len(dec) else pd.Series(dtype=int)
    sent = dec.loc[n_offers > 0].explode("offers")
    sent = sent.assign(offer_id=sent["offers"].map(lambda x: x["offer_id"]), event="sent").drop(
        columns="offers"
    )
    empty = dec.loc[n_offers == 0]
    held = empty.loc[in_holdout(empty["member_id"].to_numpy(object), settings)]
    held = held.assign(offer_id=None, event="held_out").drop(columns="offers")
    red = pd.concat([fb, gr]).dropna(subset=["offer_id", "decision_id"])
    red = red.drop_duplicates(["decision_id", "offer_id"]).assign(event="redeemed")
    # Store decisions have no campaign: the channel and day group them (the strata).
    day = pd.to_datetime(dec["ts"]).dt.strftime("%Y-%m-%d")
    campaign = pd.Series(
        (dec["channel"].astype(str) + "-" + day).to_numpy(), index=dec["decision_id"]
    )
    events = pd.concat([sent, held, red], ignore_index=True)
    events["campaign_id"] = events["decision_id"].map(campaign)
    events = events.drop(columns="channel", errors="ignore")

    joined = pd.Series(dtype="datetime64[us]")
    baskets: pd.DataFrame | None = sessions.assign(amount=float("nan"))
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
