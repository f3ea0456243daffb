"""Adapters from the models' outputs to engine inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.engine.adapters import affinity_matrix, score_inputs, uplift_matrix
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable
from tests.unit.test_engine_fixtures import IDS, catalog, col

OFFERS = OfferTable.from_catalog(catalog())


def pyfunc_output(members, p=0.2, fallback="personalised"):
    rows = [(m, o) for m in members for o in IDS]
    return pd.DataFrame(
        {
            "member_id": [m for m, _ in rows],
            "offer_id": [o for _, o in rows],
            "p_redeem": p,
            "fallback": fallback,
        }
    )


def test_affinity_pivot_and_model_rows():
    frame = pd.concat(
        [pyfunc_output(["a"]), pyfunc_output(["b"], fallback="global_popular")], ignore_index=True
    )
    frame.loc[(frame.member_id == "a") & (frame.offer_id == "pts"), "p_redeem"] = 0.7
    p, has = affinity_matrix(frame, np.array(["a", "b", "c"], dtype=object), OFFERS)
    assert p[0, col("pts")] == 0.7 and p[0, col("disc")] == 0.2
    assert has.tolist() == [True, False, False]  # b: a fallback served it; c: absent
    assert np.isnan(p[2]).all()


def test_uplift_by_kind_or_offer():
    eff = np.array([[1.0, 2.0, 3.0]])
    by_kind = uplift_matrix(eff, ["bonus_points", "credit", "free_item"], OFFERS, "kind")
    assert by_kind[0, col("pts")] == 1.0 and by_kind[0, col("any-surprise")] == 1.0
    assert by_kind[0, col("welcome")] == 2.0 and by_kind[0, col("bday")] == 3.0
    assert np.isnan(by_kind[0, col("disc")])  # discount_pct has no arm
    by_offer = uplift_matrix(eff, ["pts", "seg", "nope"], OFFERS, "offer", missing=0.0)
    assert by_offer[0, col("seg")] == 2.0 and by_offer[0, col("disc")] == 0.0
    with pytest.raises(EngineInputError, match="treatments"):
        uplift_matrix(eff, ["a"], OFFERS)


def test_score_inputs_mark_members_without_a_model_row():
    frame = pyfunc_output(["a"])
    inp = score_inputs(frame, np.ones((2, 1)), ["credit"], np.array(["a", "b"], object), OFFERS)
    inp.check(2, OFFERS.n)
    assert inp.has_row.tolist() == [True, False]
    assert inp.incremental_spend[0, col("welcome")] == 1.0
    assert inp.incremental_spend[0, col("pts")] == 0.0
