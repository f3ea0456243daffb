"""The calibration pairs of an affinity window: every send the data observes whole, labelled
redeemed or not over the offer's redeemable period. Known answers on hand-made events."""

from __future__ import annotations

import pandas as pd

from training.affinity.evaluate import _observed_until, _send_pairs

START = pd.Timestamp("2026-05-01")
END = pd.Timestamp("2026-05-31")
UNTIL = pd.Timestamp("2026-07-01")  # the data's end


def _day(d: float) -> pd.Timestamp:
    return START + pd.Timedelta(days=d)


def _tables(rows: list[tuple[str, str, str, pd.Timestamp]]) -> dict[str, pd.DataFrame]:
    events = pd.DataFrame(rows, columns=["member_id", "offer_id", "event", "ts"])
    offers = pd.DataFrame(
        {
            "offer_id": ["ten", "long", "dated", "open"],
            "duration_days": [10.0, 60.0, None, None],
            "valid_to": [None, None, pd.Timestamp("2026-06-10"), None],
        }
    )
    return {"offer_events": events, "offers": offers}


def _pairs(rows, until=UNTIL) -> dict[tuple[str, str], int]:
    out = _send_pairs(_tables(rows), START, END, until)
    return {(m, i.split(":", 1)[1]): int(lab) for m, i, lab in out.itertuples(index=False)}


def test_a_send_is_labelled_over_its_own_redeemable_period():
    got = _pairs(
        [
            ("a", "ten", "sent", _day(25)),  # held until day 35: past the window's end
            ("a", "ten", "redeemed", _day(33)),  # after the window, within the hold: counts
            ("b", "ten", "sent", _day(2)),
            ("b", "ten", "redeemed", _day(13)),  # after the hold ended (day 12): does not
            ("c", "ten", "redeemed", _day(1)),  # before its send: an earlier send's
            ("c", "ten", "sent", _day(3)),
            ("d", "dated", "sent", _day(5)),  # redeemable until valid_to (2026-06-10)
            ("d", "dated", "redeemed", pd.Timestamp("2026-06-09")),
            ("e", "open", "sent", _day(5)),  # no known end: redemptions before the window end
            ("e", "open", "redeemed", _day(29)),
            ("f", "open", "sent", _day(5)),
            ("f", "open", "redeemed", _day(31)),  # after the window's end: not counted
        ]
    )
    assert got == {
        ("a", "ten"): 1,
        ("b", "ten"): 0,
        ("c", "ten"): 0,
        ("d", "dated"): 1,
        ("e", "open"): 1,
        ("f", "open"): 0,
    }


def test_sends_the_data_does_not_observe_whole_are_left_out():
    got = _pairs(
        [
            ("a", "ten", "sent", _day(-5)),  # straddles the window's start
            ("a", "ten", "redeemed", _day(-1)),
            ("b", "long", "sent", _day(10)),  # held until day 70: after the data's end
            ("c", "ten", "sent", _day(30)),  # sent after the window
            ("d", "ten", "sent", _day(29)),  # held until day 39, the data ends on day 39.5
        ],
        until=_day(39.5),
    )
    assert got == {("d", "ten"): 0}
    assert _pairs([("b", "long", "sent", _day(10))], until=_day(80)) == {("b", "long"): 0}


def test_a_member_sent_an_offer_twice_is_one_pair_from_the_first_send():
    got = _pairs(
        [
            ("a", "ten", "sent", _day(1)),
            ("a", "ten", "sent", _day(8)),
            ("a", "ten", "redeemed", _day(10)),  # within the first send's hold (day 11)
            ("b", "ten", "sent", _day(1)),
            ("b", "ten", "sent", _day(8)),
            ("b", "ten", "redeemed", _day(15)),  # only within the second's: not counted
        ]
    )
    assert got == {("a", "ten"): 1, ("b", "ten"): 0}


def test_the_data_ends_at_its_latest_event_or_purchase():
    tables = _tables([("a", "ten", "sent", _day(1)), ("a", "ten", "viewed", _day(4))])
    assert _observed_until(tables) == _day(4)
    tx = pd.DataFrame({"member_id": ["a"], "ts": [_day(9)], "amount": [3.0]})
    assert _observed_until({**tables, "transactions": tx}) == _day(9)
