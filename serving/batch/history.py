"""Member history for a send: the data's ``offer_events`` plus the serving store's grants.

The API decides with both (the snapshot's events and the member's grants in the store), so the
e-mail send must too: a reward granted at checkout counts against the offer's
``per_member_cap``, the channel caps and "never the same surprise twice", whatever path
decides next. :func:`store_grant_events` gives the store's grants that were not released as
canonical ``offer_events`` rows (a ``sent`` per grant and a ``redeemed`` when redeemed, with
the grant's ``decision_id``). A grant ``offers export`` already wrote into the data's
``offer_events`` is that event, not a second send (``serving.engine.state.ExportedSends``, the
rule the API applies too).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import select

from features.sources import schema as S
from serving.engine.state import ExportedSends
from serving.store import OffersStore
from serving.store.tables import grants

__all__ = ["store_grant_events", "with_store_grants"]

_COLUMNS = [S.EVENT_ID, S.MEMBER_ID, S.TS, S.EVENT, S.OFFER_ID, S.CHANNEL, S.DECISION_ID]


def store_grant_events(store: OffersStore) -> pd.DataFrame:
    """The store's grants not released, as ``offer_events`` rows (read once per send)."""
    query = select(
        grants.c.transaction_id,
        grants.c.offer_id,
        grants.c.member_id,
        grants.c.decision_id,
        grants.c.channel,
        grants.c.state,
        grants.c.granted_at,
    ).where(grants.c.state != "released")
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in _COLUMNS})
    frame = pd.DataFrame(
        rows, columns=["tx", "offer", "member", "decision", "channel", "state", "at"]
    )
    sent = pd.DataFrame(
        {
            S.EVENT_ID: "grant:" + frame["tx"] + ":" + frame["offer"],
            S.MEMBER_ID: frame["member"],
            S.TS: pd.to_datetime(frame["at"]),
            S.EVENT: "sent",
            S.OFFER_ID: frame["offer"],
            S.CHANNEL: frame["channel"],
            S.DECISION_ID: frame["decision"],
        }
    )
    redeemed = sent.loc[(frame["state"] == "redeemed").to_numpy()].copy()
    redeemed[S.EVENT] = "redeemed"
    redeemed[S.EVENT_ID] = redeemed[S.EVENT_ID] + ":redeemed"
    return pd.concat([sent, redeemed], ignore_index=True)


def with_store_grants(
    events: pd.DataFrame | None, store: OffersStore | None
) -> pd.DataFrame | None:
    """``events`` with the store's grants appended (unchanged without a store or grants); a
    grant already in ``events`` (exported: its decision's ``sent`` of the offer) only adds its
    redemption."""
    if store is None:
        return events
    extra = store_grant_events(store)
    if extra.empty:
        return events
    if events is None:
        return extra
    extra = extra.astype({S.TS: np.dtype("datetime64[us]")})
    extra = ExportedSends.from_events(events).drop_from_events(extra)
    return pd.concat(
        [events, extra[[c for c in extra.columns if c in events.columns]]], ignore_index=True
    )
