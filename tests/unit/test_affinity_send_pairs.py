"""The calibration pairs of an affinity window: every send the data observes whole, labelled
redeemed or not over the offer's redeemable period. Known answers on hand-made events."""

from __future__ import annotations

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

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


def test_the_setting_chooses_the_pairs_of_a_task(monkeypatch):
    from tests.unit.test_affinity_scale import AS_OF, _task
    from training.affinity.evaluate import EvalSettings, build_task

    tables, segments = _task()
    monkeypatch.setattr("training.affinity.evaluate.member_segments", segments)
    end = AS_OF + pd.Timedelta(days=40)

    def pairs(kind):
        task = build_task(tables, AS_OF, end, EvalSettings(calibration_pairs=kind), None)
        ids = task.train.member_ids
        return {
            (ids[r], task.train.item_ids[i], int(y))
            for r, i, y in zip(task.pair_rows, task.pair_items, task.pair_labels, strict=True)
        }

    held, sends = pairs("held"), pairs("sends")
    events = tables["offer_events"]
    sent = events[(events.event == "sent") & (events.ts >= AS_OF)]
    # o1-o3 were sent inside the window: one pair per known member and offer, both ways
    assert 0 < len(sends) == len(held) <= len(sent)
    # redemptions on day 2 follow the sends of day 1: the same labels here
    assert sends == held
    # a window of 10 days: the sends of day 1 are redeemable until day 31, which the data
    # observes (its last event is on day 35); redemptions on day 20 are after the window
    end = AS_OF + pd.Timedelta(days=10)
    late = tables | {
        "offer_events": pd.concat(
            [events, sent.assign(event="redeemed", ts=AS_OF + pd.Timedelta(days=20))],
            ignore_index=True,
        )
    }
    task = build_task(late, AS_OF, end, EvalSettings(calibration_pairs="sends"), None)
    assert len(task.pair_labels) == len(sends) and task.pair_labels.all()
    task = build_task(late, AS_OF, end, EvalSettings(calibration_pairs="held"), None)
    assert 0 < task.pair_labels.sum() < len(task.pair_labels)  # only those redeemed on day 2


@pytest.mark.parametrize("args", [["train", "affinity"], ["evaluate", "affinity"]])
def test_cli_names_a_bad_value_and_passes_a_good_one(args, tmp_path, monkeypatch):
    import training.affinity.evaluate as evaluate
    from offers import cmd_affinity

    def app() -> typer.Typer:
        a = typer.Typer()
        a.callback()(lambda: None)
        cmd_affinity.register(a)
        return a

    res = CliRunner().invoke(app(), [*args, "--data", str(tmp_path), "--calibration-pairs", "x"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.replace("│", " ").split())
    assert "Invalid value for '--calibration-pairs'" in text, text
    seen: list[object] = []

    def spy(**kw: object) -> None:
        seen.append(kw["calibration_pairs"])
        raise typer.Exit(code=7)  # stop after the settings

    monkeypatch.setattr(evaluate, "EvalSettings", spy)
    res = CliRunner().invoke(
        app(), [*args, "--data", str(tmp_path), "--calibration-pairs", "sends"]
    )
    assert res.exit_code == 7, res.output
    assert seen == ["sends"] and type(seen[0]) is str
