"""What the engine must know about past decisions: per-member caps, active offers, budgets.

:class:`MemberOfferState` is plain arrays aligned with a :class:`MemberTable` and an
:class:`OfferTable`. Build it from the canonical ``offer_events`` table with
:func:`state_from_events` (batch) or fill it from the serving store's counters; the engine only
reads the arrays. :func:`remaining_budgets` turns the redemptions so far into what is left of
each offer's budget.

A store grant that ``offers export`` already wrote into the snapshot's ``offer_events`` (a
``sent`` event with the grant's ``decision_id`` and ``offer_id``) is that event, not a second
send: :class:`ExportedSends` holds the rule, applied on every path (one member, many members,
and the batch's store-grant events through :meth:`ExportedSends.drop_from_events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd

from features.sources import schema as S
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable

__all__ = [
    "EventArrays",
    "ExportedSends",
    "MemberOfferState",
    "PastGrant",
    "SnapshotHistory",
    "grant_arrays",
    "remaining_budgets",
    "state_from_arrays",
    "state_from_events",
]

DAY = np.timedelta64(86_400_000_000, "us")


class PastGrant(NamedTuple):
    """One reward the service granted a member and did not release (the serving store's
    ``grants`` rows): counted as a send of ``offer_id`` on ``channel`` at ``granted_at``,
    unless the snapshot already holds it as the ``sent`` event of ``decision_id`` (see
    :class:`ExportedSends`)."""

    offer_id: str
    channel: str
    granted_at: datetime
    surprise: bool
    redeemed: bool = False
    decision_id: str | None = None  # None: never matched to a snapshot event


@dataclass(frozen=True)
class MemberOfferState:
    """Counters of past sends per member (rows) and offer (columns)."""

    received: np.ndarray  # (n, m) int: sends of the offer to the member, ever
    active: np.ndarray  # (n, m) bool: sent, not redeemed, still within its duration
    channel_recent: np.ndarray  # (n, len(CHANNELS)) int: sends per channel in the cap period
    last_surprise: np.ndarray  # (n,) int: offer index of the latest surprise sent, -1 none
    surprises_year: np.ndarray  # (n,) int: surprises sent in the 365 days before as_of

    @classmethod
    def empty(cls, n_members: int, n_offers: int) -> MemberOfferState:
        """No history: nothing received, nothing active."""
        return cls(
            received=np.zeros((n_members, n_offers), dtype=np.int32),
            active=np.zeros((n_members, n_offers), dtype=bool),
            channel_recent=np.zeros((n_members, len(S.CHANNELS)), dtype=np.int32),
            last_surprise=np.full(n_members, -1, dtype=np.int64),
            surprises_year=np.zeros(n_members, dtype=np.int32),
        )

    def check(self, n_members: int, n_offers: int) -> None:
        """Raise if the arrays do not match the members and offers."""
        shapes = {
            "received": (self.received.shape, (n_members, n_offers)),
            "active": (self.active.shape, (n_members, n_offers)),
            "channel_recent": (self.channel_recent.shape, (n_members, len(S.CHANNELS))),
            "last_surprise": (self.last_surprise.shape, (n_members,)),
            "surprises_year": (self.surprises_year.shape, (n_members,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise EngineInputError(f"state.{name}: shape {got}, expected {want}")

    def take(self, rows: np.ndarray) -> MemberOfferState:
        return MemberOfferState(
            received=self.received[rows],
            active=self.active[rows],
            channel_recent=self.channel_recent[rows],
            last_surprise=self.last_surprise[rows],
            surprises_year=self.surprises_year[rows],
        )


SENT, REDEEMED = np.int8(0), np.int8(1)


@dataclass(frozen=True)
class EventArrays:
    """Offer events as arrays: member row, offer column, channel index (-1 unknown), time
    (``datetime64[us]``) and kind (``SENT`` or ``REDEEMED``); only known members and offers."""

    rows: np.ndarray
    cols: np.ndarray
    channel: np.ndarray
    ts: np.ndarray
    kind: np.ndarray

    @classmethod
    def empty(cls) -> EventArrays:
        i = np.zeros(0, dtype=np.int64)
        return cls(i, i, np.zeros(0, np.int8), np.zeros(0, "datetime64[us]"), np.zeros(0, np.int8))

    @classmethod
    def from_events(
        cls, events: pd.DataFrame, member_ids: np.ndarray, offers: OfferTable
    ) -> EventArrays:
        """The ``sent`` and ``redeemed`` rows of canonical ``offer_events`` (any time)."""
        return cls._from_known(*_known_events(events, member_ids, offers))

    @classmethod
    def _from_known(cls, ev: pd.DataFrame, rows: np.ndarray, cols: np.ndarray) -> EventArrays:
        if S.CHANNEL in ev.columns:
            ch = pd.Index(list(S.CHANNELS), dtype=object).get_indexer(ev[S.CHANNEL].astype(object))
        else:
            ch = np.full(len(ev), -1)
        kind = np.where(ev[S.EVENT].to_numpy(dtype=object) == "sent", SENT, REDEEMED)
        return cls(
            rows.astype(np.int64),
            cols.astype(np.int64),
            ch.astype(np.int8),
            ev[S.TS].to_numpy(dtype="datetime64[us]"),
            kind.astype(np.int8),
        )

    def take_member(self, start: int, stop: int, row: int = 0) -> EventArrays:
        """Events ``start:stop`` (one member's, when grouped) renumbered to member ``row``."""
        sl = slice(start, stop)
        return EventArrays(
            np.full(stop - start, row, dtype=np.int64),
            self.cols[sl],
            self.channel[sl],
            self.ts[sl],
            self.kind[sl],
        )

    def concat(self, other: EventArrays) -> EventArrays:
        if not len(other.rows):
            return self
        if not len(self.rows):
            return other
        return EventArrays(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in _EVENT_FIELDS)
        )


_EVENT_FIELDS = ("rows", "cols", "channel", "ts", "kind")


def _known_events(
    events: pd.DataFrame, member_ids: np.ndarray, offers: OfferTable
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The ``sent``/``redeemed`` rows of known members and offers, their member rows and
    offer columns."""
    for col in (S.MEMBER_ID, S.TS, S.EVENT, S.OFFER_ID):
        if col not in events.columns:
            raise EngineInputError(f"offer_events: missing column {col!r}")
    kind_col = events[S.EVENT].to_numpy(dtype=object)
    keep = ((kind_col == "sent") | (kind_col == "redeemed")) & events[S.OFFER_ID].notna()
    ev = events.loc[keep]
    ids = pd.Index(np.asarray(member_ids, dtype=object))
    rows = ids.get_indexer(ev[S.MEMBER_ID].astype(str).to_numpy(dtype=object))
    cols = pd.Index(list(offers.ids)).get_indexer(ev[S.OFFER_ID].astype(str))
    ok = (rows >= 0) & (cols >= 0)
    return ev.loc[ok], rows[ok], cols[ok]


class ExportedSends:
    """The snapshot's ``sent`` events that carry a ``decision_id``: (decision_id, offer_id) ->
    the send's time (microseconds since the epoch), built once per snapshot.

    The rule (the one place it is written): a store grant whose decision and offer are here
    was exported into the snapshot by ``offers export``; its send is the snapshot's event and
    is not counted again; a redemption the store knows of is kept (the snapshot may predate
    it), no earlier than the snapshot's send, so that it still closes that send.
    """

    __slots__ = ("_sent_at",)

    def __init__(self, sent_at: Mapping[tuple[str, str], int] | None = None) -> None:
        self._sent_at = dict(sent_at) if sent_at else {}

    @classmethod
    def from_events(cls, events: pd.DataFrame | None) -> ExportedSends:
        """From canonical ``offer_events`` (only ``sent`` rows with a ``decision_id`` and an
        offer; a table without decision ids gives an empty set at the cost of one mask)."""
        if events is None or S.DECISION_ID not in events.columns or not len(events):
            return cls()
        has_decision = events[S.DECISION_ID].notna().to_numpy()
        if not has_decision.any():
            return cls()
        sent = (events[S.EVENT] == "sent").to_numpy(dtype=bool, na_value=False)
        keep = has_decision & sent & events[S.OFFER_ID].notna().to_numpy()
        ev = events.loc[keep]
        dec = ev[S.DECISION_ID].astype(str).to_numpy(dtype=object).tolist()
        off = ev[S.OFFER_ID].astype(str).to_numpy(dtype=object).tolist()
        ts = ev[S.TS].to_numpy(dtype="datetime64[us]").view(np.int64)
        sent_at = dict(zip(zip(dec, off, strict=True), ts.tolist(), strict=True))
        if len(sent_at) < len(ts):  # a key sent twice (export writes it once): keep the latest
            for key, t in zip(zip(dec, off, strict=True), ts.tolist(), strict=True):
                sent_at[key] = max(sent_at[key], t)
        return cls(sent_at)

    def __len__(self) -> int:
        return len(self._sent_at)

    def sent_at(self, decision_id: str | None, offer_id: str) -> int | None:
        """When the snapshot sent ``offer_id`` for ``decision_id`` (us since the epoch), or
        None when it holds no such send."""
        if decision_id is None or not self._sent_at:
            return None
        return self._sent_at.get((decision_id, offer_id))

    def drop_from_events(self, grant_events: pd.DataFrame) -> pd.DataFrame:
        """Store grants given as ``offer_events`` rows (a ``sent``, and a ``redeemed`` when
        redeemed, each with the grant's ``decision_id``) under this rule: exported sends
        removed, their redemptions no earlier than the snapshot's send (the batch path's form
        of :func:`grant_arrays`)."""
        if not self._sent_at or not len(grant_events):
            return grant_events
        keys = zip(
            grant_events[S.DECISION_ID].to_numpy(dtype=object).tolist(),
            grant_events[S.OFFER_ID].astype(str).to_numpy(dtype=object).tolist(),
            strict=True,
        )
        at = np.fromiter((self._sent_at.get(k, _NO_TIME) for k in keys), np.int64)
        exported = at != _NO_TIME
        if not exported.any():
            return grant_events
        keep = ~(exported & (grant_events[S.EVENT] == "sent").to_numpy())
        out = grant_events.loc[keep].copy()
        ts = out[S.TS].to_numpy(dtype="datetime64[us]").view(np.int64).copy()
        out[S.TS] = np.maximum(ts, at[keep]).view("datetime64[us]")  # _NO_TIME: unchanged
        return out


_NO_TIME = np.iinfo(np.int64).min


def grant_arrays(
    grants: Iterable[PastGrant],
    offers: OfferTable,
    row: int = 0,
    exported: ExportedSends | None = None,
) -> EventArrays:
    """A member's store grants as events: a send at ``granted_at`` on its channel, plus a
    redemption at the same time when it was redeemed (unknown offers are skipped); a grant in
    ``exported`` gives its redemption only (see :class:`ExportedSends`)."""
    index = offers.index_of
    cols, ch, kind = [], [], []
    ts: list[datetime | np.datetime64] = []
    sent_at = exported.sent_at if exported is not None and len(exported) else None
    for g in grants:
        j = index.get(g.offer_id)
        if j is None:
            continue
        c = _CHANNEL_INDEX.get(g.channel, -1)
        at = None if sent_at is None else sent_at(g.decision_id, g.offer_id)
        if at is None:
            cols.append(j)
            ch.append(c)
            ts.append(g.granted_at)
            kind.append(SENT)
            if g.redeemed:
                cols.append(j)
                ch.append(c)
                ts.append(g.granted_at)
                kind.append(REDEEMED)
        elif g.redeemed:  # the send is the snapshot's: keep what the store adds to it
            cols.append(j)
            ch.append(c)
            granted = int(np.datetime64(g.granted_at, "us").astype(np.int64))
            ts.append(np.datetime64(max(granted, at), "us"))
            kind.append(REDEEMED)
    if not cols:
        return EventArrays.empty()
    k = len(cols)
    return EventArrays(
        np.full(k, row, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
        np.asarray(ch, dtype=np.int8),
        np.asarray(ts, dtype="datetime64[us]"),
        np.asarray(kind, dtype=np.int8),
    )


_CHANNEL_INDEX = {c: i for i, c in enumerate(S.CHANNELS)}


def state_from_events(
    events: pd.DataFrame,
    member_ids: np.ndarray,
    offers: OfferTable,
    as_of: pd.Timestamp | str,
    period_days: float = 7.0,
    open_ended_days: float = 14.0,
) -> MemberOfferState:
    """Counters from the canonical ``offer_events`` rows strictly before ``as_of``.

    A send is *active* until ``duration_days`` after it (``open_ended_days`` for offers
    without a duration) unless the member redeemed that offer after the send. Events of
    members or offers not in the inputs are ignored.
    """
    arrays = EventArrays.from_events(events, member_ids, offers)
    return state_from_arrays(arrays, len(member_ids), offers, as_of, period_days, open_ended_days)


def state_from_arrays(
    events: EventArrays,
    n_members: int,
    offers: OfferTable,
    as_of: pd.Timestamp | str | np.datetime64,
    period_days: float = 7.0,
    open_ended_days: float = 14.0,
) -> MemberOfferState:
    """:func:`state_from_events` on :class:`EventArrays` (the one definition of the counters:
    batch sends and the real-time member path both come here)."""
    t = np.datetime64(pd.Timestamp(as_of), "us")
    n, m = n_members, offers.n
    state = MemberOfferState.empty(n, m)
    before = events.ts < t
    rows, cols = events.rows[before], events.cols[before]
    ts, kind, chan = events.ts[before], events.kind[before], events.channel[before]
    sent = kind == SENT
    s_rows, s_cols, s_ts = rows[sent], cols[sent], ts[sent]
    np.add.at(state.received, (s_rows, s_cols), 1)

    # Active: the latest send of each (member, offer) that has not expired or been redeemed.
    age_days = (t - s_ts) / DAY
    dur = np.where(np.isnan(offers.duration_days), open_ended_days, offers.duration_days)[s_cols]
    last_send = np.full((n, m), np.datetime64("NaT", "us"))
    live = age_days < dur
    _max_at(last_send, s_rows[live], s_cols[live], s_ts[live])
    red = kind == REDEEMED
    last_red = np.full((n, m), np.datetime64("NaT", "us"))
    _max_at(last_red, rows[red], cols[red], ts[red])
    has_send = ~np.isnat(last_send)
    redeemed_after = ~np.isnat(last_red) & (last_red >= np.where(has_send, last_send, last_red))
    state.active[:] = has_send & ~redeemed_after

    recent = sent & (chan >= 0) & (((t - ts) / DAY) < period_days)
    np.add.at(state.channel_recent, (rows[recent], chan[recent].astype(np.int64)), 1)

    surprise = offers.surprise[s_cols]
    year = surprise & (age_days < 365)
    np.add.at(state.surprises_year, s_rows[year], 1)
    if surprise.any():
        order = np.lexsort((s_ts[surprise], s_rows[surprise]))
        r, c = s_rows[surprise][order], s_cols[surprise][order]
        last = np.r_[r[1:] != r[:-1], True]  # the latest surprise of each member
        state.last_surprise[r[last]] = c[last]
    return state


_DAY_US = 86_400_000_000


def _state_of_one(
    events: EventArrays,
    offers: OfferTable,
    as_of: pd.Timestamp | np.datetime64,
    period_days: float = 7.0,
    open_ended_days: float = 14.0,
) -> MemberOfferState:
    """:func:`state_from_arrays` for ONE member's few events, in plain Python (the real-time
    path: a member has a handful of events, where numpy's per-call cost dominates). The same
    counters; ``tests/unit/test_engine_state.py`` holds the two equal."""
    t = int(np.datetime64(pd.Timestamp(as_of), "us").astype(np.int64))
    st = MemberOfferState.empty(1, offers.n)
    if not len(events.cols):
        return st
    duration = offers.duration_days
    surprise = offers.surprise
    last_send: dict[int, int] = {}
    last_red: dict[int, int] = {}
    latest_surprise = (None, -1)  # (time, offer): the last in input order among equal times
    received, recent = st.received[0], st.channel_recent[0]
    for c, ch, ts, kind in zip(
        events.cols.tolist(),
        events.channel.tolist(),
        events.ts.astype("datetime64[us]").astype(np.int64).tolist(),
        events.kind.tolist(),
        strict=True,
    ):
        if ts >= t:
            continue
        if kind != SENT:
            if ts > last_red.get(c, -(2**63)):
                last_red[c] = ts
            continue
        received[c] += 1
        age = (t - ts) / _DAY_US
        dur = duration[c]
        live = age < (open_ended_days if dur != dur else dur)  # nan: open-ended
        if live and ts > last_send.get(c, -(2**63)):
            last_send[c] = ts
        if ch >= 0 and age < period_days:
            recent[ch] += 1
        if surprise[c]:
            if age < 365:
                st.surprises_year[0] += 1
            if latest_surprise[0] is None or ts >= latest_surprise[0]:
                latest_surprise = (ts, c)
    for c, ts in last_send.items():
        st.active[0, c] = not (c in last_red and last_red[c] >= ts)
    st.last_surprise[0] = latest_surprise[1]
    return st


class SnapshotHistory:
    """Past sends and redemptions of a member snapshot, grouped by member (built once at load;
    :meth:`state_one` is then a slice and a tiny :func:`state_from_arrays`). ``exported``: the
    snapshot's sends with a decision id, so that store grants already exported into the
    snapshot are not counted twice."""

    def __init__(
        self, events: EventArrays, n_members: int, exported: ExportedSends | None = None
    ) -> None:
        order = np.argsort(events.rows, kind="stable")
        self.events = EventArrays(*(getattr(events, f)[order] for f in _EVENT_FIELDS))
        self.offsets = np.searchsorted(self.events.rows, np.arange(n_members + 1))
        self.exported = exported if exported is not None else ExportedSends()

    @classmethod
    def from_events(
        cls, events: pd.DataFrame | None, member_ids: np.ndarray, offers: OfferTable
    ) -> SnapshotHistory:
        if events is None:
            return cls(EventArrays.empty(), len(member_ids))
        ev, rows, cols = _known_events(events, member_ids, offers)
        # only sends counted here (known members and offers) may stand for a store grant
        return cls(
            EventArrays._from_known(ev, rows, cols), len(member_ids), ExportedSends.from_events(ev)
        )

    def member_events(self, row: int) -> EventArrays:
        """Row ``row``'s events as member 0 (no events for ``row < 0``: an unknown member)."""
        if row < 0 or row >= len(self.offsets) - 1:
            return EventArrays.empty()
        return self.events.take_member(int(self.offsets[row]), int(self.offsets[row + 1]))

    def state_one(
        self,
        row: int,
        offers: OfferTable,
        as_of: pd.Timestamp | np.datetime64,
        grants: Iterable[PastGrant] = (),
        period_days: float = 7.0,
    ) -> MemberOfferState:
        """One member's counters (a 1-row state): the snapshot's events and the store's
        grants, before ``as_of``."""
        events = self.member_events(row).concat(grant_arrays(grants, offers, 0, self.exported))
        return _state_of_one(events, offers, as_of, period_days)

    def state_many(
        self,
        rows: np.ndarray,
        offers: OfferTable,
        as_of: pd.Timestamp | np.datetime64,
        grants: Sequence[Iterable[PastGrant]] | None = None,
        period_days: float = 7.0,
    ) -> MemberOfferState:
        """Counters of the members at snapshot ``rows`` (-1: unknown, no snapshot events),
        with each member's store ``grants`` (aligned with ``rows``), before ``as_of``."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        known = (rows >= 0) & (rows < len(self.offsets) - 1)
        safe = np.where(known, rows, 0)
        if not len(self.offsets) - 1:  # no snapshot members at all
            known[:] = False
            safe = np.zeros(n, dtype=np.int64)
            start = np.zeros(n, dtype=np.int64)
            count = np.zeros(n, dtype=np.int64)
        else:
            start = np.where(known, self.offsets[safe], 0)
            count = np.where(known, self.offsets[safe + 1] - self.offsets[safe], 0)
        total = int(count.sum())
        member = np.repeat(np.arange(n, dtype=np.int64), count)
        first = np.repeat(np.cumsum(count) - count, count)
        idx = np.repeat(start, count) + (np.arange(total) - first)
        e = self.events
        events = EventArrays(member, e.cols[idx], e.channel[idx], e.ts[idx], e.kind[idx])
        if grants is not None:
            for i, member_grants in enumerate(grants):
                events = events.concat(grant_arrays(member_grants, offers, i, self.exported))
        return state_from_arrays(events, n, offers, as_of, period_days)


def _max_at(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, ts: np.ndarray) -> None:
    """out[rows, cols] = max(out, ts), NaT counting as the smallest value."""
    if len(ts) == 0:
        return
    flat = out.reshape(-1).view(np.int64)  # NaT is the smallest int64
    np.maximum.at(flat, rows * out.shape[1] + cols, ts.astype("datetime64[us]").view(np.int64))


def remaining_budgets(
    offers: OfferTable,
    events: pd.DataFrame | None = None,
    since: pd.Timestamp | str | None = None,
) -> np.ndarray:
    """What is left of each offer's budget (nan: no budget), in the budget's unit.

    ``count`` budgets are spent by redemptions, ``money`` budgets by redemptions x cost.
    ``events``: the canonical ``offer_events`` (redemptions at or after ``since`` count).
    """
    left = offers.budget.astype(np.float64).copy()
    if events is None or events.empty:
        return left
    ev = events.loc[(events[S.EVENT] == "redeemed") & events[S.OFFER_ID].notna()]
    if since is not None:
        ev = ev.loc[ev[S.TS] >= pd.Timestamp(since)]
    cols = pd.Index(list(offers.ids)).get_indexer(ev[S.OFFER_ID].astype(str))
    cols = cols[cols >= 0]
    used = np.bincount(cols, minlength=offers.n).astype(np.float64)
    money = np.array([u == "money" for u in offers.budget_unit])
    used = np.where(money, used * offers.cost, used)
    return np.maximum(left - used, 0.0)
