"""Counters from past offer events: caps, active offers, channel frequency, surprises, budgets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.schema import CHANNELS
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable
from serving.engine.state import remaining_budgets, state_from_events
from tests.unit.test_engine_fixtures import AS_OF, catalog, col

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
