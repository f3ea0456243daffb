"""Batch scorers: the served models' outputs -> score matrices; the synthetic scorer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.batch import ScorerError, SyntheticScorer, load_scorer
from serving.batch.scorers import ModelScorer
from serving.batch.synthetic import synthetic_catalog, synthetic_members
from serving.engine import OfferTable


class FakeAffinity:
    """p_redeem = 0.1 x (offer position + 1), NaN for the unknown offer 'o002'."""

    def __init__(self) -> None:
        self.seen: pd.DataFrame | None = None

    def predict(self, pairs: pd.DataFrame) -> pd.DataFrame:
        self.seen = pairs
        pos = pairs["offer_id"].str[1:].astype(int).to_numpy()
        p = np.where(pairs["offer_id"] == "o002", np.nan, 0.1 * (pos + 1))
        return pd.DataFrame({"p_redeem": p})


class FakeUplift:
    def predict(self, members: pd.DataFrame) -> pd.DataFrame:
        n = len(members)
        return pd.DataFrame(
            {
                "spend:o000": np.full(n, 5.0),
                "spend:credit": np.full(n, 2.0),
                "visits:o000": np.full(n, 9.0),
            }
        )


def test_model_scorer_maps_offers_to_effect_columns():
    offers = OfferTable.from_catalog(synthetic_catalog(4, 100, budgets=False))
    members = synthetic_members(3)
    aff = FakeAffinity()
    inputs = ModelScorer(aff, FakeUplift(), {"affinity": "a/1", "uplift": "u/2"}).score(
        members, offers
    )
    assert inputs.p_redeem.shape == (3, 4)
    np.testing.assert_allclose(inputs.p_redeem[0], [0.1, 0.2, 0.0, 0.4])
    kinds = list(offers.kind_names())
    # o000 has its own column; an offer of kind credit takes the kind's; others: no effect
    expect = [5.0] + [2.0 if k == "credit" else 0.0 for k in kinds[1:]]
    np.testing.assert_allclose(inputs.incremental_spend[1], expect)
    assert inputs.model_versions == {"affinity": "a/1", "uplift": "u/2"}
    assert list(aff.seen.columns) == ["member_id", "offer_id", "segment"]
    assert len(aff.seen) == 12


def test_synthetic_scores_depend_only_on_the_member():
    offers = OfferTable.from_catalog(synthetic_catalog(6, 100))
    members = synthetic_members(50)
    s = SyntheticScorer()
    whole = s.score(members, offers)
    part = s.score(members.iloc[[7, 3]].reset_index(drop=True), offers)
    np.testing.assert_array_equal(part.p_redeem, whole.p_redeem[[7, 3]])
    assert ((whole.p_redeem > 0) & (whole.p_redeem < 1)).all()
    top = s.baseline_topk(members["member_id"].to_numpy(), list(offers.ids), 2)
    assert top.shape == (50, 2) and len(np.unique(top[0])) == 2


def test_missing_model_is_named(tmp_path):
    with pytest.raises(ScorerError, match=r"model 'affinity' from .*nope"):
        load_scorer({"affinity": str(tmp_path / "nope"), "uplift": str(tmp_path / "nope")})
    with pytest.raises(ScorerError, match=r"\['uplift'\] not given"):
        load_scorer({"affinity": "x"})
