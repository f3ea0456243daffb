"""The one interface every affinity model implements, and the shared top-k selection.

A model is fitted on an :class:`~models.affinity.interactions.Interactions` (the training
confidence matrix) and then scores or ranks a *batch*: another ``Interactions`` over the same
items whose rows are the members to serve. A row whose member id the model was trained on uses
the trained state; a row with an unknown member id (or an empty id, see
:func:`models.affinity.foldin.as_new_members`) is scored from the row's own interactions
(fold-in) where the model can, and members with no interactions at all get the model's cold-start
fallback. ``rank(batch, items, k)`` ranks only ``items`` (the eligible offers): nothing is
filtered after selection.

Every model reports which fallback served each member: ``personalised``, ``segment_popular``
or ``global_popular``.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models.affinity.interactions import AffinityInputError, Interactions

__all__ = [
    "FALLBACKS",
    "GLOBAL",
    "PERSONALISED",
    "SEGMENT",
    "AffinityModel",
    "NotFittedError",
    "Ranking",
    "top_k",
]

PERSONALISED = "personalised"
SEGMENT = "segment_popular"
GLOBAL = "global_popular"
FALLBACKS: tuple[str, ...] = (PERSONALISED, SEGMENT, GLOBAL)


class NotFittedError(AffinityInputError):
    """The model is used before ``fit`` (or loading)."""


@dataclass(frozen=True)
class Ranking:
    """Top-k per member: item indices (into the model's items; -1 pads) and their scores."""

    items: np.ndarray
    scores: np.ndarray


def top_k(
    scores: np.ndarray, items: np.ndarray, k: int, eligible: np.ndarray | None = None
) -> Ranking:
    """Best ``k`` of ``items`` per row of ``scores`` (n x len(items)), best first.

    ``eligible`` (bool, same shape) excludes pairs *before* selection, so a member gets
    ``min(k, number eligible)`` items; the rest of the row is padded with -1.
    """
    if scores.shape[1] != len(items):
        raise AffinityInputError(f"scores have {scores.shape[1]} columns for {len(items)} items")
    if k < 1:
        raise AffinityInputError(f"k must be >= 1, got {k}")
    s = scores.astype(np.float32, copy=True)
    if eligible is not None:
        if eligible.shape != scores.shape:
            raise AffinityInputError(f"eligible has shape {eligible.shape}, expected {s.shape}")
        s[~eligible] = -np.inf
    kk = min(k, s.shape[1])
    if kk == 0:
        empty = np.full((s.shape[0], k), -1, dtype=np.int64)
        return Ranking(empty, np.full((s.shape[0], k), -np.inf, dtype=np.float32))
    part = (
        np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        if kk < s.shape[1]
        else (np.tile(np.arange(s.shape[1]), (s.shape[0], 1)))
    )
    part_scores = np.take_along_axis(s, part, axis=1)
    # stable order: score descending, then candidate position ascending
    order = np.lexsort((part, -part_scores), axis=1)
    cols = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    out = np.where(np.isfinite(best), items[cols], -1)
    pad = k - kk
    if pad:
        out = np.hstack([out, np.full((s.shape[0], pad), -1, dtype=np.int64)])
        best = np.hstack([best, np.full((s.shape[0], pad), -np.inf)])
    return Ranking(out.astype(np.int64), best.astype(np.float32))


class AffinityModel(ABC):
    """Fit on a confidence matrix; score and rank candidate items for a batch of members.

    Subclasses implement ``_fit`` and ``_score`` (and ``_arrays``/``_set_arrays`` to be saved).
    Learned attributes end in ``_``.
    """

    name: ClassVar[str]
    uses_history: ClassVar[bool] = True
    _member_lookup: pd.Index | None = None  # rows without interactions get the cold-start scores

    # ---- parameters (scikit-learn style) ------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters and their current values."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- fitting --------------------------------------------------------------------------------
    def fit(self, data: Interactions) -> Self:
        """Validate the training matrix, learn, return self."""
        _check_training(data)
        self.item_ids_ = np.asarray(data.item_ids, dtype=str)
        self.member_ids_ = np.asarray(data.member_ids, dtype=str)
        self.popularity_ = _popularity(data)
        self._member_lookup = None
        self._fit(data)
        return self

    @abstractmethod
    def _fit(self, data: Interactions) -> None: ...

    @abstractmethod
    def _score(self, batch: Interactions, items: np.ndarray) -> np.ndarray: ...

    # ---- scoring --------------------------------------------------------------------------------
    def score(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        """Scores (len(batch) x len(items), float32); higher is better."""
        items = self._check_call(batch, items)
        scores = np.asarray(self._score(batch, items), dtype=np.float32)
        if self.uses_history:
            cold = self._cold_rows(batch)
            if cold.any():
                scores[cold] = self._cold_scores(batch.take(np.flatnonzero(cold)), items)
        return scores

    def rank(
        self,
        batch: Interactions,
        items: np.ndarray,
        k: int,
        eligible: np.ndarray | None = None,
    ) -> Ranking:
        """Top ``k`` of ``items`` per member (``eligible``: per-member bool mask over items)."""
        return top_k(self.score(batch, items), np.asarray(items, dtype=np.int64), k, eligible)

    def fallback(self, batch: Interactions, items: np.ndarray | None = None) -> np.ndarray:
        """Which fallback serves each member of ``batch`` (see module docstring)."""
        self._check_call(batch, items)
        cold = self._cold_rows(batch)
        return np.where(cold, GLOBAL, PERSONALISED)

    def _cold_rows(self, batch: Interactions) -> np.ndarray:
        """Members the model knows nothing about: unknown id and an empty row."""
        return (np.diff(batch.confidence.indptr) == 0) & (self._known_rows(batch) < 0)

    def _cold_scores(self, batch: Interactions, items: np.ndarray) -> np.ndarray:
        """Scores of members without any interaction: global popularity."""
        return np.tile(self.popularity_[items], (batch.n_members, 1))

    # ---- helpers for subclasses -----------------------------------------------------------------
    def _known_rows(self, batch: Interactions) -> np.ndarray:
        """Training row of each batch member, -1 for unknown or blank ids."""
        lookup = self._member_lookup
        if lookup is None:
            lookup = self._member_lookup = pd.Index(self.member_ids_)
        return lookup.get_indexer(pd.Index(batch.member_ids))

    def _check_call(self, batch: Interactions, items: np.ndarray | None) -> np.ndarray:
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load it")
        if len(batch.item_ids) != len(self.item_ids_) or not np.array_equal(
            batch.item_ids, self.item_ids_
        ):
            raise AffinityInputError(
                f"batch.item_ids: {len(batch.item_ids)} items do not match the model's "
                f"{len(self.item_ids_)} (build the batch with item_ids=model.item_ids_)"
            )
        if items is None:
            return np.arange(len(self.item_ids_))
        items = np.asarray(items)
        if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer):
            raise AffinityInputError(f"items must be a 1-d integer array, got {items.dtype}")
        if len(items) and (items.min() < 0 or items.max() >= len(self.item_ids_)):
            bad = items[(items < 0) | (items >= len(self.item_ids_))][:5]
            raise AffinityInputError(f"items: indices outside 0..{len(self.item_ids_) - 1}: {bad}")
        if len(np.unique(items)) != len(items):
            raise AffinityInputError("items: repeated item indices")
        return items.astype(np.int64)

    # ---- persistence (plain arrays) -------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the fitted model, as plain (non-object) arrays."""
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: nothing to save")
        out = {
            "model_name": np.asarray(self.name),
            "params": np.asarray(json.dumps(self.get_params(), sort_keys=True)),
            "item_ids": self.item_ids_,
            "member_ids": self.member_ids_,
            "popularity": self.popularity_,
        }
        out.update({f"m.{k}": v for k, v in self._arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Self:
        """Rebuild a model saved by :meth:`to_arrays`."""
        model = cls(**json.loads(str(arrays["params"])))
        model.item_ids_ = np.asarray(arrays["item_ids"], dtype=str)
        model.member_ids_ = np.asarray(arrays["member_ids"], dtype=str)
        model.popularity_ = np.asarray(arrays["popularity"], dtype=np.float32)
        model._member_lookup = None
        model._set_arrays({k[2:]: v for k, v in arrays.items() if k.startswith("m.")})
        return model

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        return None


def _check_training(data: Interactions) -> None:
    if data.n_members == 0 or data.n_items == 0:
        raise AffinityInputError(
            f"training matrix is empty ({data.n_members} members x {data.n_items} items)"
        )
    if data.confidence.nnz == 0:
        raise AffinityInputError("training matrix has no interactions (confidence.nnz == 0)")
    values = data.confidence.data
    if not np.isfinite(values).all() or (values < 0).any():
        raise AffinityInputError("confidence must be finite and >= 0")


def _popularity(data: Interactions) -> np.ndarray:
    """Share of members with the item, plus a tiny tie-break by total confidence."""
    n = max(data.n_members, 1)
    members = np.bincount(data.confidence.indices, minlength=data.n_items) / n
    conf = np.asarray(data.confidence.sum(axis=0)).ravel()
    tie = conf / (conf.max() + 1.0) * (0.5 / n)  # below one member's worth
    return (members + tie).astype(np.float32)
