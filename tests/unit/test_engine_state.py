"""Counters from past offer events: caps, active offers, channel frequency, surprises, budgets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.sources.schema import CHANNELS
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable
from serving.engine.state import (
    PastGrant,
    SnapshotHistory,
    remaining_budgets,
    state_from_events,
)
from tests.support.engine import AS_OF, catalog, col

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
