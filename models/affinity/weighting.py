"""Confidence re-weighting before matrix factorisation (BM25), usable on new rows too.

BM25 over the member x item matrix (a member is a "document", items are its "terms"): each
value saturates (``K1``), is normalised by the member's total relative to the average member
(``B``) and multiplied by the item's inverse document frequency, so items everybody has say
less about a member. The idf per item and the average member total are learned at fit time and
kept, so a member folded in at request time is weighted exactly like a training row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.affinity.interactions import AffinityInputError

__all__ = ["WEIGHTINGS", "Bm25", "weigh"]

WEIGHTINGS: tuple[str, ...] = ("none", "bm25")


@dataclass(frozen=True)
class Bm25:
    """Learned BM25 state: idf per item and the average member total."""

    k1: float
    b: float
    idf: np.ndarray
    avg_length: float

    @classmethod
    def fit(cls, user_items: sp.csr_matrix, k1: float = 100.0, b: float = 0.8) -> Bm25:
        """Item document frequencies and the average member total of the training matrix."""
        n = max(user_items.shape[0], 1)
        df = np.bincount(user_items.indices, minlength=user_items.shape[1])
        idf = np.log(n) - np.log1p(df)
        # an item (almost) every member has would get idf <= 0 and vanish: floor it
        idf = np.maximum(idf, 0.01).astype(np.float32)
        totals = np.asarray(user_items.sum(axis=1)).ravel()
        avg = float(totals.mean()) if totals.size and totals.mean() > 0 else 1.0
        return cls(k1, b, idf, avg)

    def transform(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """Re-weighted copy of ``user_items`` (members x items, same items as at fit)."""
        if user_items.shape[1] != len(self.idf):
            raise AffinityInputError(
                f"bm25: matrix has {user_items.shape[1]} items, fitted on {len(self.idf)}"
            )
        x = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        totals = np.asarray(x.sum(axis=1)).ravel()
        norm = (1.0 - self.b) + self.b * totals / self.avg_length
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        x.data = (
            x.data * (self.k1 + 1.0) / (self.k1 * norm[rows] + x.data) * self.idf[x.indices]
        ).astype(np.float32)
        return x


def weigh(
    user_items: sp.csr_matrix, weighting: str, state: Bm25 | None, copy: bool = False
) -> sp.csr_matrix:
    """Apply a fitted weighting to rows of a confidence matrix. With weighting ``none`` the
    result shares the caller's arrays unless ``copy``: fits pass ``copy=True`` because
    implicit's BPR sorts the column indices of the matrix it is given in place (bm25 always
    returns a new matrix)."""
    if weighting == "none":
        return sp.csr_matrix(user_items, dtype=np.float32, copy=copy)
    if weighting == "bm25":
        if state is None:
            raise AffinityInputError("bm25 weighting used before it was fitted")
        return state.transform(user_items)
    raise AffinityInputError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
