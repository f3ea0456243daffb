"""The real-time single-member path (serving.engine.single) gives the engine's decision.

Parity, member by member, on the shipped catalog with randomised members (every moment, nulls,
baskets, fallbacks, holdout, heavy exploration, exhausted budgets): the single path against
``DecisionEngine.decide`` for a batch of one, and against one big batch (budgets not binding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog.model import default_catalog_path, load_catalog
from features.sources.schema import LIFECYCLE_STAGES, TIERS
from serving.engine import DecisionContext, DecisionEngine, EngineSettings, FallbackTables
from serving.engine.eligibility import member_eligibility
from serving.engine.hashing import (
    decision_id_one,
    decision_ids,
    hash64,
    hash64_one,
    unit_interval,
    unit_one,
)
from serving.engine.moments import member_moments
from serving.engine.scoring import ScoreInputs
from serving.engine.single import SingleDecider, decision_dicts

CATEGORIES = ["coffee", "bakery", "grocery", "apparel"]
SEGMENTS = ["commuter", "casual", "family", "premium", None]


def _members(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def num(lo: float, hi: float, null: float = 0.1) -> np.ndarray:
        x = rng.uniform(lo, hi, n).round(rng.integers(0, 2))
        return np.where(rng.random(n) < null, np.nan, x)

    frame = pd.DataFrame(
        {
            "member_id": [f"m{seed}-{i}" for i in range(n)],
            "lifecycle_stage": rng.choice(LIFECYCLE_STAGES, n),
            "tier": rng.choice([*TIERS, None], n),
            "segment": rng.choice(np.asarray(SEGMENTS, dtype=object), n),
            "next_tier": rng.choice(np.asarray([*TIERS[1:], None], dtype=object), n),
            "points_balance": num(0, 5000),
            "points_to_next_tier": num(0, 600),
            "points_tier_window": num(0, 3000),
            "days_to_birthday": np.floor(num(0, 366)),
            "days_to_anniversary": np.floor(num(0, 366)),
            "tenure_days": np.floor(num(0, 900)),
            "days_since_last_purchase": np.floor(num(0, 400)),
            "n_purchases_total": np.floor(num(0, 60)),
            "purchases_to_next_milestone": np.floor(num(0, 5)),
            "next_milestone": rng.choice([10.0, 11, 12, 13, 21, 22, 23, 50, 100, 101, 111], n),
            "purchase_streak_weeks": np.floor(num(0, 10)),
            "avg_basket": num(0, 80),
        }
    )
    for c in CATEGORIES:
        frame[f"share_{c}"] = num(0, 0.6, null=0.3)
    return frame


def _setup(n: int, seed: int, eps: float, holdout: float, basis: str = "expected"):
    catalog = load_catalog(default_catalog_path())
    st_ = EngineSettings(
        exploration={"epsilon": eps, "salt": "t"},
        holdout={"share": holdout, "salt": "h"},
        allocation={"budget_basis": basis},
        explanations={"currency": "$"},
    )
    engine = DecisionEngine(catalog, st_)
    frame = _members(n, seed)
    rng = np.random.default_rng(seed + 1)
    m = engine.offers.n
    p = rng.uniform(0, 0.4, (n, m))
    s = rng.normal(3, 6, (n, m))
    has_row = rng.random(n) > 0.25
    tables = FallbackTables.from_scores(p, s, frame["segment"].to_numpy(object), min_members=3)
    return engine, frame, p, s, has_row, tables


def _table(engine, frame, i, basket):
    from serving.api.bundle.member_rows import with_basket

    t = engine.member_table(frame.iloc[[i]].reset_index(drop=True))
    return with_basket(t, basket) if basket is not None else t


@pytest.mark.parametrize(
    ("seed", "channel", "eps", "holdout", "k", "basket"),
    [
        (1, "app", 0.0, 0.0, 3, None),
        (2, "email", 0.5, 0.2, 5, None),
        (3, "checkout", 0.3, 0.1, None, "random"),
        (4, "checkout", 1.0, 0.0, None, "random"),
        (5, "app", 0.05, 0.05, 1, None),
    ],
)
def test_single_equals_engine_batch_of_one(seed, channel, eps, holdout, k, basket):
    engine, frame, p, s, has_row, tables = _setup(120, seed, eps, holdout)
    single = SingleDecider(engine, tables)
    rng = np.random.default_rng(seed + 2)
    exhausted = engine.offers.budget.copy()
    exhausted[rng.choice(engine.offers.n, 4, replace=False)] = 0.0  # some budgets spent
    left = exhausted if seed % 2 else None
    ctx = DecisionContext(channel, pd.Timestamp("2026-11-20 10:00"), f"req-{seed}", k=k)
    n_offers = n_surprise = n_explored = 0
    # as the serving bundle does: the member-only rules and moments computed once for all
    everyone = engine.member_table(frame)
    own = member_eligibility(everyone, engine.offers)
    flags = member_moments(everyone, engine.settings.moments).flags
    for i in range(len(frame)):
        b = float(rng.gamma(2, 30)) if basket else None
        table = _table(engine, frame, i, b)
        pre = {"member_mask": own[i], "member_flags": flags[i]} if i % 2 else {}
        one = single.decide(table, p[i], s[i], bool(has_row[i]), ctx, budget_left=left, **pre)
        inputs = ScoreInputs(p[[i]], s[[i]], has_row=has_row[[i]])
        batch = engine.decide(table, inputs, ctx, budget_left=left, fallback_tables=tables)
        want = decision_dicts(engine, batch.rows, [frame["member_id"][i]], k)[0]
        assert one == want, (i, one, want)
        n_offers += len(one["offers"])
        n_surprise += sum(x["surprise"] for x in one["offers"])
        n_explored += one["explored"]
    # the comparison covered the interesting cases
    assert n_offers > 50
    if channel == "checkout":
        assert n_surprise > 0
    if eps >= 0.3:
        assert n_explored > 0


def test_single_equals_one_big_batch_when_budgets_do_not_bind():
    engine, frame, p, s, has_row, tables = _setup(300, 11, 0.2, 0.1)
    ctx = DecisionContext("email", pd.Timestamp("2026-11-20"), "send-1", k=3)
    batch = engine.decide(frame, ScoreInputs(p, s, has_row=has_row), ctx, fallback_tables=tables)
    assert batch.stats["final_dropped"] == 0
    single = SingleDecider(engine, tables)
    rows = batch.rows
    for i, member_id in enumerate(frame["member_id"]):
        one = single.decide(_table(engine, frame, i, None), p[i], s[i], bool(has_row[i]), ctx)
        want = decision_dicts(engine, rows, [member_id], 3)[0]
        assert one == want, (member_id, one, want)


def test_defers_to_the_engine_when_a_budget_binds():
    engine, frame, p, s, has_row, tables = _setup(40, 21, 0.0, 0.0, basis="worst_case")
    left = engine.offers.budget.copy()
    left[np.isfinite(left)] = 0.5  # less than one send of any count budget
    single = SingleDecider(engine, tables)
    ctx = DecisionContext("app", pd.Timestamp("2026-11-20"), "r", k=3)
    for i in range(len(frame)):
        table = _table(engine, frame, i, None)
        one = single.decide(table, p[i], s[i], bool(has_row[i]), ctx, budget_left=left)
        inputs = ScoreInputs(p[[i]], s[[i]], has_row=has_row[[i]])
        batch = engine.decide(table, inputs, ctx, budget_left=left, fallback_tables=tables)
        assert one == decision_dicts(engine, batch.rows, [frame["member_id"][i]], 3)[0]
        budgeted = {engine.offers.ids[j] for j in np.flatnonzero(np.isfinite(left))}
        assert not budgeted & {x["offer_id"] for x in one["offers"]}


def test_single_rejects_more_than_one_member():
    engine, frame, p, s, _, tables = _setup(5, 1, 0.0, 0.0)
    ctx = DecisionContext("app", pd.Timestamp("2026-11-20"), "r")
    with pytest.raises(ValueError, match="2 members, expected 1"):
        SingleDecider(engine, tables).decide(
            engine.member_table(frame.iloc[:2]), p[0], s[0], True, ctx
        )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(min_size=1, max_size=12))
def test_scalar_hash_equals_vectorised(text, salt):
    assert hash64_one(text, salt) == int(hash64([text], salt)[0])
    assert unit_one(text, salt) == float(unit_interval([text], salt)[0])
    assert decision_id_one(text) == decision_ids([text])[0]


def test_decisions_carry_exactly_the_typed_keys():
    """Both paths build dicts with the keys ``Decision`` and ``Reward`` declare (the single
    path equals ``decision_dicts`` above), and the API copies only keys a Reward has."""
    from typing import get_args

    from serving.api.schemas import OfferOut, RewardOut
    from serving.engine.decision import Decision, Fallback, Reward, RewardField

    engine, frame, p, s, has_row, tables = _setup(60, 5, 0.3, 0.1)
    ctx = DecisionContext("checkout", pd.Timestamp("2026-11-20"), "typed", k=3)
    batch = engine.decide(frame, ScoreInputs(p, s, has_row=has_row), ctx, fallback_tables=tables)
    decisions = decision_dicts(engine, batch.rows, list(frame["member_id"]), 3)
    rewards = [x for d in decisions for x in d["offers"]]
    assert rewards  # the check below covered offers
    assert all(set(d) == set(Decision.__annotations__) for d in decisions)
    assert all(d["fallback"] in get_args(Fallback) for d in decisions)
    assert all(set(x) == set(Reward.__annotations__) for x in rewards)
    assert set(get_args(RewardField)) == set(Reward.__annotations__)
    assert set(OfferOut.model_fields) <= set(get_args(RewardField))
    assert set(RewardOut.model_fields) <= set(get_args(RewardField))
