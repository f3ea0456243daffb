"""The shipped combination: ALS scores blended with the member's own frequency and recency.

In grocery-like data a member's own repeat purchases ("buy again") are hard to beat, and ALS
adds what they have not bought yet. The blend is

    score = freq_weight x log1p(confidence) + als_weight x ALS score
            + recency_weight x 0.5 ** ((days since last interaction) / recency_half_life_days)
            + popularity_weight x popularity (share of members with the item)

where ``confidence`` is the time-decayed, weighted interaction total of
:mod:`models.affinity.interactions` (so the frequency term already favours recent activity). The
popularity term carries item-level effects ALS has no bias for (an easy offer is completed more
often by everyone). The weights are chosen on the validation window; the grid includes ALS
alone (``freq_weight=0``), buy-again alone (``als_weight=0``) and popularity alone, so the blend
is only a blend when that wins there.

A member with interactions but none among the candidates is ranked by ALS (personalised through
what they buy); a member with no interactions at all gets segment popularity (tier x lifecycle
stage), or global popularity when the segment is unknown: the fallback chain personalised ->
segment-popular -> global-popular.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.affinity.base import GLOBAL, PERSONALISED, SEGMENT, AffinityModel
from models.affinity.factorization import ALS
from models.affinity.interactions import Interactions
from models.affinity.popularity import SegmentPopularity

__all__ = ["Blend"]


class Blend(AffinityModel):
    """ALS + personal frequency + recency, with a segment -> global popularity fallback."""

    name = "blend"

    def __init__(
        self,
        als: dict[str, Any] | None = None,
        freq_weight: float = 1.0,
        als_weight: float = 1.0,
        recency_weight: float = 0.0,
        popularity_weight: float = 0.0,
        recency_half_life_days: float = 30.0,
        segment_min_members: int = 20,
    ) -> None:
        self.als = als
        self.freq_weight = freq_weight
        self.als_weight = als_weight
        self.recency_weight = recency_weight
        self.popularity_weight = popularity_weight
        self.recency_half_life_days = recency_half_life_days
        self.segment_min_members = segment_min_members

    def _fit(self, data: Interactions) -> None:
        self.als_ = ALS(**(self.als or {})).fit(data)
        self._fit_segments(data)

    def _fit_segments(self, data: Interactions) -> None:
        self.segments_ = None
        if data.segments is not None:
            self.segments_ = SegmentPopularity(self.segment_min_members).fit(data)

    @classmethod
    def from_als(cls, als: ALS, data: Interactions, **params: Any) -> Blend:
        """A blend around an already fitted ALS (trained on ``data``): no second ALS fit."""
        model = cls(als=als.get_params(), **params)
        model.item_ids_ = als.item_ids_
        model.member_ids_ = als.member_ids_
        model.popularity_ = als.popularity_
        model._member_lookup = None
        model.als_ = als
        model._fit_segments(data)
        return model

    def with_weights(self, **params: Any) -> Blend:
        """The same fitted parts with other blend weights (for the validation search)."""
        other = type(self)(**{**self.get_params(), **params})
        other.__dict__.update(
            {k: v for k, v in self.__dict__.items() if k.endswith("_") or k == "_member_lookup"}
        )
        return other

    def components(self, batch: Interactions, items: np.ndarray) -> dict[str, np.ndarray]:
        """The blended signals, each (len(batch) x len(items)): freq, als, recency, popularity."""
        last = batch.last_days[:, items].tocsr()
        last.data = np.power(0.5, (last.data - 1.0) / self.recency_half_life_days)
        return {
            "freq": np.log1p(batch.confidence[:, items].toarray()),
            "als": self.als_._score(batch, items),
            "recency": last.toarray(),
            "popularity": np.broadcast_to(self.popularity_[items], (batch.n_members, len(items))),
        }

    @staticmethod
    def combine(
        parts: dict[str, np.ndarray],
        freq_weight: float,
        als_weight: float,
        recency_weight: float = 0.0,
        popularity_weight: float = 0.0,
    ) -> np.ndarray:
        """The blend formula (module docstring) over precomputed :meth:`components`."""
        # the popularity term always keeps a tiny weight: it breaks ties
        return (
            freq_weight * parts["freq"]
            + als_weight * parts["als"]
            + recency_weight * parts["recency"]
            + (popularity_weight or 1e-6) * parts["popularity"]
        )

    def _score(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        return self.combine(
            self.components(batch, items),
            self.freq_weight,
            self.als_weight,
            self.recency_weight,
            self.popularity_weight,
        )

    def _cold_scores(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        if self.segments_ is not None:
            return self.segments_._score(batch, items)
        return super()._cold_scores(batch, items)

    def fallback(self, batch: Interactions, items: np.ndarray | None = None) -> np.ndarray:
        self._check_call(batch, items)
        cold = self._cold_rows(batch)
        seg = (
            self.segments_.segment_rows(batch) >= 0
            if self.segments_ is not None
            else np.zeros(batch.n_members, dtype=bool)
        )
        return np.where(~cold, PERSONALISED, np.where(seg, SEGMENT, GLOBAL))

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {f"als.{k}": v for k, v in self.als_.to_arrays().items()}
        if self.segments_ is not None:
            out.update({f"seg.{k}": v for k, v in self.segments_.to_arrays().items()})
        return out

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.als_ = ALS.from_arrays({k[4:]: v for k, v in arrays.items() if k.startswith("als.")})
        seg = {k[4:]: v for k, v in arrays.items() if k.startswith("seg.")}
        self.segments_ = SegmentPopularity.from_arrays(seg) if seg else None
