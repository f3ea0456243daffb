"""Golden parity of the engine's output rows: the vectorised output building (decision ids,
explanations, moment lists, hashing) gives byte-identical rows to the implementation before it.

The digests below were recorded with the earlier (pandas Series) implementation on seeded
synthetic programs that reach every explanation phrase (every moment, lifecycle tag, category
affinity, both fallbacks, exploration), holdout, budgets, checkout baskets and non-ASCII ids.
``hash64`` and ``explain`` are also checked against slow reference copies kept here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog.model import parse_catalog
from features.sources.schema import LIFECYCLE_STAGES, TIERS
from serving.engine import DecisionContext, DecisionEngine, EngineSettings
from serving.engine.fallback import FallbackTables
from serving.engine.hashing import decision_ids, encode_texts, hash64
from serving.engine.scoring import ScoreInputs
from tests.support.engine import AS_OF, OFFERS

EXTRA_OFFERS = [
    {
        "offer_id": "milestone",
        "name": "Milestone treat",
        "kind": "free_item",
        "reward_value": 4,
        "cost": 1,
        "surprise": True,
        "moment": "milestone",
    },
    {
        "offer_id": "streak",
        "name": "Streak bonus",
        "kind": "bonus_points",
        "reward_value": 2,
        "cost": 0.5,
        "surprise": True,
        "moment": "streak",
    },
    {
        "offer_id": "basket",
        "name": "Big basket",
        "kind": "credit",
        "reward_value": 2,
        "cost": 2,
        "surprise": True,
        "channels": ["checkout", "email", "app"],
    },
    {
        "offer_id": "tiernudge",
        "name": "Tier push",
        "kind": "bonus_points",
        "reward_value": 2,
        "cost": 0.5,
        "surprise": True,
        "moment": "tier_nudge",
    },
    {
        "offer_id": "hello",
        "name": "Hello",
        "kind": "credit",
        "reward_value": 2,
        "cost": 1,
        "surprise": True,
        "moment": "onboarding",
    },
    {
        "offer_id": "comeback",
        "name": "Come back",
        "kind": "credit",
        "reward_value": 3,
        "cost": 1,
        "surprise": True,
        "moment": "win_back",
    },
    {
        "offer_id": "bakery",
        "name": "Bakery deal",
        "kind": "discount_pct",
        "reward_value": 3,
        "cost": 1,
        "category": "bakery",
        "budget": {"count": 40},
    },
    {
        "offer_id": "goldpts",
        "name": "Gold points",
        "kind": "bonus_points",
        "reward_value": 2,
        "cost": 1,
        "category": "coffee",
        "eligibility": {"tiers": ["silver", "gold", "platinum"]},
    },
]


def program(n: int, seed: int, channel: str = "email"):
    """A seeded engine, member frame, score inputs, context and fallbacks."""
    rng = np.random.default_rng(seed)
    cat = parse_catalog({"program": "Parity", "offers": OFFERS + EXTRA_OFFERS}, "parity")
    settings = EngineSettings.model_validate(
        {
            "k": 3,
            "exploration": {"epsilon": 0.3},
            "holdout": {"share": 0.1},
            "surprise": {"min_value": -1e9},
            "lifecycle": {"extra_tags": {"bakery": ["win_back", "onboarding"]}},
        }
    )
    engine = DecisionEngine(cat, settings)
    ids = np.array([f"m{i:05d}" for i in range(n)], dtype=object)
    ids[::17] = [f"mé{i}-ß" for i in range(len(ids[::17]))]  # non-ASCII ids
    ids[5] = "x"
    nullable = rng.random(n) < 0.05

    def num(values: np.ndarray) -> np.ndarray:
        return np.where(rng.random(n) < 0.05, np.nan, values)

    frame = pd.DataFrame(
        {
            "member_id": ids,
            "lifecycle_stage": rng.choice(LIFECYCLE_STAGES, n),
            "tier": np.where(nullable, None, rng.choice(TIERS, n)),
            "segment": rng.choice(["family", "commuter", "student", None], n),
            "points_balance": num(rng.gamma(2.0, 200.0, n)),
            "points_tier_window": num(rng.gamma(2.0, 400.0, n)),
            "points_to_next_tier": num(rng.choice([0.4, 1.0, 12.5, 80.0, 700.0, 3000.0], n)),
            "next_tier": rng.choice(["gold", "platinum", "silver", None], n),
            "days_to_birthday": num(rng.integers(0, 365, n).astype(float)),
            "days_to_anniversary": num(rng.integers(0, 365, n).astype(float)),
            "tenure_days": num(rng.choice([0.0, 1.0, 3.0, 6.0, 30.0, 400.0, 900.0], n)),
            "days_since_last_purchase": num(rng.choice([0.5, 1.0, 30.0, 41.0, 90.0, 400.0], n)),
            "n_purchases_total": num(rng.choice([0.0, 1.0, 3.0, 12.0, 40.0], n)),
            "purchases_to_next_milestone": num(rng.choice([0.0, 1.0, 2.0, 5.0], n)),
            "next_milestone": num(rng.choice([1.0, 2.0, 3.0, 11.0, 12.0, 13.0, 21.0, 50.0], n)),
            "purchase_streak_weeks": num(rng.choice([0.0, 1.0, 4.0, 9.0], n)),
            "avg_basket": num(rng.choice([0.0, 12.345, 25.0], n)),
            "basket_total": num(rng.choice([0.0, 10.0, 55.555, 120.125], n)),
            "basket_is_milestone": rng.random(n) < 0.2,
            "basket_reaches_next_tier": rng.random(n) < 0.2,
            "share_coffee": num(rng.random(n) * 0.4),
            "share_bakery": num(rng.random(n) * 0.4),
        }
    )
    m = engine.offers.n
    p = rng.uniform(0.01, 0.6, (n, m))
    s = rng.normal(10.0, 8.0, (n, m))
    has_row = rng.random(n) > 0.15
    inputs = ScoreInputs(p, s, has_row, {"affinity": "a/1", "uplift": "u/2"})
    segs = frame["segment"].to_numpy(dtype=object)
    tables = FallbackTables.from_scores(p, s, segs, has_row, min_members=5)
    ctx = DecisionContext(channel, AS_OF, f"req-{seed}", k=3)
    return engine, frame, inputs, ctx, tables


def digest(rows: pd.DataFrame) -> str:
    """SHA-256 of the columns, dtypes and every non-float value (exact: ids, offers, order,
    texts); the float columns are compared separately within a tolerance (``float_sums``), as
    their last bits may differ between CPUs."""
    h = hashlib.sha256()
    h.update(repr(list(rows.columns)).encode())
    h.update(repr([str(t) for t in rows.dtypes]).encode())
    exact = rows.drop(columns=_float_columns(rows))
    h.update(exact.to_csv(index=False).encode())
    return h.hexdigest()


def _float_columns(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if pd.api.types.is_float_dtype(rows[c])]


def float_sums(rows: pd.DataFrame) -> dict[str, float]:
    """Per float column: the sum of its non-NaN values, and (``<column>:nan``) its NaN count."""
    out = {}
    for c in _float_columns(rows):
        v = rows[c].to_numpy(dtype=np.float64)
        out[c] = float(np.nansum(v))
        out[c + ":nan"] = float(np.isnan(v).sum())
    return out


GOLDEN = {
    ("email", 0, False): "045818c9c48259984fdbecd0651460de421b0f56b56ece142b0bd4627c99a270",
    ("email", 1, True): "2dd914f03ba14e7c14502483347a573c94f3642695a2fd0529f49c50d3eb7a8c",
    ("checkout", 2, False): "bdfb4f5a0c450c23d43ebeecbaeed818aae8484d01737b18f424230fb4e5a178",
}
GOLDEN_SUMS = {
    ("checkout", 2, False): {
        "eiv": 3589.98850796,
        "eiv:nan": 63.0,
        "expected_cost": 371.17324944,
        "expected_cost:nan": 63.0,
        "incremental_margin": 3961.161753374,
        "incremental_margin:nan": 63.0,
        "lifecycle_boost": 1178.874996901,
        "lifecycle_boost:nan": 63.0,
        "p_redeem": 273.961425959,
        "p_redeem:nan": 63.0,
        "propensity": 868.57,
        "propensity:nan": 0.0,
        "rank_score": 3895.339649724,
        "rank_score:nan": 63.0,
        "shadow_price": 2046.670302153,
        "shadow_price:nan": 63.0,
        "uplift_adjusted_margin": 35703.763379864,
        "uplift_adjusted_margin:nan": 63.0,
    },
    ("email", 0, False): {
        "eiv": 3826.345129021,
        "eiv:nan": 63.0,
        "expected_cost": 432.325256248,
        "expected_cost:nan": 63.0,
        "incremental_margin": 4258.670389712,
        "incremental_margin:nan": 63.0,
        "lifecycle_boost": 1243.349994659,
        "lifecycle_boost:nan": 63.0,
        "p_redeem": 283.06786952,
        "p_redeem:nan": 63.0,
        "propensity": 899.74,
        "propensity:nan": 0.0,
        "rank_score": 4255.392102454,
        "rank_score:nan": 63.0,
        "shadow_price": 2347.466213703,
        "shadow_price:nan": 63.0,
        "uplift_adjusted_margin": 41713.216138877,
        "uplift_adjusted_margin:nan": 63.0,
    },
    ("email", 1, True): {
        "eiv": 2310.356141001,
        "eiv:nan": 71.0,
        "expected_cost": 147.40885999,
        "expected_cost:nan": 71.0,
        "incremental_margin": 2457.76500223,
        "incremental_margin:nan": 71.0,
        "lifecycle_boost": 661.949997425,
        "lifecycle_boost:nan": 71.0,
        "p_redeem": 138.466512129,
        "p_redeem:nan": 71.0,
        "propensity": 556.445,
        "propensity:nan": 8.0,
        "rank_score": 2477.001605388,
        "rank_score:nan": 71.0,
        "shadow_price": 7736.857972622,
        "shadow_price:nan": 71.0,
        "uplift_adjusted_margin": 26264.185102582,
        "uplift_adjusted_margin:nan": 71.0,
    },
}


@pytest.mark.parametrize(("channel", "seed", "money"), list(GOLDEN))
def test_rows_match_the_recorded_implementation(channel, seed, money):
    """Recorded with the pandas-Series implementation (byte-identical then), re-recorded when
    the settings gained ``consent`` and again ``scoring.uncertainty_z`` (each time only the
    ``policy`` fingerprint column changed: checked against the commit before with the policy
    column dropped)."""
    engine, frame, inputs, ctx, tables = program(600, seed, channel)
    batch = engine.decide(
        frame, inputs, ctx, fallback_tables=tables, total_money=150.0 if money else None
    )
    rows = batch.rows
    assert {"offers", "held_out"} <= set(rows["status"])
    assert digest(rows) == GOLDEN[(channel, seed, money)]
    got = float_sums(rows)
    want = GOLDEN_SUMS[(channel, seed, money)]
    assert set(got) == set(want)
    for c, v in want.items():
        assert got[c] == pytest.approx(v, rel=1e-9, abs=1e-9), c


# ---- slow references (the implementation before vectorising) ---------------------------------
_FNV_PRIME = 0x100000001B3


def _ref_hash64(texts: list[str], salt: str) -> np.ndarray:
    out = []
    for t in texts:
        h = 0xCBF29CE484222325
        for b in salt.encode() + b"\x1f" + str(t).encode():
            h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 33
        out.append(h)
    return np.array(out, dtype=np.uint64)


TEXTS = ["", "a", "m00001", "req|m00001", "mé-ß", "日本語テキスト", "x" * 70, "tab\tsep", "z"]


def test_hash64_matches_the_byte_by_byte_reference():
    assert np.array_equal(hash64(TEXTS, "salt/1"), _ref_hash64(TEXTS, "salt/1"))
    assert np.array_equal(
        hash64(np.array(TEXTS[:4], dtype=object), "é"), _ref_hash64(TEXTS[:4], "é")
    )
    assert hash64([], "s").shape == (0,)


def test_decision_ids_are_stable():
    ids = decision_ids(["req|m1", "req|mé"])
    assert list(ids) == [
        "e349f1a8-0802-8197-b330-40b625148061",
        "bcf6bb5a-969b-843f-97b7-33cdf61dcede",
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=6), st.text(max_size=5))
def test_hash64_of_encoded_texts_with_a_prefix(texts, prefix):
    enc = encode_texts(np.array(texts, dtype=object))
    joined = [prefix + t for t in texts]
    assert np.array_equal(hash64(enc.with_prefix(prefix), "s"), _ref_hash64(joined, "s"))
    assert np.array_equal(hash64(enc, "s"), _ref_hash64(texts, "s"))
    assert list(decision_ids(enc.with_prefix(prefix))) == list(decision_ids(joined))


def test_engine_pickles_after_deciding_and_decides_the_same():
    import pickle

    engine, frame, inputs, ctx, tables = program(200, 0)
    first = engine.decide(frame, inputs, ctx, fallback_tables=tables).rows
    again = engine.decide(frame, inputs, ctx, fallback_tables=tables).rows  # cached encoding
    copy = pickle.loads(pickle.dumps(engine))  # Spark broadcasts the engine
    third = copy.decide(frame, inputs, ctx, fallback_tables=tables).rows
    assert digest(first) == digest(again) == digest(third)
