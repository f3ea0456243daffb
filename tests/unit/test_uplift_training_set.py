"""Uplift training sets: known answers on a tiny hand-made program, leakage, errors, encoding.

The program (S1 = 2024-05-01 10:00, campaign c1; S2 = 2024-06-10 10:00, campaign c2):

* e1: m1 sent o1 (discount_pct) at S1, propensity 0.4
* e2: m2 sent o2 (bogo) at S1 + 30 min, propensity 0.4
* e3: m4 held out at S1 (control), propensity 0.2
* e4: m3 sent o1 at S1, but m3 joined after S1: dropped
* e5: m1 viewed o1 at S1 + 1 day: not an arm
* e6: m1 sent o2 at S2, no propensity logged
* e7: m2 held out at S2
* e8: m4 sent o1 at 2024-06-25: its 14-day window ends after the data end (2024-07-01): dropped

m1's purchases: 50 on 2024-04-01, 100 exactly at S1 (neither visible at S1 nor in the window
(S1, S1 + 14 d]), 10 + 5 (one basket) at S1 + 1 d, 7 at S1 + 14 d (last instant of the window),
1000 at S1 + 14 d + 1 s (after it). m4 buys 20 at S1 + 2 d; m2 buys 30 on 2024-07-01.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.pipeline import tables_from_frames
from features.sources.io import to_canonical_frame
from models.uplift.base import NotFittedError, UpliftInputError
from models.uplift.encoding import FeatureEncoder, quantise
from training.uplift.data import (
    TrainingSetConfig,
    UpliftDataError,
    build_training_set,
    time_split,
)

T = pd.Timestamp
S1 = T("2024-05-01 10:00")
S2 = T("2024-06-10 10:00")
DAY = pd.Timedelta(days=1)


def _frames(events: list[tuple] | None = None) -> dict[str, pd.DataFrame]:
    members = pd.DataFrame(
        {
            "member_id": ["m1", "m2", "m3", "m4"],
            "joined_at": [T("2024-01-01"), T("2024-01-01"), T("2024-06-01"), T("2023-01-01")],
            "gender": ["F", "M", None, "F"],
            "region": ["north", "south", "north", None],
        }
    )
    offers = pd.DataFrame(
        {
            "offer_id": ["o1", "o2"],
            "name": ["ten off", "bogo"],
            "kind": ["discount_pct", "bogo"],
            "reward_value": [10.0, 5.0],
            "cost": [3.0, 2.0],
        }
    )
    lines = [
        ("t0", "m1", T("2024-04-01 12:00"), 50.0),
        ("t1", "m1", S1, 100.0),
        ("t2", "m1", S1 + DAY, 10.0),
        ("t2", "m1", S1 + DAY, 5.0),
        ("t3", "m1", S1 + 14 * DAY, 7.0),
        ("t4", "m1", S1 + 14 * DAY + pd.Timedelta(seconds=1), 1000.0),
        ("t5", "m4", S1 + 2 * DAY, 20.0),
        ("t6", "m2", T("2024-07-01 00:00"), 30.0),
    ]
    transactions = pd.DataFrame(lines, columns=["transaction_id", "member_id", "ts", "amount"])
    if events is None:
        events = [
            ("e1", "m1", S1, "sent", "o1", "c1", 0.4),
            ("e2", "m2", S1 + pd.Timedelta(minutes=30), "sent", "o2", "c1", 0.4),
            ("e3", "m4", S1, "held_out", None, "c1", 0.2),
            ("e4", "m3", S1, "sent", "o1", "c1", 0.4),
            ("e5", "m1", S1 + DAY, "viewed", "o1", "c1", None),
            ("e6", "m1", S2, "sent", "o2", "c2", None),
            ("e7", "m2", S2, "held_out", None, "c2", 0.2),
            ("e8", "m4", T("2024-06-25 10:00"), "sent", "o1", "c3", 0.5),
        ]
    cols = ["event_id", "member_id", "ts", "event", "offer_id", "campaign_id", "propensity"]
    offer_events = pd.DataFrame(events, columns=cols)
    return {
        "members": to_canonical_frame(members, "members"),
        "offers": to_canonical_frame(offers, "offers"),
        "transactions": to_canonical_frame(transactions, "transactions"),
        "offer_events": to_canonical_frame(offer_events, "offer_events"),
    }


def _build(config: TrainingSetConfig | None = None, events: list[tuple] | None = None):
    return build_training_set(tables_from_frames(_frames(events)), config)


@pytest.fixture(scope="module")
def data():
    return _build()


def test_one_row_per_send_and_control_member(data) -> None:
    f = data.frame.set_index("event_id")
    assert sorted(f.index) == ["e1", "e2", "e3", "e6", "e7"]
    assert data.dropped == {"window_after_data_end": 1, "member_not_joined": 1}
    assert data.data_end == T("2024-07-01 00:00")
    assert f.loc["e2", "ts"] == S1 + pd.Timedelta(minutes=30)  # each row at its own time


def test_outcomes_in_the_window_after_the_send(data) -> None:
    f = data.frame.set_index("event_id")
    # m1 at S1: the basket at S1 itself is not in (S1, S1 + 14 d]; 10 + 5 and 7 are; 1000 is after
    assert f.loc["e1", "conversion"] == 1
    assert f.loc["e1", "spend"] == pytest.approx(22.0)
    assert f.loc["e2", ["conversion", "spend"]].tolist() == [0, 0.0]  # m2: nothing in window
    assert f.loc["e3", ["conversion", "spend"]].tolist() == [1, 20.0]  # control member buys
    assert f.loc["e6", ["conversion", "spend"]].tolist() == [0, 0.0]
    assert f.loc["e7", ["conversion", "spend"]].tolist() == [0, 0.0]  # 2024-07-01 > S2 + 14 d


def test_window_is_configurable() -> None:
    f = _build(TrainingSetConfig(window_days=1.0)).frame.set_index("event_id")
    assert f.loc["e1", "spend"] == pytest.approx(15.0)  # S1 + 1 day is the window's last instant
    assert f.loc["e3", "conversion"] == 0  # m4 buys on day 2
    # a 30-day window also drops e6/e7 (S2 + 30 d is after the data end)
    assert sorted(_build(TrainingSetConfig(window_days=30)).frame["event_id"]) == [
        "e1",
        "e2",
        "e3",
    ]


def test_level_window_spend_is_known_only_where_its_window_is_over(data) -> None:
    assert "spend_level" not in data.frame.columns  # only when asked for
    built = _build(TrainingSetConfig(level_window_days=30.0))
    f = built.frame.set_index("event_id")
    # the rows are those of the 14-day outcome; the level outcome adds the later baskets
    assert sorted(f.index) == ["e1", "e2", "e3", "e6", "e7"]
    assert f.loc["e1", "spend"] == pytest.approx(22.0)
    assert f.loc["e1", "spend_level"] == pytest.approx(1022.0)  # 1000 at S1 + 14 d + 1 s
    assert f.loc["e2", "spend_level"] == pytest.approx(0.0)
    assert f.loc["e3", "spend_level"] == pytest.approx(20.0)
    # S2 + 30 d is after the data end (2024-07-01): not known yet, not zero
    assert f.loc[["e6", "e7"], "spend_level"].isna().all()
    with pytest.raises(UpliftDataError, match=r"level_window_days must be >= window_days \(14"):
        TrainingSetConfig(level_window_days=7.0)


def test_treatment_labels_and_logged_propensity(data) -> None:
    f = data.frame.set_index("event_id")
    assert f["treatment"].to_dict() == {
        "e1": "discount_pct",
        "e2": "bogo",
        "e3": "control",
        "e6": "bogo",
        "e7": "control",
    }
    assert data.treatments == ("bogo", "discount_pct")
    assert f.loc["e1", "propensity"] == 0.4 and f.loc["e3", "propensity"] == 0.2
    assert np.isnan(f.loc["e6", "propensity"])
    by_offer = _build(TrainingSetConfig(treatment="offer", control_label="none"))
    g = by_offer.frame.set_index("event_id")["treatment"]
    assert g.to_dict() == {"e1": "o1", "e2": "o2", "e3": "none", "e6": "o2", "e7": "none"}


def test_features_see_only_what_happened_before_the_send(data) -> None:
    f = data.frame.set_index("event_id")
    # at S1 m1 has bought once (50; the basket at S1 itself is not visible), no offer yet
    assert f.loc["e1", "n_purchases_total"] == 1
    assert f.loc["e1", "spend_total"] == pytest.approx(50.0)
    assert f.loc["e1", "offers_received"] == 0
    # at S2 m1 has every purchase above and the S1 send (and its view)
    assert f.loc["e6", "n_purchases_total"] == 5
    assert f.loc["e6", "spend_total"] == pytest.approx(1172.0)
    assert f.loc["e6", "offers_received"] == 1
    assert f.loc["e6", "offers_viewed"] == 1
    assert "conversion" not in data.feature_columns and "treatment" not in data.feature_columns
    assert {"member_id", "ts", "event_id"}.isdisjoint(data.feature_columns)


def test_rows_at_or_after_the_send_change_no_feature() -> None:
    frames = _frames()
    extra = pd.DataFrame(
        {
            "transaction_id": ["x1", "x2"],
            "member_id": ["m1", "m1"],
            "ts": [S1, S1 + pd.Timedelta(hours=1)],
            "amount": [9999.0, 5555.0],
        }
    )
    frames["transactions"] = to_canonical_frame(
        pd.concat([frames["transactions"], extra], ignore_index=True), "transactions"
    )
    changed = build_training_set(tables_from_frames(frames)).frame.set_index("event_id")
    base = _build().frame.set_index("event_id")
    cols = list(_build().feature_columns)
    pd.testing.assert_series_equal(changed.loc["e1", cols], base.loc["e1", cols])
    assert changed.loc["e1", "spend"] == pytest.approx(22.0 + 5555.0)  # the outcome does change


def test_time_split_holds_out_the_latest_campaigns(data) -> None:
    train, test, start = time_split(data, test_share=0.3)
    events = data.frame["event_id"].to_numpy()
    assert sorted(events[test]) == ["e6", "e7"]
    assert sorted(events[train]) == ["e1", "e2", "e3"]
    assert start == S2
    # outcome windows that run past the test start are not trained on: e2 (sent 30 min after
    # e1) ends after S1 + 14 d
    train, test, _ = time_split(data, split_at=S1 + 14 * DAY)
    assert sorted(events[test]) == ["e6", "e7"]
    assert sorted(events[train]) == ["e1", "e3"]


def test_time_split_errors(data) -> None:
    with pytest.raises(UpliftDataError, match="test_share"):
        time_split(data, test_share=1.5)
    with pytest.raises(UpliftDataError, match="need both"):
        time_split(data, split_at=S1 + 10 * DAY)


def test_errors_name_the_problem() -> None:
    base = [("e3", "m4", S1, "held_out", None, "c1", 0.2)]
    with pytest.raises(UpliftDataError, match=r"without offer_id, e.g. \['e1'\]"):
        _build(events=[*base, ("e1", "m1", S1, "sent", None, "c1", 0.4)])
    with pytest.raises(UpliftDataError, match="not in the offers table"):
        _build(events=[*base, ("e1", "m1", S1, "sent", "o9", "c1", 0.4)])
    with pytest.raises(UpliftDataError, match="control_label 'bogo'"):
        _build(TrainingSetConfig(control_label="bogo"))
    with pytest.raises(UpliftDataError, match="no 'sent' or 'held_out'"):
        _build(events=[("e5", "m1", S1, "viewed", "o1", "c1", None)])
    with pytest.raises(UpliftDataError, match="window_days"):
        TrainingSetConfig(window_days=0)
    with pytest.raises(UpliftDataError, match="treatment must be"):
        TrainingSetConfig(treatment="category")  # type: ignore[arg-type]


def test_encoder_is_stable_between_training_and_serving(data) -> None:
    enc = FeatureEncoder().fit(data.features)
    assert enc.categorical_columns and "gender" in enc.categorical_columns
    assert enc.levels_["gender"] == ["F", "M"]
    X = enc.transform(data.features)
    # 16 significant bits: exact in float32 (what ONNX computes with), within 1e-5 of the value
    assert np.array_equal(X, X.astype(np.float32).astype(np.float64), equal_nan=True)
    spend = X[:, enc.feature_names_out_.index("spend_total")]
    np.testing.assert_allclose(spend, data.features["spend_total"], rtol=1e-5)
    assert quantise(np.array([1.0 + 2**-20, 3.0, 0.0, np.nan]))[:3].tolist() == [1.0, 3.0, 0.0]
    assert X.shape == (len(data.frame), len(enc.feature_names_out_))
    # a served row: unseen level and null give zeros; columns in any order
    served = data.features.iloc[[0, 1]].copy()
    served["gender"] = ["X", None]
    served = served[served.columns[::-1]]
    again = FeatureEncoder.from_dict(enc.to_dict())
    out = again.transform(served)
    g = [i for i, n in enumerate(again.feature_names_out_) if n.startswith("gender=")]
    assert (out[:, g] == 0).all()
    keep = [i for i, n in enumerate(enc.feature_names_out_) if not n.startswith("gender=")]
    np.testing.assert_array_equal(out[:, keep], X[:2][:, keep])


def test_encoder_errors(data) -> None:
    enc = FeatureEncoder().fit(data.features)
    with pytest.raises(UpliftInputError, match=r"missing feature column\(s\) \['spend_total'\]"):
        enc.transform(data.features.drop(columns=["spend_total"]))
    bad = data.features.assign(spend_total="lots")
    with pytest.raises(UpliftInputError, match="'spend_total' was numeric"):
        enc.transform(bad)
    with pytest.raises(NotFittedError):
        FeatureEncoder().transform(data.features)
    with pytest.raises(UpliftInputError, match="unsupported format"):
        FeatureEncoder.from_dict({"format": 99})


def test_features_fetch_and_attach_equal_ibis_to_pandas_and_a_merge(tmp_path) -> None:
    """The lean fetch has the dtypes and values of ``to_pandas`` (nulls in float, bool and
    string columns included), and attaching features equals the inner merge sorted by time."""
    from features.pipeline import features_at, resolve_categories
    from features.pipeline.config import FeatureConfig
    from training.uplift.data import _attach, _to_pandas, open_tables

    for name, df in _frames().items():
        df.to_parquet(tmp_path / f"{name}.parquet")
    tables = open_tables(tmp_path, memory_limit="256MB")
    pairs = pd.DataFrame(
        {"member_id": ["m1", "m2", "m4", "m1", "m3"], "ts": [S1, S1, S1, S2, S1 + DAY]}
    )
    expr = features_at(tables, pairs, resolve_categories(tables, FeatureConfig()), time_col="ts")
    lean, ibis_df = _to_pandas(expr), expr.to_pandas()
    assert lean.isna().to_numpy().any()  # the comparison covers nulls
    pd.testing.assert_frame_equal(lean, ibis_df)
    arms = pd.DataFrame(
        {
            "event_id": ["e3", "e1", "e2", "e9"],
            "member_id": ["m1", "m2", "m4", "zz"],
            "ts": [S2, S1, S1, S1],
        }
    )
    lean["ts"] = lean["ts"].astype("datetime64[us]")
    arms["ts"] = arms["ts"].astype("datetime64[us]")
    merged = arms.merge(lean, on=["member_id", "ts"], how="inner", validate="many_to_one")
    merged = merged.sort_values(["ts", "event_id"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(_attach(arms, lean), merged)
    assert len(merged) == 3  # the unknown member's arm is left out


def test_auto_treatment_grain_follows_the_sends_per_offer():
    """``auto`` is per offer only when the median offer has enough logged sends."""
    from training.uplift.fit import UpliftTrainSettings, resolve_treatment

    auto = UpliftTrainSettings(min_offer_rows=100)
    assert resolve_treatment(auto, [150, 120, 90, 0]).treatment == "offer"  # median 120
    assert resolve_treatment(auto, [150, 60, 50]).treatment == "kind"  # median 60
    assert resolve_treatment(auto, []).treatment == "kind"
    fixed = UpliftTrainSettings(treatment="kind")
    assert resolve_treatment(fixed, [10**6]).treatment == "kind"
    with pytest.raises(ValueError, match="resolved"):
        auto.training_set_config()
