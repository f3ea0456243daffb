"""Affinity on The Complete Journey (products, train weeks < 45, test weeks >= 45): ALS must beat
popularity on recall@10, and the buy-again baseline must be as strong as the reference says."""

from __future__ import annotations

import os

import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from features.sources.adapters import convert
from models.affinity import ALS, PersonalPopularity, Popularity
from training.affinity.evaluate import EvalSettings, build_task, evaluate_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEEK_45 = pd.Timestamp("2017-10-30 04:00")  # first basket of week 45 is 04:01:09
END = pd.Timestamp("2018-01-02")


@pytest.fixture(scope="module")
def task(shared_data):
    result = convert("complete-journey", shared_data / "complete-journey")
    tables = {t: getattr(result, t) for t in ("members", "offers", "transactions", "offer_events")}
    return build_task(tables, WEEK_45, END, EvalSettings(target="products"), tables)


def test_split_is_chronological_and_members_are_active_in_both(task):
    assert task.train.as_of == WEEK_45
    assert 2000 < len(task.rows) <= task.train.n_members  # 2,246 households in both periods
    assert (task.n_relevant >= 1).all()
    assert len(task.candidates) > 50_000


def test_als_beats_popularity_and_buy_again_matches_the_reference(task):
    ks = (10,)
    als = ALS(factors=32, iterations=6, regularization=0.05, weighting="bm25").fit(task.train)
    r_als = evaluate_model(als, task, ks)["recall@10"]
    r_pop = evaluate_model(Popularity().fit(task.train), task, ks)["recall@10"]
    r_again = evaluate_model(PersonalPopularity().fit(task.train), task, ks)["recall@10"]
    assert r_als > 1.3 * r_pop, (r_als, r_pop)
    assert 0.40 < r_again < 0.50  # reference: 0.447
    assert 0.17 < r_pop < 0.25  # reference: 0.215
