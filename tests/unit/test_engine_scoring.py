"""Score parts, lifecycle boosts, the fallback chain and surprise selection: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from serving.engine.allocation import Budgets
from serving.engine.errors import EngineInputError
from serving.engine.fallback import FALLBACKS, FallbackTables, fill
from serving.engine.members import MemberTable
from serving.engine.offers import OfferTable
from serving.engine.scoring import ScoreInputs, lifecycle_boosts, score
from serving.engine.settings import (
    GLOBAL_POPULAR,
    SEGMENT_POPULAR,
    EngineSettings,
    LifecyclePolicy,
    ScoringSettings,
)
from serving.engine.surprise import pick_surprises
from tests.support.engine import catalog, col, member, members

OFFERS = OfferTable.from_catalog(catalog())
M = OFFERS.n


def test_eiv_known_answer():
    mt = MemberTable.from_frame(members(member()))
    p = np.full((1, M), 0.25)
    s = np.full((1, M), 10.0)
    scoring = ScoringSettings(margin_rate=0.3, value_weight=1.0, cost_weight=2.0,
                              send_cost={"email": 0.1})  # fmt: skip
    sc = score(p, s, mt, OFFERS, scoring, np.ones((4, M)), "email")
    j = col("pts")  # cost 1
    assert sc.incremental_margin[0, j] == pytest.approx(3.0)
    assert sc.expected_cost[0, j] == pytest.approx(0.25 * 1 + 0.1)
    assert sc.eiv[0, j] == pytest.approx(3.0 - 2 * 0.35)
    assert sc.uplift_adjusted_margin()[0, j] == pytest.approx(12.0)  # 3.0 per 0.25 redemptions
    sc_app = score(p, s, mt, OFFERS, scoring, np.ones((4, M)), "app")
    assert sc_app.expected_cost[0, j] == pytest.approx(0.25)


def test_boost_moves_positive_and_negative_scores_up():
    mt = MemberTable.from_frame(members(member(lifecycle_stage="lapsed")))
    boosts = lifecycle_boosts(OFFERS, LifecyclePolicy(boosts={"lapsed": {"win_back": 2.0}}))
    p = np.full((1, M), 0.5)
    j = col("winback")  # cost 10
    for spend, want in ((40.0, (12 - 5) * 2), (10.0, (3 - 5) / 2)):
        s = np.full((1, M), spend)
        sc = score(p, s, mt, OFFERS, ScoringSettings(), boosts, "email")
        assert sc.rank_score[0, j] == pytest.approx(want)
        assert sc.boost[0, j] == 2.0 and sc.rank_score[0, col("pts")] == sc.eiv[0, col("pts")]


def test_fallback_chain_names_who_served():
    p = np.array([[0.5, 0.5], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan]])
    s = np.zeros_like(p)
    has = np.array([True, False, False, False])
    tables = FallbackTables(
        segments=("commuter",),
        segment_p=np.array([[0.2, 0.3]]),
        segment_s=np.array([[1.0, 2.0]]),
        global_p=np.array([0.1, 0.1]),
        global_s=np.array([0.5, 0.5]),
    )
    seg = np.array(["x", "commuter", "family", None], dtype=object)
    fp, _, name = fill(p, s, has, seg, tables, (SEGMENT_POPULAR, GLOBAL_POPULAR))
    assert name.tolist() == ["personalised", SEGMENT_POPULAR, GLOBAL_POPULAR, GLOBAL_POPULAR]
    assert fp[1].tolist() == pytest.approx([0.2, 0.3]) and fp[2].tolist() == pytest.approx(
        [0.1, 0.1]
    )
    _, _, name2 = fill(p, s, has, seg, tables, (GLOBAL_POPULAR,))
    assert name2.tolist() == ["personalised"] + [GLOBAL_POPULAR] * 3
    with pytest.raises(EngineInputError, match="not covered"):
        fill(p, s, has, seg, tables, (SEGMENT_POPULAR,))
    with pytest.raises(EngineInputError, match="no fallback tables"):
        fill(p, s, has, seg, None, (SEGMENT_POPULAR,))
    assert set(name) <= set(FALLBACKS)


def test_fallback_names_match_the_affinity_models():
    from models.affinity import FALLBACKS as MODEL_FALLBACKS

    assert FALLBACKS == MODEL_FALLBACKS


def test_fallback_tables_average_known_members_per_segment():
    p = np.array([[0.2], [0.4], [0.9], [0.0]])
    s = np.array([[1.0], [3.0], [5.0], [7.0]])
    seg = np.array(["a", "a", "b", "a"], dtype=object)
    t = FallbackTables.from_scores(p, s, seg, np.array([True, True, True, False]), min_members=2)
    assert t.segments == ("a",)  # "b" has one known member only
    assert t.segment_p[0, 0] == pytest.approx(0.3) and t.segment_s[0, 0] == pytest.approx(2.0)
    assert t.global_p[0] == pytest.approx(0.5)


def test_score_inputs_are_validated():
    with pytest.raises(EngineInputError, match="p_redeem has shape"):
        ScoreInputs(np.zeros((2, 3)), np.zeros((2, M))).check(2, M)
    with pytest.raises(EngineInputError, match=r"\[0, 1\]"):
        ScoreInputs(np.full((1, M), 1.5), np.zeros((1, M))).check(1, M)
    inp = ScoreInputs(np.vstack([np.zeros(M), np.full(M, np.nan)]), np.zeros((2, M)))
    inp.check(2, M)
    assert inp.has_row.tolist() == [True, False]


def surprise_setup():
    surprise = OFFERS.surprise
    eiv = np.zeros((3, M))
    cost = np.ones((3, M))
    eiv[:, col("bday")], cost[:, col("bday")] = 2.0, 1.0  # 2 per unit of cost
    eiv[:, col("anniv")], cost[:, col("anniv")] = 4.5, 3.0  # more value, 1.5 per unit
    eiv[:, col("any-surprise")], cost[:, col("any-surprise")] = 0.5, 0.5  # 1 per unit
    return eiv, cost, surprise


def test_surprise_highest_value_per_cost():
    eiv, cost, surprise = surprise_setup()
    elig = np.ones((3, M), dtype=bool)
    elig[1, col("bday")] = False
    elig[2] = False
    pick = pick_surprises(eiv, cost, elig, surprise, 0.0, None, Budgets.none(M), cost)
    assert pick.tolist() == [col("bday"), col("anniv"), -1]
    # regular offers never come out as surprises
    assert not OFFERS.surprise[col("pts")]


def test_surprise_min_value_and_budget():
    eiv, cost, surprise = surprise_setup()
    elig = np.ones((3, M), dtype=bool)
    none = pick_surprises(eiv, cost, elig, surprise, 5.0, None, Budgets.none(M), cost)
    assert (none == -1).all()
    # a surprise budget of 2.5 fits two birthday treats (expected cost 1 each)
    two = pick_surprises(eiv, cost, elig, surprise, 0.0, 2.5, Budgets.none(M), cost)
    assert sorted(two.tolist()) == [-1, col("bday"), col("bday")]
    # the offer's own budget counts too
    w = np.zeros((1, M))
    w[0, col("bday")] = 1.0
    one = pick_surprises(
        eiv, cost, elig, surprise, 0.0, None, Budgets(w, np.array([1.0]), ("b",)), cost
    )
    assert sorted(one.tolist()) == [-1, -1, col("bday")]


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("OFFERS_ENGINE_HOLDOUT__SHARE", "0.2")
    monkeypatch.setenv("OFFERS_ENGINE_SCORING__MARGIN_RATE", "0.4")
    monkeypatch.setenv("OFFERS_ENGINE_K", "2")
    st = EngineSettings()
    assert st.holdout.share == 0.2 and st.scoring.margin_rate == 0.4 and st.k == 2
    assert st.fingerprint() != EngineSettings(k=3).fingerprint()
    with pytest.raises(ValueError, match="fallback_chain"):
        EngineSettings(fallback_chain=("segment_popular", "nearest_neighbour"))
