"""The serving store as canonical ``offer_events``: what retraining reads (``offers export``).

From the store's tables:

* ``decisions`` -> one ``sent`` event per offer of a decision (``decision_id``, the offer's
  logged ``propensity``, ``channel``, ``campaign_id``), and one ``held_out`` event per decision
  for a program holdout member (no offer; propensity = the holdout share at decision time);
* ``grants`` (checkout rewards, stored durably with the session) -> ``sent`` for a grant whose
  decision record is missing (the decision log is batched and may lose records on a crash);
* ``feedback_events`` -> ``viewed``, ``redeemed``, ``dismissed``, with the campaign of their
  decision.

Event ids are derived from the decision, the offer and the event
(``<decision_id>:<offer_id>:<event>``; ``<decision_id>:held_out``; feedback without a decision:
``fb:<event_id>``), so exporting the same store twice gives the same ids and merging into a data
directory that already holds them adds nothing. Repeats of one (decision, offer, event) keep
the earliest.

``campaign_id``: a batch send's own campaign id; an API decision (member offers, checkout) has
none, and is given ``serve-<channel>-<YYYY-MM-DD>`` (one campaign per channel and UTC day), so
that uplift training and the off-policy gate group live decisions as they group campaigns.

Errors: :class:`ExportError` (a ``ValueError``) naming the input and the value.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from features.sources import schema as S
from features.sources.io import find_table_file, read_raw, to_canonical_frame, write_table
from serving.store import OffersStore
from serving.store.tables import decisions, feedback_events, grants

__all__ = [
    "ExportError",
    "ExportResult",
    "export_events",
    "export_from_url",
    "merge_events",
    "safe_url",
    "serving_campaign_id",
    "store_events",
]

log = logging.getLogger(__name__)

FEEDBACK_EVENTS = ("viewed", "redeemed", "dismissed")


class ExportError(ValueError):
    """The store or the output directory cannot be exported to as asked."""


@dataclass(frozen=True)
class ExportResult:
    """Counts of one export: rows read from the store, events made, written, already there."""

    read: dict[str, int]
    events: dict[str, int]  # canonical events made, by event kind
    written: int
    already_present: int
    total: int  # offer_events rows in the output after the merge
    path: Path
    unknown_holdout: int  # decisions stored before the holdout was recorded, without offers

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "events": self.events,
            "written": self.written,
            "already_present": self.already_present,
            "total": self.total,
            "path": str(self.path),
            "unknown_holdout": self.unknown_holdout,
        }


def serving_campaign_id(channel: str, ts: datetime | pd.Timestamp) -> str:
    """The campaign of an API decision: one per channel and UTC day."""
    return f"serve-{channel}-{pd.Timestamp(ts).date().isoformat()}"


def _given(value: Any) -> Any:
    """``value``, or None for a SQL NULL (None or NaN once in a frame)."""
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def _rows(store: OffersStore, table: Any, ts_col: str, since: datetime | None) -> pd.DataFrame:
    statement = select(table)
    if since is not None:
        statement = statement.where(table.c[ts_col] >= since)
    with store.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(statement)]
    return pd.DataFrame(rows, columns=[c.name for c in table.columns])


def store_events(
    store: OffersStore, since: datetime | None = None
) -> tuple[pd.DataFrame, dict[str, int], int]:
    """Canonical ``offer_events`` of the store (decisions, grants, feedback at or after
    ``since``), the rows read per table, and the decisions whose holdout status is unknown."""
    dec = _rows(store, decisions, "created_at", since)
    gra = _rows(store, grants, "granted_at", since)
    fb = _rows(store, feedback_events, "ts", since)
    read = {"decisions": len(dec), "grants": len(gra), "feedback_events": len(fb)}
    events: list[dict[str, Any]] = []
    campaign_of: dict[str, str] = {}
    unknown = 0
    for r in dec.itertuples(index=False):
        campaign = _given(r.campaign_id) or serving_campaign_id(r.channel, r.created_at)
        campaign_of[r.decision_id] = campaign
        common = {
            S.MEMBER_ID: r.member_id,
            S.TS: r.created_at,
            S.CAMPAIGN_ID: campaign,
            S.CHANNEL: r.channel,
            S.DECISION_ID: r.decision_id,
        }
        held_out = _given(r.held_out)
        if held_out is not None and bool(held_out):
            share = _given(r.holdout_share)
            events.append(
                {
                    S.EVENT_ID: f"{r.decision_id}:held_out",
                    S.EVENT: "held_out",
                    S.OFFER_ID: None,
                    S.PROPENSITY: None if share is None else float(share),
                    **common,
                }
            )
            continue
        offers = r.offers or []
        if held_out is None and not offers:
            unknown += 1
        for x in offers:
            p = _given(x.get("propensity"))
            events.append(
                {
                    S.EVENT_ID: f"{r.decision_id}:{x['offer_id']}:sent",
                    S.EVENT: "sent",
                    S.OFFER_ID: x["offer_id"],
                    S.PROPENSITY: None if p is None else min(max(float(p), 0.0), 1.0),
                    **common,
                }
            )
    n_decision_events = len(events)
    for g in gra.itertuples(index=False):
        campaign = campaign_of.get(g.decision_id) or serving_campaign_id(g.channel, g.granted_at)
        campaign_of.setdefault(g.decision_id, campaign)
        events.append(
            {
                S.EVENT_ID: f"{g.decision_id}:{g.offer_id}:sent",
                S.MEMBER_ID: g.member_id,
                S.TS: g.granted_at,
                S.EVENT: "sent",
                S.OFFER_ID: g.offer_id,
                S.CAMPAIGN_ID: campaign,
                S.CHANNEL: g.channel,
                S.DECISION_ID: g.decision_id,
                S.PROPENSITY: None,  # the decision record (first, kept) carries it
            }
        )
    fb = fb.loc[fb["event"].isin(FEEDBACK_EVENTS)] if len(fb) else fb
    for e in fb.itertuples(index=False):
        has_decision = _given(e.decision_id) is not None
        if has_decision and _given(e.offer_id) is not None:
            event_id = f"{e.decision_id}:{e.offer_id}:{e.event}"
        else:
            event_id = f"fb:{e.event_id}"
        events.append(
            {
                S.EVENT_ID: event_id,
                S.MEMBER_ID: e.member_id,
                S.TS: e.ts,
                S.EVENT: e.event,
                S.OFFER_ID: _given(e.offer_id),
                S.CAMPAIGN_ID: campaign_of.get(e.decision_id) if has_decision else None,
                S.CHANNEL: e.channel,
                S.DECISION_ID: e.decision_id if has_decision else None,
                S.PROPENSITY: None,
            }
        )
    frame = pd.DataFrame(events, columns=S.OFFER_EVENTS.column_names)
    if len(frame):
        # A sent event of a decision and of its grant: the decision's row (it carries the
        # propensity) wins; repeats of one feedback event keep the earliest.
        frame["_grant"] = [False] * n_decision_events + [True] * len(gra) + [False] * len(fb)
        frame["_order"] = range(len(frame))
        frame = frame.sort_values(["_grant", S.TS, "_order"], kind="stable")
        frame = frame.drop_duplicates(S.EVENT_ID, keep="first").sort_values("_order")
        frame = frame.drop(columns=["_grant", "_order"])
    return to_canonical_frame(frame.reset_index(drop=True), "offer_events"), read, unknown


def merge_events(new: pd.DataFrame, out_dir: Path) -> tuple[pd.DataFrame, int, int, Path]:
    """``new`` events merged into ``out_dir``'s ``offer_events`` (ids already there are kept as
    they are); returns (the merged table, events written, events already present, its path).

    The table is written as Parquet through a temporary file and moved into place; an existing
    CSV table is replaced by the Parquet file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    existing_path = find_table_file(out_dir, "offer_events")
    if existing_path is not None:
        raw = read_raw(existing_path)
        if S.EVENT_ID not in raw.columns:
            raise ExportError(f"{existing_path}: no {S.EVENT_ID} column; not an offer_events table")
        for col in (S.TS,):
            raw[col] = pd.to_datetime(raw[col])
        for col in (S.PROPENSITY,):
            if col in raw.columns:
                raw[col] = pd.to_numeric(raw[col])
        existing = to_canonical_frame(raw, "offer_events")
    else:
        existing = new.iloc[:0]
    present = new[S.EVENT_ID].isin(set(existing[S.EVENT_ID]))
    added = new.loc[~present]
    if existing_path is not None and existing_path.suffix == ".parquet" and not len(added):
        return existing, 0, int(present.sum()), existing_path  # unchanged: same bytes, same hash
    merged = pd.concat([existing, added], ignore_index=True) if len(existing) else added
    tmp_dir = out_dir / ".offer_events.tmp"
    tmp_dir.mkdir(exist_ok=True)
    tmp = write_table(merged.reset_index(drop=True), tmp_dir, "offer_events")
    final = out_dir / "offer_events.parquet"
    os.replace(tmp, final)
    tmp_dir.rmdir()
    if existing_path is not None and existing_path != final:
        existing_path.unlink()
    return merged, len(added), int(present.sum()), final


def export_events(store: OffersStore, out_dir: Path, since: datetime | None = None) -> ExportResult:
    """Write the store's decisions, grants and feedback into ``out_dir`` as ``offer_events``
    (merged without duplicates; see the module docstring)."""
    new, read, unknown = store_events(store, since)
    merged, written, present, path = merge_events(new, Path(out_dir))
    counts = new[S.EVENT].value_counts().to_dict() if len(new) else {}
    log.info("export: %d events made, %d written, %d already present", len(new), written, present)
    return ExportResult(
        read=read,
        events={e: int(counts.get(e, 0)) for e in S.EVENTS},
        written=written,
        already_present=present,
        total=len(merged),
        path=path,
        unknown_holdout=unknown,
    )


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def export_from_url(url: str, out_dir: Path, since: datetime | None = None) -> ExportResult:
    """:func:`export_events` of the store at ``url``, which must be at the schema head (this
    never migrates a production store; the service does at start). Raises :class:`ExportError`
    naming the URL (without its password) when it cannot be opened or is at another revision."""
    from sqlalchemy.exc import SQLAlchemyError

    from serving.store import StoreConfigError, current_revision, head_revision, open_store

    shown = safe_url(url)
    try:
        store = open_store(url, migrate_schema=False)
    except (StoreConfigError, SQLAlchemyError, ValueError) as exc:
        raise ExportError(f"--store {shown}: {exc}") from None
    try:
        try:
            revision = current_revision(store.engine)
        except SQLAlchemyError as exc:
            raise ExportError(f"--store {shown}: cannot connect ({type(exc).__name__})") from None
        if revision != head_revision():
            raise ExportError(
                f"--store {shown}: schema revision {revision!r}, expected {head_revision()!r}; "
                "start `offers serve` on it once (it migrates the schema)"
            )
        return export_events(store, out_dir, since)
    finally:
        store.close()
