"""Affinity models: known answers on block matrices, one contract suite run on every model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.affinity import (
    ALS,
    BPR,
    FALLBACKS,
    GLOBAL,
    PERSONALISED,
    SEGMENT,
    AffinityInputError,
    AffinityModel,
    Blend,
    Interactions,
    NotFittedError,
    PersonalPopularity,
    Popularity,
    SegmentPopularity,
    load_model,
    save_model,
)


def block_matrix(n_per_group: int = 12, items_per_block: int = 6, seed: int = 0) -> np.ndarray:
    """Two groups of members; each group interacts with every item of its own block only."""
    rng = np.random.default_rng(seed)
    n, m = 2 * n_per_group, 2 * items_per_block
    x = np.zeros((n, m), dtype=np.float32)
    x[:n_per_group, :items_per_block] = 1.0
    x[n_per_group:, items_per_block:] = 1.0
    x *= rng.uniform(1.0, 3.0, size=x.shape).astype(np.float32)
    return x


def tiny(x: np.ndarray | None = None) -> Interactions:
    x = block_matrix() if x is None else x
    segments = ["gold|active"] * (x.shape[0] // 2) + ["bronze|lapsing"] * (
        x.shape[0] - x.shape[0] // 2
    )
    return Interactions.from_matrix(x, segments=segments)


def make(name: str) -> AffinityModel:
    return {
        "als": lambda: ALS(factors=4, regularization=0.01, iterations=20, weighting="none"),
        "als_bm25": lambda: ALS(factors=4, regularization=0.01, iterations=20, weighting="bm25"),
        "bpr": lambda: BPR(factors=4, learning_rate=0.05, iterations=200),
        "popularity": Popularity,
        "segment_popularity": lambda: SegmentPopularity(min_members=2),
        "personal_popularity": PersonalPopularity,
        "blend": lambda: Blend(
            als={"factors": 4, "regularization": 0.01, "iterations": 20, "weighting": "none"},
            als_weight=1.0,
            segment_min_members=2,
        ),
    }[name]()


ALL = ["als", "als_bm25", "bpr", "popularity", "segment_popularity", "personal_popularity", "blend"]
PERSONAL = ["als", "als_bm25", "bpr", "blend"]


# ---- known answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PERSONAL)
def test_held_out_cell_comes_back_first(name):
    x = block_matrix()
    x[0, 2] = 0.0  # member 0 (group A) has not touched item 2 (block A)
    data = tiny(x)
    model = make(name).fit(data)
    unseen = np.flatnonzero(x[0] == 0)  # item 2 and the whole of block B
    ranking = model.rank(data.take(np.array([0])), unseen, k=3)
    assert ranking.items[0, 0] == 2


def test_popularity_ranks_by_share_of_members():
    x = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32)
    data = tiny(x)
    model = Popularity().fit(data)
    ranking = model.rank(data.take(np.array([0, 1])), np.arange(3), k=3)
    assert ranking.items.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_segment_popularity_uses_the_members_segment_and_falls_back():
    x = np.zeros((6, 3), dtype=np.float32)
    x[:3, 0] = 1  # segment a likes item 0
    x[3:, 2] = 1  # segment b likes item 2
    x[5, 1] = 1
    data = Interactions.from_matrix(x, segments=["a"] * 3 + ["b"] * 3)
    model = SegmentPopularity(min_members=2).fit(data)
    batch = data.take(np.array([0, 3]))
    assert model.rank(batch, np.arange(3), k=1).items[:, 0].tolist() == [0, 2]
    assert model.fallback(batch).tolist() == [SEGMENT, SEGMENT]
    unknown = Interactions.from_matrix(np.zeros((1, 3)), segments=["zzz"])
    assert model.fallback(unknown).tolist() == [GLOBAL]


def test_segment_popularity_names_the_missing_field():
    with pytest.raises(AffinityInputError, match="segments"):
        SegmentPopularity().fit(Interactions.from_matrix(np.eye(3)))


def test_personal_popularity_is_buy_again_with_popular_tie_break():
    x = np.array([[3, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 2]], dtype=np.float32)
    data = Interactions.from_matrix(x)
    # count = 1 per non-zero in from_matrix: give member 0 a real frequency
    data = type(data)(**{**data.__dict__, "count": sp.csr_matrix(x)})
    model = PersonalPopularity().fit(data)
    r = model.rank(data.take(np.array([0])), np.arange(4), k=4)
    assert r.items[0].tolist() == [0, 2, 1, 3]  # own items by count, then popularity
    assert model.fallback(data.take(np.array([1])), np.array([0, 2])).tolist() == [GLOBAL]
    assert model.fallback(data.take(np.array([0])), np.array([0, 2])).tolist() == [PERSONALISED]


def test_blend_weights_reduce_to_its_parts():
    data = tiny()
    base = make("blend").fit(data)
    items = np.arange(data.n_items)
    batch = data.take(np.arange(data.n_members))
    als_only = base.with_weights(freq_weight=0.0, als_weight=1.0)
    np.testing.assert_allclose(
        als_only.score(batch, items), base.als_.score(batch, items), rtol=1e-4, atol=1e-4
    )
    freq_only = base.with_weights(freq_weight=1.0, als_weight=0.0)
    expected = np.log1p(data.confidence.toarray()) + 1e-6 * base.popularity_
    np.testing.assert_allclose(freq_only.score(batch, items), expected, rtol=1e-5)


def test_blend_cold_member_gets_segment_popularity():
    data = tiny()
    model = make("blend").fit(data)
    cold = Interactions.from_matrix(
        np.zeros((2, data.n_items)), member_ids=["new1", "new2"], segments=["bronze|lapsing", "?"]
    )
    assert model.fallback(cold).tolist() == [SEGMENT, GLOBAL]
    top = model.rank(cold, np.arange(data.n_items), k=1).items[:, 0]
    assert top[0] >= data.n_items // 2  # bronze|lapsing = group B, block B


# ---- contract suite: every model -------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> Interactions:
    return tiny()


@pytest.fixture(scope="module", params=ALL)
def fitted(request, data):
    return request.param, make(request.param).fit(data)


def test_fit_returns_self_and_learned_attributes(data):
    for name in ALL:
        model = make(name)
        assert model.fit(data) is model
        assert model.item_ids_.tolist() == data.item_ids.tolist()


def test_score_shape_and_finite(fitted, data):
    _, model = fitted
    items = np.array([5, 1, 7])
    s = model.score(data.take(np.arange(4)), items)
    assert s.shape == (4, 3) and s.dtype == np.float32 and np.isfinite(s).all()


def test_rank_only_ranks_the_given_items(fitted, data):
    _, model = fitted
    items = np.array([7, 3, 10])
    r = model.rank(data.take(np.arange(data.n_members)), items, k=5)
    assert r.items.shape == (data.n_members, 5)
    assert set(r.items[:, :3].ravel()) <= set(items.tolist())
    assert (r.items[:, 3:] == -1).all()  # fewer candidates than k: padded, never other items
    assert (np.diff(r.scores[:, :3], axis=1) <= 1e-6).all()  # best first


def test_rank_respects_a_per_member_eligibility_mask(fitted, data):
    _, model = fitted
    items = np.arange(data.n_items)
    eligible = np.zeros((2, data.n_items), dtype=bool)
    eligible[0, [1, 9]] = True
    eligible[1, [4]] = True
    r = model.rank(data.take(np.array([0, 20])), items, k=3, eligible=eligible)
    assert set(r.items[0, :2]) == {1, 9} and r.items[0, 2] == -1
    assert r.items[1].tolist() == [4, -1, -1]


def test_rank_agrees_with_score(fitted, data):
    _, model = fitted
    items = np.arange(data.n_items)
    batch = data.take(np.arange(data.n_members))
    r = model.rank(batch, items, k=3)
    s = model.score(batch, items)
    best = np.take_along_axis(s, r.items, axis=1)
    np.testing.assert_allclose(best, np.sort(s, axis=1)[:, ::-1][:, :3], rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_without_pickle(fitted, data, tmp_path):
    name, model = fitted
    path = save_model(model, tmp_path / f"{name}.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    again = load_model(path)
    assert type(again) is type(model)
    batch = data.take(np.arange(data.n_members))
    items = np.arange(data.n_items)
    np.testing.assert_allclose(again.score(batch, items), model.score(batch, items), rtol=1e-6)
    assert again.get_params() == model.get_params()


def test_fallback_labels(fitted, data):
    _, model = fitted
    known = model.fallback(data.take(np.arange(3)), np.arange(data.n_items))
    assert set(known) <= set(FALLBACKS)
    cold = Interactions.from_matrix(np.zeros((1, data.n_items)), member_ids=["stranger"])
    assert model.fallback(cold, np.arange(data.n_items))[0] != PERSONALISED


def test_cold_member_gets_popularity_not_garbage(fitted, data):
    name, model = fitted
    cold = Interactions.from_matrix(np.zeros((1, data.n_items)), member_ids=["stranger"])
    s = model.score(cold, np.arange(data.n_items))
    if name == "blend":  # no segment given: global popularity (ties broken by the blend)
        assert np.argmax(s[0]) == np.argmax(model.popularity_)
    else:
        np.testing.assert_allclose(s[0], model.popularity_, rtol=1e-6)


def test_errors_name_the_problem(fitted, data):
    name, model = fitted
    batch = data.take(np.arange(2))
    with pytest.raises(AffinityInputError, match="items: indices outside"):
        model.rank(batch, np.array([0, 99]), k=2)
    with pytest.raises(AffinityInputError, match="repeated"):
        model.rank(batch, np.array([1, 1]), k=2)
    other = Interactions.from_matrix(np.ones((2, 3)))
    with pytest.raises(AffinityInputError, match=r"batch\.item_ids"):
        model.score(other, np.arange(3))
    with pytest.raises(NotFittedError, match="not fitted"):
        make(name).score(batch, np.arange(3))


def test_deterministic_with_a_seed(data):
    for name in ("als", "bpr"):
        a = make(name).fit(data).score(data.take(np.arange(3)), np.arange(data.n_items))
        b = make(name).fit(data).score(data.take(np.arange(3)), np.arange(data.n_items))
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_fit_rejects_empty_or_negative_matrices():
    with pytest.raises(AffinityInputError, match="no interactions"):
        ALS().fit(Interactions.from_matrix(np.zeros((3, 3))))
    with pytest.raises(AffinityInputError, match=">= 0"):
        Popularity().fit(Interactions.from_matrix(np.array([[1.0, -1.0]])))


def test_unknown_weighting_is_named(data):
    with pytest.raises(AffinityInputError, match="weighting must be one of"):
        ALS(weighting="tfidf").fit(data)


@pytest.mark.parametrize("cls", [BPR, ALS])
def test_fit_leaves_the_callers_matrix_unchanged(cls):
    """implicit's BPR sorts the column indices of the matrix it fits in place; with weighting
    ``none`` that matrix was the task's own, so every later fit and sum over it ran in another
    order (calibration brier moved 3.9e-13 at 1M). The fit now works on a copy."""
    rng = np.random.default_rng(3)
    dense = (rng.random((300, 50)) < 0.2) * rng.integers(1, 5, (300, 50))
    m = sp.csr_matrix(dense.astype(np.float32))
    for r in range(m.shape[0]):  # reverse each row's cells: unsorted column indices
        lo, hi = m.indptr[r], m.indptr[r + 1]
        m.indices[lo:hi] = m.indices[lo:hi][::-1].copy()
        m.data[lo:hi] = m.data[lo:hi][::-1].copy()
    m.has_sorted_indices = False
    assert not m.has_sorted_indices and (np.diff(m.indices[m.indptr[0] : m.indptr[1]]) < 0).any()
    data = Interactions(
        member_ids=np.asarray([f"m{i}" for i in range(300)]),
        item_ids=np.asarray([f"product:i{j}" for j in range(50)]),
        confidence=m,
        count=m.copy(),
        last_days=m.copy(),
        as_of=pd.Timestamp("2024-01-01"),
    )
    indices, values = m.indices.copy(), m.data.copy()
    model = cls(factors=8, iterations=3, weighting="none")
    model.fit(data)
    assert np.array_equal(data.confidence.indices, indices)
    assert np.array_equal(data.confidence.data, values)
    assert (dense > 0).sum() == data.confidence.nnz
