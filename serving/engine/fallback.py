"""The named fallback chain for members without a model row.

A member with a model row is served ``personalised``. Otherwise the chain of
``EngineSettings.fallback_chain`` is tried in order (default: ``segment_popular`` then
``global_popular``): the first table that has a row for the member fills its P(redeem) and
incremental spend, and the decision records that name. The tables are plain arrays
(:class:`FallbackTables`), built from the models' own predictions over the members they know
(:meth:`FallbackTables.from_scores`) or handed over by the model adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from serving.engine.errors import EngineInputError
from serving.engine.settings import GLOBAL_POPULAR, PERSONALISED, SEGMENT_POPULAR

__all__ = ["FALLBACKS", "FallbackTables", "fill"]

FALLBACKS: tuple[str, ...] = (PERSONALISED, SEGMENT_POPULAR, GLOBAL_POPULAR)


@dataclass(frozen=True)
class FallbackTables:
    """Per-segment and global P(redeem) and incremental spend per offer."""

    segments: tuple[str, ...]
    segment_p: np.ndarray  # (len(segments), m)
    segment_s: np.ndarray  # (len(segments), m)
    global_p: np.ndarray  # (m,)
    global_s: np.ndarray  # (m,)

    @cached_property
    def segment_row(self) -> dict[str, int]:
        """Row of each segment in ``segment_p`` / ``segment_s``."""
        return {s: r for r, s in enumerate(self.segments)}

    @classmethod
    def from_scores(
        cls,
        p_redeem: np.ndarray,
        incremental_spend: np.ndarray,
        segments: np.ndarray,
        has_row: np.ndarray | None = None,
        min_members: int = 20,
    ) -> FallbackTables:
        """Means over the members with a model row, per segment (segments with at least
        ``min_members`` such members) and overall."""
        p = np.asarray(p_redeem, dtype=np.float64)
        s = np.asarray(incremental_spend, dtype=np.float64)
        known = np.ones(len(p), dtype=bool) if has_row is None else np.asarray(has_row, bool)
        if not known.any():
            raise EngineInputError("fallback tables: no member with a model row to average")
        seg = pd.Series(np.asarray(segments, dtype=object)[known])
        codes, uniques = pd.factorize(seg, use_na_sentinel=True)
        ok = codes >= 0
        counts = np.bincount(codes[ok], minlength=len(uniques))
        sums_p = np.zeros((len(uniques), p.shape[1]))
        sums_s = np.zeros_like(sums_p)
        np.add.at(sums_p, codes[ok], p[known][ok])
        np.add.at(sums_s, codes[ok], s[known][ok])
        keep = counts >= min_members
        denom = np.maximum(counts[keep], 1)[:, None]
        return cls(
            segments=tuple(str(u) for u in np.asarray(uniques)[keep]),
            segment_p=sums_p[keep] / denom,
            segment_s=sums_s[keep] / denom,
            global_p=p[known].mean(axis=0),
            global_s=s[known].mean(axis=0),
        )


def fill(
    p_redeem: np.ndarray,
    incremental_spend: np.ndarray,
    has_row: np.ndarray,
    segments: np.ndarray,
    tables: FallbackTables | None,
    chain: tuple[str, ...],
    served: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(redeem), incremental spend, fallback name per member) with missing rows filled.

    ``served``: the name the models' own fallback chain gave each model row (default
    ``personalised``). Raises when a member without a model row is not covered by any
    fallback of the chain.
    """
    p = np.array(p_redeem, dtype=np.float32)
    s = np.array(incremental_spend, dtype=np.float32)
    own = PERSONALISED if served is None else np.asarray(served, dtype=object)
    name = np.where(has_row, own, "").astype(object)
    todo = ~np.asarray(has_row, dtype=bool)
    if not todo.any():
        return p, s, name
    if tables is None:
        raise EngineInputError(
            f"score inputs: {int(todo.sum())} member(s) without a model row and no fallback tables"
        )
    for step in chain:
        if not todo.any():
            break
        if step == SEGMENT_POPULAR:
            # look up only the members still to fill (few: cold starts), by dict
            idx = np.flatnonzero(todo)
            seg = np.asarray(segments, dtype=object)[idx]
            row = np.array([tables.segment_row.get(x, -1) for x in seg], dtype=np.int64)
            found = row >= 0
            hit = np.zeros_like(todo)
            hit[idx[found]] = True
            p[idx[found]] = tables.segment_p[row[found]]
            s[idx[found]] = tables.segment_s[row[found]]
        else:  # GLOBAL_POPULAR
            hit = todo.copy()
            p[hit] = tables.global_p[None, :]
            s[hit] = tables.global_s[None, :]
        name[hit] = step
        todo &= ~hit
    if todo.any():
        first = np.flatnonzero(todo)[0]
        raise EngineInputError(
            f"fallback_chain {list(chain)}: {int(todo.sum())} member(s) not covered, e.g. row "
            f"{first} (segment {segments[first]!r}); end the chain with {GLOBAL_POPULAR!r}"
        )
    return p, s, name
