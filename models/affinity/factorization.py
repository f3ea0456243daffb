"""Matrix factorisation models on top of ``implicit``: ALS and BPR.

Both rank with implicit's ``recommend(..., items=...)``: only the candidate items are ranked.
Members the model was not trained on are folded in from their batch row: ALS solves their
factors exactly (``recalculate_user``, the same least-squares step as training); BPR has no
exact fold-in, so such a member's vector is the confidence-weighted mean of the vectors of the
items they interacted with.

BLAS runs single-threaded during fitting (``threadpoolctl``): implicit's own threads do the
work, and OpenBLAS threads on top of them slow ALS down badly.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from models.affinity.base import AffinityModel, Ranking, top_k
from models.affinity.interactions import AffinityInputError, Interactions
from models.affinity.weighting import WEIGHTINGS, Bm25, weigh

__all__ = ["ALS", "BPR"]

log = logging.getLogger(__name__)


class _Factorization(AffinityModel):
    """Shared scoring of factor models: trained vectors for known members, fold-in otherwise."""

    weighting: str
    num_threads: int
    bm25_k1: float
    bm25_b: float
    _implicit_cls: ClassVar[Any]

    def _weights(self, data: Interactions) -> sp.csr_matrix:
        if self.weighting not in WEIGHTINGS:
            raise AffinityInputError(
                f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}"
            )
        self.bm25_ = Bm25.fit(data.confidence, self.bm25_k1, self.bm25_b)
        # a copy: implicit's BPR sorts the indices of its input in place, and the task's
        # matrix is shared by every later fit and sum (one float32 copy: nnz x 8 bytes)
        return weigh(data.confidence, self.weighting, self.bm25_, copy=True)

    def _fit(self, data: Interactions) -> None:
        x = self._weights(data)
        with threadpool_limits(limits=1, user_api="blas"):
            model = self._new_implicit()
            model.fit(x, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._model = model

    def _new_implicit(self) -> Any:
        raise NotImplementedError

    def _implicit(self) -> Any:
        """The implicit model holding our factors (rebuilt after loading)."""
        if getattr(self, "_model", None) is None:
            with threadpool_limits(limits=1, user_api="blas"):
                model = self._new_implicit()
            model.user_factors = self.user_factors_
            model.item_factors = self.item_factors_
            self._model = model
        return self._model

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def user_vectors(self, batch: Interactions) -> np.ndarray:
        """Factors of each batch member: trained when known, folded in from the row otherwise."""
        known = self._known_rows(batch)
        out = np.zeros((batch.n_members, self.user_factors_.shape[1]), dtype=np.float32)
        out[known >= 0] = self.user_factors_[known[known >= 0]]
        new = np.flatnonzero(known < 0)
        if len(new):
            out[new] = self._fold_in(batch.confidence[new])
        return out

    def _score(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        return self.user_vectors(batch) @ self.item_factors_[items].T

    def rank(
        self,
        batch: Interactions,
        items: np.ndarray,
        k: int,
        eligible: np.ndarray | None = None,
    ) -> Ranking:
        """Top ``k`` via implicit's ``recommend(items=...)``; a per-member mask scores densely."""
        if eligible is not None:
            return super().rank(batch, items, k, eligible)
        items = self._check_call(batch, items)
        n = batch.n_members
        out = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if len(items) == 0 or n == 0:
            return Ranking(out, scores)
        known = self._known_rows(batch)
        cold = self._cold_rows(batch)
        warm = ~cold
        model = self._implicit()
        for rows, vectors in (
            (np.flatnonzero(warm & (known >= 0)), None),
            (np.flatnonzero(warm & (known < 0)), "fold"),
        ):
            if not len(rows):
                continue
            if vectors is None:
                ids, sc = model.recommend(
                    known[rows], None, N=k, items=items, filter_already_liked_items=False
                )
            else:
                ids, sc = self._recommend_new(model, batch.confidence[rows], items, k)
            out[rows, : ids.shape[1]] = ids
            scores[rows, : ids.shape[1]] = sc
        if cold.any():
            rows = np.flatnonzero(cold)
            cold_rank = top_k(self._cold_scores(batch.take(rows), items), items, k)
            out[rows], scores[rows] = cold_rank.items, cold_rank.scores
        return Ranking(out, scores)

    def _recommend_new(
        self, model: Any, rows: sp.csr_matrix, items: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        vec = self._fold_in(rows)
        ranked = top_k(vec @ self.item_factors_[items].T, items, k)
        kk = min(k, len(items))
        return ranked.items[:, :kk], ranked.scores[:, :kk]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "bm25_idf": self.bm25_.idf,
            "bm25_avg_length": np.asarray(self.bm25_.avg_length),
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = np.asarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.asarray(arrays["item_factors"], dtype=np.float32)
        self.bm25_ = Bm25(
            self.bm25_k1,
            self.bm25_b,
            np.asarray(arrays["bm25_idf"], dtype=np.float32),
            float(arrays["bm25_avg_length"]),
        )
        self._model = None


class ALS(_Factorization):
    """Implicit-feedback ALS (Hu, Koren, Volinsky) via ``implicit``; exact fold-in."""

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 1.0,
        iterations: int = 15,
        weighting: str = "bm25",
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.random_state = random_state
        self.num_threads = num_threads

    def _new_implicit(self) -> Any:
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """Exact ALS user step for rows of (unweighted) confidence."""
        x = weigh(rows, self.weighting, self.bm25_)
        with threadpool_limits(limits=1, user_api="blas"):
            vec = self._implicit().recalculate_user(np.arange(x.shape[0]), x)
        return np.asarray(vec, dtype=np.float32).reshape(x.shape[0], -1)

    def _recommend_new(
        self, model: Any, rows: sp.csr_matrix, items: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        x = weigh(rows, self.weighting, self.bm25_)
        with threadpool_limits(limits=1, user_api="blas"):
            ids, sc = model.recommend(
                np.arange(x.shape[0]),
                x,
                N=k,
                items=items,
                recalculate_user=True,
                filter_already_liked_items=False,
            )
        return np.atleast_2d(ids), np.atleast_2d(sc)


class BPR(_Factorization):
    """Bayesian personalised ranking via ``implicit`` (interactions count as positives)."""

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        weighting: str = "none",
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.random_state = random_state
        self.num_threads = num_threads

    def _new_implicit(self) -> Any:
        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """Confidence-weighted mean of the member's item vectors; the bias column stays 1."""
        x = sp.csr_matrix(rows, dtype=np.float32)
        totals = np.asarray(x.sum(axis=1)).ravel()
        vec = np.asarray(x @ self.item_factors_) / np.maximum(totals, 1e-12)[:, None]
        vec[:, -1] = 1.0
        return vec.astype(np.float32)
