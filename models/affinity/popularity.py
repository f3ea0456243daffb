"""The baselines every report shows: global, segment and personal popularity ("buy again")."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.affinity.base import GLOBAL, PERSONALISED, SEGMENT, AffinityModel
from models.affinity.interactions import AffinityInputError, Interactions

__all__ = ["PersonalPopularity", "Popularity", "SegmentPopularity"]


class Popularity(AffinityModel):
    """Everyone gets the same ranking: share of training members who interacted with the item."""

    name = "popularity"
    uses_history = False

    def __init__(self) -> None:
        pass

    def _fit(self, data: Interactions) -> None:
        return None

    def _score(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        return np.tile(self.popularity_[items], (batch.n_members, 1))

    def fallback(self, batch: Interactions, items: np.ndarray | None = None) -> np.ndarray:
        self._check_call(batch, items)
        return np.full(batch.n_members, GLOBAL)


class SegmentPopularity(AffinityModel):
    """Popularity within the member's segment (e.g. tier x lifecycle stage).

    Segments with fewer than ``min_members`` training members, unknown segments and members
    without a segment fall back to global popularity.
    """

    name = "segment_popularity"
    uses_history = False

    def __init__(self, min_members: int = 20) -> None:
        self.min_members = min_members

    def _fit(self, data: Interactions) -> None:
        if data.segments is None:
            raise AffinityInputError(
                "Interactions.segments: segment popularity needs one segment label per member"
            )
        labels, codes = np.unique(np.asarray(data.segments, dtype=str), return_inverse=True)
        onehot = sp.csr_matrix(
            (np.ones(data.n_members, dtype=np.float32), (codes, np.arange(data.n_members))),
            shape=(len(labels), data.n_members),
        )
        has = sp.csr_matrix(data.confidence, copy=True)
        has.data[:] = 1.0
        size = np.bincount(codes, minlength=len(labels)).astype(np.float32)
        share = np.asarray((onehot @ has).todense()) / size[:, None]
        keep = (size >= self.min_members) & (labels != "")
        self.segment_labels_ = labels[keep]
        self.segment_popularity_ = share[keep].astype(np.float32)

    def segment_rows(self, batch: Interactions) -> np.ndarray:
        """Row of ``segment_popularity_`` for each batch member, -1 for global fallback."""
        if batch.segments is None or len(self.segment_labels_) == 0:
            return np.full(batch.n_members, -1)
        pos = np.searchsorted(self.segment_labels_, batch.segments)
        pos = np.clip(pos, 0, len(self.segment_labels_) - 1)
        return np.where(self.segment_labels_[pos] == batch.segments, pos, -1)

    def _score(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        rows = self.segment_rows(batch)
        tie = 1e-3 * self.popularity_[items]
        out = np.tile(self.popularity_[items], (batch.n_members, 1))
        seg = rows >= 0
        out[seg] = self.segment_popularity_[rows[seg]][:, items] + tie
        return out

    def fallback(self, batch: Interactions, items: np.ndarray | None = None) -> np.ndarray:
        self._check_call(batch, items)
        return np.where(self.segment_rows(batch) >= 0, SEGMENT, GLOBAL)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "segment_labels": self.segment_labels_,
            "segment_popularity": self.segment_popularity_,
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.segment_labels_ = np.asarray(arrays["segment_labels"], dtype=str)
        self.segment_popularity_ = np.asarray(arrays["segment_popularity"], dtype=np.float32)


class PersonalPopularity(AffinityModel):
    """ "Buy again": the member's own most frequent items (ties: most recent, then popular).

    A member with no history among the candidate items gets global popularity.
    """

    name = "personal_popularity"

    def __init__(self) -> None:
        pass

    def _fit(self, data: Interactions) -> None:
        return None

    def _score(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        count = batch.count[:, items].toarray()
        last = batch.last_days[:, items].tocsr()
        last.data = 1.0 / last.data  # last_days >= 1, so this lies in (0, 1]
        return count + 1e-3 * last.toarray() + 1e-6 * self.popularity_[items]

    def fallback(self, batch: Interactions, items: np.ndarray | None = None) -> np.ndarray:
        items = self._check_call(batch, items)
        has = np.diff(batch.count[:, items].tocsr().indptr) > 0
        return np.where(has, PERSONALISED, GLOBAL)
