"""The one adapter from the served models' outputs to engine inputs (known answers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.engine.adapters import affinity_matrix, model_inputs, predict_frame, uplift_matrix
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable
from tests.support.engine import catalog, col

OFFERS = OfferTable.from_catalog(catalog())


class Affinity:
    """A pyfunc-shaped model: p_redeem 0.2 (0.7 for a/pts), per-member fallback names, a NaN
    p_redeem (no calibrator) with score 0 for member 'raw', an unknown offer for 'disc'."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.seen: pd.DataFrame | None = None

    def predict(self, pairs: pd.DataFrame) -> pd.DataFrame:
        self.seen = pairs
        member, offer = pairs["member_id"], pairs["offer_id"]
        p = np.where((member == "a") & (offer == "pts"), 0.7, 0.2)
        p = np.where(member == "raw", np.nan, p)
        score = np.where(offer == "disc", np.nan, 0.0)
        fallback = member.map(self.names).astype(object).fillna("personalised").to_numpy()
        return pd.DataFrame({"p_redeem": p, "score": score, "fallback": fallback})


class Uplift:
    """Effects by kind for 'credit' and by offer for 'pts'; counts predict calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, object]] = []

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls.append((len(frame), None))
        n = len(frame)
        return pd.DataFrame(
            {
                "spend:pts": np.arange(n, dtype=float),
                "spend:credit": np.full(n, 2.0),
                "visits:pts": np.full(n, 9.0),
            }
        )


def members(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"member_id": list(ids), "segment": ["s1"] * len(ids)})


def test_affinity_matrix_rules():
    model = Affinity({"b": "segment_popular", "c": "global_popular"})
    p, names = affinity_matrix(model, members("a", "b", "c", "raw"), OFFERS)
    assert p.shape == (4, OFFERS.n)
    assert p[0, col("pts")] == pytest.approx(0.7) and p[0, col("welcome")] == pytest.approx(0.2)
    # no calibrator: the logistic of the score (0 -> 0.5); an unknown offer (NaN score): 0
    assert p[3, col("pts")] == pytest.approx(0.5) and p[3, col("disc")] == 0.0
    assert names.tolist() == ["personalised", "segment_popular", "global_popular", "personalised"]
    assert list(model.seen.columns) == ["member_id", "offer_id", "segment"]
    assert len(model.seen) == 4 * OFFERS.n


def test_uplift_matrix_offer_column_then_kind_then_zero_in_blocks():
    model = Uplift()
    s = uplift_matrix(model, members("a", "b", "c"), OFFERS, block_rows=2)
    assert [c[0] for c in model.calls] == [2, 1]  # blocks of at most 2 members
    np.testing.assert_allclose(s[:, col("pts")], [0.0, 1.0, 0.0])  # its own column, per block
    assert s[0, col("welcome")] == 2.0  # a credit offer takes its kind's column
    assert s[0, col("disc")] == 0.0  # no column: no effect


def test_model_inputs_keeps_every_member_as_a_model_row_with_its_served_name():
    inputs = model_inputs(
        Affinity({"b": "segment_popular"}),
        Uplift(),
        members("a", "b"),
        OFFERS,
        model_versions={"affinity": "7"},
    )
    inputs.check(2, OFFERS.n)
    assert inputs.has_row.tolist() == [True, True]
    assert inputs.fallback.tolist() == ["personalised", "segment_popular"]
    assert inputs.model_versions == {"affinity": "7"}


def test_score_inputs_refuse_unknown_fallback_names():
    inputs = model_inputs(Affinity({}), Uplift(), members("a"), OFFERS)
    inputs.fallback = np.array(["nonsense"], dtype=object)
    with pytest.raises(EngineInputError, match="fallback names"):
        inputs.check(1, OFFERS.n)


class PythonModel:
    def predict(self, context, frame, params=None):
        return pd.DataFrame({"params": [params] * len(frame)})


class Loaded:
    """An MLflow-pyfunc-shaped wrapper whose own predict would enforce a schema."""

    def unwrap_python_model(self):
        return PythonModel()

    def predict(self, frame):  # pragma: no cover - must not be called
        raise AssertionError("schema-enforcing predict called")


def test_predict_frame_calls_the_python_model_with_params():
    out = predict_frame(Loaded(), pd.DataFrame({"x": [1, 2]}), {"outcomes": ["spend"]})
    assert out["params"].tolist() == [{"outcomes": ["spend"]}] * 2


class UpliftWithSE(Uplift):
    """Uplift carrying the standard error of each treatment's level, as offers train writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.meta_ = {"effect_se": {"spend": {"pts": 0.5, "credit": 1.5}}}


def test_uncertainty_z_takes_each_offer_at_its_lower_confidence_bound():
    frame = members("a", "b")
    plain = model_inputs(Affinity({}), UpliftWithSE(), frame, OFFERS)
    lcb = model_inputs(Affinity({}), UpliftWithSE(), frame, OFFERS, uncertainty_z=2.0)
    diff = plain.incremental_spend - lcb.incremental_spend
    np.testing.assert_allclose(diff[:, col("pts")], 1.0)  # its own level's SE
    np.testing.assert_allclose(diff[:, col("welcome")], 3.0)  # a credit offer: its kind's SE
    np.testing.assert_allclose(diff[:, col("disc")], 0.0)  # no SE known: the estimate
    np.testing.assert_allclose(lcb.p_redeem, plain.p_redeem)  # P(redeem) untouched
    # a model without SEs is used as is
    no_se = model_inputs(Affinity({}), Uplift(), frame, OFFERS, uncertainty_z=2.0)
    np.testing.assert_allclose(no_se.incremental_spend, plain.incremental_spend)
    with pytest.raises(ValueError, match="uncertainty_z must be a finite number >= 0; got -1"):
        model_inputs(Affinity({}), Uplift(), frame, OFFERS, uncertainty_z=-1.0)
