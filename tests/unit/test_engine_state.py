"""Counters from past offer events: caps, active offers, channel frequency, surprises, budgets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalog.model import parse_catalog
from features.sources.schema import CHANNELS
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable
from serving.engine.state import (
    ExportedSends,
    PastGrant,
    SnapshotHistory,
    remaining_budgets,
    state_from_events,
)
from tests.support.engine import AS_OF, catalog, col
from tests.support.engine import OFFERS as FIXTURE_OFFERS

OFFERS = OfferTable.from_catalog(catalog())
IDS = np.array(["a", "b"], dtype=object)


def events(*rows):
    return pd.DataFrame(
        [
            {
                "member_id": m,
                "ts": AS_OF - pd.Timedelta(days=d),
                "event": e,
                "offer_id": o,
                "channel": ch,
            }
            for m, d, e, o, ch in rows
        ]
    )


def test_counts_active_and_channel_recency():
    ev = events(
        ("a", 40, "sent", "welcome", "email"),  # 30-day offer: expired
        ("a", 10, "sent", "pts", "email"),  # open-ended: active 14 days
        ("a", 3, "sent", "disc", "app"),
        ("a", 2, "redeemed", "disc", None),  # redeemed after the send: not active
        ("b", 5, "sent", "welcome", "email"),
        ("b", 20, "sent", "pts", "email"),  # open-ended, older than 14 days
        ("b", -1, "sent", "disc", "email"),  # after as_of: invisible
        ("zz", 1, "sent", "disc", "email"),  # unknown member: ignored
    )
    st = state_from_events(ev, IDS, OFFERS, AS_OF, period_days=7)
    assert st.received[0, col("welcome")] == 1 and st.received[1, col("disc")] == 0
    assert st.active[0].nonzero()[0].tolist() == [col("pts")]
    assert st.active[1].nonzero()[0].tolist() == [col("welcome")]
    email, app = CHANNELS.index("email"), CHANNELS.index("app")
    assert st.channel_recent[:, email].tolist() == [0, 1]
    assert st.channel_recent[:, app].tolist() == [1, 0]


def test_resend_after_redemption_is_active_again():
    ev = events(
        ("a", 6, "sent", "pts", "email"),
        ("a", 5, "redeemed", "pts", None),
        ("a", 2, "sent", "pts", "email"),
    )
    st = state_from_events(ev, IDS, OFFERS, AS_OF)
    assert st.active[0, col("pts")] and st.received[0, col("pts")] == 2


def test_surprises_this_year_and_the_latest_one():
    ev = events(
        ("a", 400, "sent", "bday", "email"),  # more than a year ago
        ("a", 100, "sent", "anniv", "email"),
        ("a", 30, "sent", "bday", "email"),
        ("b", 50, "sent", "any-surprise", "app"),
        ("b", 40, "sent", "pts", "app"),  # not a surprise
    )
    st = state_from_events(ev, IDS, OFFERS, AS_OF)
    assert st.surprises_year.tolist() == [2, 1]
    assert st.last_surprise.tolist() == [col("bday"), col("any-surprise")]


def test_empty_history():
    st = state_from_events(events(("zz", 1, "sent", "pts", "email")), IDS, OFFERS, AS_OF)
    assert st.received.sum() == 0 and st.last_surprise.tolist() == [-1, -1]
    with pytest.raises(EngineInputError, match="offer_id"):
        state_from_events(
            pd.DataFrame({"member_id": [], "ts": [], "event": []}), IDS, OFFERS, AS_OF
        )


def test_remaining_budgets_by_unit():
    ev = events(
        *[("a", 3, "redeemed", "welcome", None)] * 4,  # count budget 10
        *[("b", 3, "redeemed", "winback", None)] * 3,  # money budget 100, cost 10
        ("b", 30, "redeemed", "winback", None),  # before `since`
    )
    left = remaining_budgets(OFFERS, ev, since=AS_OF - pd.Timedelta(days=7))
    assert left[col("welcome")] == 6
    assert left[col("winback")] == pytest.approx(70.0)
    assert np.isnan(left[col("pts")])
    many = events(*[("a", 3, "redeemed", "welcome", None)] * 12)
    assert remaining_budgets(OFFERS, many)[col("welcome")] == 0.0


# ---- one member, many members, store grants: the same counters ------------------------------
def _random_events(seed: int, members: list[str], n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = list(OFFERS.ids)
    return pd.DataFrame(
        {
            "member_id": rng.choice([*members, "unknown"], n),
            "ts": AS_OF - pd.to_timedelta(rng.uniform(-3, 400, n), unit="D"),
            "event": rng.choice(["sent", "sent", "redeemed", "viewed"], n),
            "offer_id": rng.choice(ids, n),
            "channel": rng.choice([*CHANNELS, None], n),
        }
    )


def _assert_same(a, b) -> None:
    for name in ("received", "active", "channel_recent", "last_surprise", "surprises_year"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("seed", range(5))
def test_snapshot_history_one_and_many_equal_the_batch_counters(seed):
    members = [f"m{i}" for i in range(12)]
    ev = _random_events(seed, members)
    ids = np.array(members, dtype=object)
    whole = state_from_events(ev, ids, OFFERS, AS_OF, period_days=7)
    hist = SnapshotHistory.from_events(ev, ids, OFFERS)
    assert whole.received.sum() > 0 and whole.last_surprise.max() >= 0
    for r in range(len(members)):
        _assert_same(hist.state_one(r, OFFERS, AS_OF, period_days=7), whole.take(np.array([r])))
    rows = np.array([3, -1, 0, 11, 3])
    many = hist.state_many(rows, OFFERS, AS_OF, period_days=7)
    _assert_same(many.take(np.array([0, 2, 3, 4])), whole.take(np.array([3, 0, 11, 3])))
    assert many.received[1].sum() == 0  # an unknown member has no snapshot history


def test_store_grants_count_as_sends_and_redemptions():
    t = AS_OF.to_pydatetime()
    grants = [
        PastGrant("welcome", "checkout", t - pd.Timedelta(days=2), False),
        PastGrant("pts", "checkout", t - pd.Timedelta(days=1), False, redeemed=True),
        PastGrant("bday", "checkout", t - pd.Timedelta(days=3), True),
        PastGrant("no-such-offer", "checkout", t, False),
    ]
    as_events = events(
        ("a", 2, "sent", "welcome", "checkout"),
        ("a", 1, "sent", "pts", "checkout"),
        ("a", 1, "redeemed", "pts", "checkout"),
        ("a", 3, "sent", "bday", "checkout"),
    )
    want = state_from_events(as_events, IDS[:1], OFFERS, AS_OF, period_days=7)
    empty = SnapshotHistory.from_events(None, np.zeros(0, dtype=object), OFFERS)
    got = empty.state_one(-1, OFFERS, AS_OF, grants, period_days=7)
    _assert_same(got, want)
    assert got.received[0, col("welcome")] == 1 and got.active[0, col("welcome")]
    assert not got.active[0, col("pts")]  # redeemed
    assert got.last_surprise[0] == col("bday") and got.surprises_year[0] == 1
    assert got.channel_recent[0, CHANNELS.index("checkout")] == 3
    many = empty.state_many(np.array([-1, 5]), OFFERS, AS_OF, [grants, []], period_days=7)
    _assert_same(many.take(np.array([0])), want)
    assert many.received[1].sum() == 0


@pytest.mark.parametrize("seed", range(20))
def test_one_member_fast_path_equals_the_vectorised_counters(seed):
    """``_state_of_one`` (plain Python, the real-time path) equals ``state_from_arrays`` on one
    member's events: ties in time, redemptions, unknown channels, surprises, future events."""
    from serving.engine.state import EventArrays, _state_of_one, state_from_arrays

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 30))
    days = rng.choice([0.5, 1.0, 3.0, 6.9, 7.0, 13.99, 14.0, 30.0, 200.0, 400.0, -1.0], n)
    events = EventArrays(
        np.zeros(n, dtype=np.int64),
        rng.integers(0, OFFERS.n, n).astype(np.int64),
        rng.integers(-1, len(CHANNELS), n).astype(np.int8),
        (np.datetime64(AS_OF, "us") - (days * 86_400_000_000).astype("timedelta64[us]")),
        rng.choice(np.array([0, 0, 1], dtype=np.int8), n),
    )
    _assert_same(
        _state_of_one(events, OFFERS, AS_OF, period_days=7),
        state_from_arrays(events, 1, OFFERS, AS_OF, period_days=7),
    )


# -- store grants already exported into the snapshot (offers export) ---------------------------

CAPPED = OfferTable.from_catalog(
    parse_catalog(
        {
            "program": "Test",
            "offers": [
                *FIXTURE_OFFERS,
                {"offer_id": "cap2", "name": "Twice at most", "kind": "credit",
                 "reward_value": 2, "cost": 1, "per_member_cap": 2, "duration_days": 1},
            ],
        },
        "test",
    )
)  # fmt: skip
CAP2 = CAPPED.index_of["cap2"]
CHECKOUT = CHANNELS.index("checkout")
MS = pd.Timedelta(milliseconds=3)  # the decision record is written just after the grant


def _exported(member, decision, offer, days, ts_shift=MS):
    """The ``sent`` event ``offers export`` writes for a checkout grant (decision's time)."""
    return {
        "member_id": member,
        "ts": _at(days) + ts_shift,
        "event": "sent",
        "offer_id": offer,
        "channel": "checkout",
        "decision_id": decision,
    }


def _grant(offer, days, decision, *, surprise=False, redeemed=False):
    return PastGrant(offer, "checkout", _at(days).to_pydatetime(), surprise, redeemed, decision)


def _at(days: float) -> pd.Timestamp:
    return (AS_OF - pd.Timedelta(days=days)).floor("us")


def _capped(st) -> bool:
    """The engine's per-member cap rule (eligibility.py) for cap2."""
    return not (st.received < CAPPED.per_member_cap[None, :])[0, CAP2]


def _batch_state(snapshot: pd.DataFrame, grants, member="a") -> object:
    """``offers score``'s history: the snapshot plus the store's grants as events, the rule
    applied by :meth:`ExportedSends.drop_from_events` (serving/batch/history.py)."""
    rows = []
    for g in grants:
        base = {"member_id": member, "ts": pd.Timestamp(g.granted_at), "offer_id": g.offer_id,
                "channel": g.channel, "decision_id": g.decision_id}  # fmt: skip
        rows.append({**base, "event": "sent"})
        if g.redeemed:
            rows.append({**base, "event": "redeemed"})
    extra = pd.DataFrame(rows).astype({"ts": "datetime64[us]"})
    extra = ExportedSends.from_events(snapshot).drop_from_events(extra)
    both = pd.concat([snapshot.astype({"ts": "datetime64[us]"}), extra], ignore_index=True)
    return state_from_events(both, IDS, CAPPED, AS_OF, period_days=7)


def test_an_exported_grant_counts_once_and_the_cap_is_reached_at_the_cap():
    snapshot = pd.DataFrame(
        [
            _exported("a", "d1", "cap2", 2),
            _exported("a", "d1", "bday", 2),
            _exported("b", None, "cap2", 3),  # a send without a decision id: counted as ever
        ]
    )
    hist = SnapshotHistory.from_events(snapshot, IDS, CAPPED)
    assert len(hist.exported) == 2
    first = [_grant("cap2", 2, "d1"), _grant("bday", 2, "d1", surprise=True)]
    st = hist.state_one(0, CAPPED, AS_OF, first, period_days=7)
    assert st.received[0, CAP2] == 1 and not _capped(st)  # once, not twice: one more allowed
    assert st.channel_recent[0, CHECKOUT] == 2 and st.surprises_year[0] == 1
    assert st.last_surprise[0] == CAPPED.index_of["bday"]
    # the second grant, not exported yet, reaches the cap of 2
    second = [*first, _grant("cap2", 1, "d2")]
    st2 = hist.state_one(0, CAPPED, AS_OF, second, period_days=7)
    assert st2.received[0, CAP2] == 2 and _capped(st2)
    assert st2.channel_recent[0, CHECKOUT] == 3
    # a grant without a decision id (or of another decision) is never taken for the snapshot's
    unmatched = [g._replace(decision_id=None) for g in first]
    st3 = hist.state_one(0, CAPPED, AS_OF, unmatched, period_days=7)
    assert st3.received[0, CAP2] == 2 and st3.surprises_year[0] == 2
    # another member's grant of the same offer with the same decision id is not this send
    other = hist.state_one(1, CAPPED, AS_OF, [_grant("cap2", 1, "d9")], period_days=7)
    assert other.received[0, CAP2] == 2
    # every path gives the same counters: many members (API batch), offers score (batch)
    many = hist.state_many(np.array([0, 1]), CAPPED, AS_OF, [second, []], period_days=7)
    _assert_same(many.take(np.array([0])), st2)
    _assert_same(_batch_state(snapshot, second).take(np.array([0])), st2)


def test_a_redemption_after_the_export_still_closes_the_exported_send():
    """The snapshot holds the send (at the decision's time, just after the grant) but not the
    redemption; the store's grant is redeemed: not active, received once."""
    snapshot = pd.DataFrame([_exported("a", "d1", "pts", 2)])
    hist = SnapshotHistory.from_events(snapshot, IDS, CAPPED)
    grants = [_grant("pts", 2, "d1", redeemed=True)]
    st = hist.state_one(0, CAPPED, AS_OF, grants, period_days=7)
    pts = CAPPED.index_of["pts"]
    assert st.received[0, pts] == 1 and not st.active[0, pts]
    _assert_same(_batch_state(snapshot, grants).take(np.array([0])), st)
    _assert_same(hist.state_many(np.array([0]), CAPPED, AS_OF, [grants], period_days=7), st)
    # not redeemed: the exported send is active (the open-ended offer's 14 days)
    st = hist.state_one(0, CAPPED, AS_OF, [grants[0]._replace(redeemed=False)], period_days=7)
    assert st.received[0, pts] == 1 and st.active[0, pts]


@pytest.mark.parametrize("seed", range(5))
def test_exported_history_equals_the_history_before_the_export(seed):
    """Random grants of random members, some exported into the snapshot: each path's counters
    equal those of the snapshot without the exported events plus all the grants."""
    rng = np.random.default_rng(seed)
    members = [f"m{i}" for i in range(8)]
    ids = np.array(members, dtype=object)
    base = _random_events(seed, members)
    grants: list[list[PastGrant]] = [[] for _ in members]
    exported = []
    for k in range(40):
        i = int(rng.integers(0, len(members)))
        offer = CAPPED.ids[int(rng.integers(0, CAPPED.n))]
        # distinct times, none within the export's few ms of a window's edge
        days = float(rng.choice([0.2, 1.0, 5.0, 20.0, 400.0, -1.0])) + (k + 1) * 1e-3
        g = _grant(offer, days, f"d{k}", surprise=bool(CAPPED.surprise[CAPPED.index_of[offer]]),
                   redeemed=bool(rng.random() < 0.3))  # fmt: skip
        grants[i].append(g)
        if rng.random() < 0.5:
            exported.append(_exported(members[i], f"d{k}", offer, days))
    want = SnapshotHistory.from_events(base, ids, CAPPED)
    snap = pd.concat([base, pd.DataFrame(exported)], ignore_index=True)
    got = SnapshotHistory.from_events(snap, ids, CAPPED)
    rows = np.arange(len(members))
    before = want.state_many(rows, CAPPED, AS_OF, grants, period_days=7)
    after = got.state_many(rows, CAPPED, AS_OF, grants, period_days=7)
    _assert_same(after, before)
    assert after.received.sum() > 0
    for r in rows:
        one = got.state_one(int(r), CAPPED, AS_OF, grants[r], period_days=7)
        _assert_same(one, after.take(np.array([r])))


def test_exported_sends_hold_only_sends_with_a_decision_id_and_the_latest_of_a_repeat():
    rows = [
        _exported("a", "d1", "cap2", 3),
        _exported("a", "d1", "cap2", 1),  # the same send twice (hand-merged tables): latest
        {**_exported("a", "d2", "cap2", 2), "event": "redeemed"},
        _exported("a", None, "pts", 2),
    ]
    sends = ExportedSends.from_events(pd.DataFrame(rows))
    assert len(sends) == 1
    assert sends.sent_at("d1", "cap2") == (_at(1) + MS).value // 1000
    assert sends.sent_at("d2", "cap2") is None and sends.sent_at(None, "pts") is None
    no_ids = pd.DataFrame([_exported("a", None, "pts", 2)])
    assert len(ExportedSends.from_events(no_ids)) == 0
    assert len(ExportedSends.from_events(no_ids.drop(columns="decision_id"))) == 0
