"""The member x item confidence matrix that every affinity model is fitted on.

Items are offers *and* what members buy (product categories, or products), so a member with no
offer history still gets offer affinities through their purchases. An item is a string key
``"<kind>:<id>"``: ``offer:o12``, ``category:coffee``, ``product:12345``.

Confidence of (member, item) is the sum over the member's interactions with the item of
``weight(event) x 0.5 ** (age_days / half_life_days)``, where age is measured back from
``as_of``. Default weights (:class:`InteractionSettings`):

================  ======  ==========================================================
interaction       weight  why
================  ======  ==========================================================
offer redeemed    5.0     the outcome we rank for; the strongest evidence of affinity
offer viewed      1.0     interest, but views follow sends, which the program chose
offer sent        0.0     a send is the program's choice, not the member's
offer dismissed   0.0     (not negative: ALS confidences must be >= 0)
purchase          1.0     per basket containing the item (a basket counts once per item)
================  ======  ==========================================================

Time decay half-life: 90 days. Only purchase lines with a positive amount (and a positive
quantity, when known) count: returns and zero-value lines are not preferences.

Besides ``confidence`` an :class:`Interactions` keeps ``count`` (undecayed number of
interactions: baskets for purchases) and ``last_days`` (days from the latest interaction to
``as_of``, plus one so that "today" is stored as a non-zero), which the buy-again baseline and the
blended model use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from features import schema as S

__all__ = [
    "ITEM_KINDS",
    "AffinityInputError",
    "InteractionSettings",
    "Interactions",
    "build_interactions",
    "item_key",
    "item_kind",
]

log = logging.getLogger(__name__)

OFFER = "offer"
CATEGORY = "category"
PRODUCT = "product"
ITEM_KINDS: tuple[str, ...] = (OFFER, CATEGORY, PRODUCT)
_SEP = ":"


class AffinityInputError(ValueError):
    """Input to an affinity model or to the interaction builder is not usable as given."""


def item_key(kind: str, ids: pd.Series | np.ndarray | str) -> np.ndarray | str:
    """``"<kind>:<id>"`` for one id or an array of ids."""
    if kind not in ITEM_KINDS:
        raise AffinityInputError(f"item kind must be one of {ITEM_KINDS}, got {kind!r}")
    if isinstance(ids, str):
        return f"{kind}{_SEP}{ids}"
    return (kind + _SEP + pd.Series(ids, dtype="string").astype(str)).to_numpy(dtype=str)


def item_kind(item_ids: np.ndarray) -> np.ndarray:
    """The kind part of item keys (``offer``, ``category``, ``product``)."""
    return pd.Series(item_ids, dtype=str).str.split(_SEP, n=1).str[0].to_numpy(dtype=str)


class InteractionSettings(BaseModel):
    """Weights and time decay of the confidence matrix (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redeemed: float = Field(default=5.0, ge=0)
    viewed: float = Field(default=1.0, ge=0)
    sent: float = Field(default=0.0, ge=0)
    dismissed: float = Field(default=0.0, ge=0)
    purchase: float = Field(default=1.0, ge=0)
    half_life_days: float | None = Field(default=90.0, gt=0)
    purchase_items: Literal["category", "product", "none"] = "category"

    def event_weights(self) -> dict[str, float]:
        """Weight per offer event (events not listed weigh 0)."""
        return {
            "redeemed": self.redeemed,
            "viewed": self.viewed,
            "sent": self.sent,
            "dismissed": self.dismissed,
        }


@dataclass(frozen=True)
class Interactions:
    """Member x item matrices as of a time (rows: ``member_ids``, columns: ``item_ids``).

    ``segments`` (optional) is one label per member, e.g. ``"gold|active"``, for the segment
    popularity baseline and the cold-start fallback.
    """

    member_ids: np.ndarray
    item_ids: np.ndarray
    confidence: sp.csr_matrix
    count: sp.csr_matrix
    last_days: sp.csr_matrix
    as_of: pd.Timestamp
    segments: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = (len(self.member_ids), len(self.item_ids))
        for name in ("confidence", "count", "last_days"):
            m = getattr(self, name)
            if m.shape != shape:
                raise AffinityInputError(f"Interactions.{name}: shape {m.shape}, expected {shape}")
        if self.segments is not None and len(self.segments) != shape[0]:
            raise AffinityInputError(
                f"Interactions.segments: {len(self.segments)} labels for {shape[0]} members"
            )

    @classmethod
    def from_matrix(
        cls,
        confidence: np.ndarray | sp.spmatrix,
        member_ids: list[str] | np.ndarray | None = None,
        item_ids: list[str] | np.ndarray | None = None,
        as_of: pd.Timestamp | str = "2024-01-01",
        segments: list[str] | np.ndarray | None = None,
    ) -> Interactions:
        """From a confidence matrix alone: count 1 and last_days 1 wherever confidence > 0.

        Default ids: ``m0, m1, ...`` and ``product:i0, product:i1, ...``.
        """
        conf = sp.csr_matrix(confidence, dtype=np.float32)
        conf.eliminate_zeros()
        n, m = conf.shape
        ones = conf.copy()
        ones.data[:] = 1.0
        return cls(
            member_ids=np.asarray(
                member_ids if member_ids is not None else [f"m{i}" for i in range(n)], dtype=str
            ),
            item_ids=np.asarray(
                item_ids if item_ids is not None else [f"product:i{j}" for j in range(m)],
                dtype=str,
            ),
            confidence=conf,
            count=ones,
            last_days=ones.copy(),
            as_of=pd.Timestamp(as_of),
            segments=None if segments is None else np.asarray(segments, dtype=str),
        )

    @property
    def n_members(self) -> int:
        return len(self.member_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def items_of_kind(self, kind: str) -> np.ndarray:
        """Column indices of the items of one kind."""
        return np.flatnonzero(item_kind(self.item_ids) == kind)

    def member_index(self, member_ids: np.ndarray | list[str]) -> np.ndarray:
        """Row of each member id, -1 where unknown."""
        return pd.Index(self.member_ids).get_indexer(pd.Index(np.asarray(member_ids, dtype=str)))

    def take(self, rows: np.ndarray) -> Interactions:
        """The given rows (member indices); -1 gives an empty row for an unknown member."""
        rows = np.asarray(rows, dtype=np.int64)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        mask = sp.diags(known.astype(np.float32))

        def pick(m: sp.csr_matrix) -> sp.csr_matrix:
            out = (mask @ m[safe]).tocsr()
            out.eliminate_zeros()
            return out

        ids = np.where(known, self.member_ids[safe], "")
        seg = None if self.segments is None else np.where(known, self.segments[safe], "")
        return replace(
            self,
            member_ids=ids,
            confidence=pick(self.confidence),
            count=pick(self.count),
            last_days=pick(self.last_days),
            segments=seg,
        )

    def with_segments(self, segments: np.ndarray | None) -> Interactions:
        """A copy with the given segment labels (one per member)."""
        return replace(self, segments=None if segments is None else np.asarray(segments, str))


def _decay(age_days: np.ndarray, half_life: float | None) -> np.ndarray:
    if half_life is None:
        return np.ones_like(age_days)
    return np.power(0.5, age_days / half_life)


@dataclass(frozen=True)
class _Rows:
    """Interactions as codes: member and item codes into their (small) unique arrays."""

    member_codes: np.ndarray
    members: np.ndarray
    item_codes: np.ndarray
    items: np.ndarray  # item keys
    weight: np.ndarray
    ts: np.ndarray  # datetime64


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=str)


def _offer_rows(events: pd.DataFrame, settings: InteractionSettings) -> _Rows:
    weights = settings.event_weights()
    ev = events.loc[events[S.OFFER_ID].notna(), [S.MEMBER_ID, S.OFFER_ID, S.EVENT, S.TS]]
    ev = ev.loc[ev[S.EVENT].isin([e for e, w in weights.items() if w > 0])]
    m_codes, members = _factorize(ev[S.MEMBER_ID])
    i_codes, offers = _factorize(ev[S.OFFER_ID])
    return _Rows(
        m_codes,
        members,
        i_codes,
        np.asarray(item_key(OFFER, offers), dtype=str),
        ev[S.EVENT].map(weights).to_numpy(dtype=np.float64),
        ev[S.TS].to_numpy(),
    )


def _purchase_rows(tx: pd.DataFrame, settings: InteractionSettings) -> _Rows | None:
    col = {"category": S.CATEGORY, "product": S.SKU}.get(settings.purchase_items)
    if col is None or settings.purchase <= 0 or col not in tx.columns:
        return None
    keep = tx[col].notna() & (tx[S.AMOUNT] > 0)
    if S.QUANTITY in tx.columns:
        keep &= ~(tx[S.QUANTITY] <= 0)  # unknown quantity (null) is kept
    t = tx.loc[keep, [S.MEMBER_ID, S.TRANSACTION_ID, col, S.TS]]
    m_codes, members = _factorize(t[S.MEMBER_ID])
    i_codes, values = _factorize(t[col])
    codes = pd.DataFrame(
        {"m": m_codes, "b": pd.factorize(t[S.TRANSACTION_ID])[0], "i": i_codes, "ts": t[S.TS]}
    )
    # a basket counts once per item, at its latest line (integer keys: cheap on many rows)
    b = codes.groupby(["m", "b", "i"], sort=False)["ts"].max().reset_index()
    return _Rows(
        b["m"].to_numpy(np.int64),
        members,
        b["i"].to_numpy(np.int64),
        np.asarray(item_key(settings.purchase_items, values), dtype=str),
        np.full(len(b), settings.purchase),
        b["ts"].to_numpy(),
    )


def build_interactions(
    tables: dict[str, pd.DataFrame],
    as_of: pd.Timestamp | str,
    settings: InteractionSettings | None = None,
    *,
    start: pd.Timestamp | str | None = None,
    item_ids: np.ndarray | None = None,
    member_ids: np.ndarray | None = None,
) -> Interactions:
    """Confidence matrix from canonical ``offer_events`` and ``transactions`` before ``as_of``.

    ``item_ids`` fixes the columns (a fitted model's items; other items are dropped and
    counted in the log); by default every offer of the ``offers`` table plus every purchased
    category/product. ``member_ids`` fixes the rows (members without interactions get empty
    rows); by default every member with at least one interaction.
    """
    settings = settings or InteractionSettings()
    as_of = pd.Timestamp(as_of)
    for name in ("offer_events", "transactions"):
        if name not in tables:
            raise AffinityInputError(f"tables: missing canonical table '{name}'")
    parts: list[_Rows] = []
    for name, rows_of in (("offer_events", _offer_rows), ("transactions", _purchase_rows)):
        df = tables[name]
        window = df[S.TS] < as_of
        if start is not None:
            window &= df[S.TS] >= pd.Timestamp(start)
        part = rows_of(df.loc[window], settings)
        if part is not None and len(part.weight):
            parts.append(part)

    if item_ids is None:
        offers = tables.get("offers")
        keys = set(item_key(OFFER, offers[S.OFFER_ID].to_numpy())) if offers is not None else set()
        for p in parts:
            keys |= set(p.items[np.unique(p.item_codes)])
        item_ids = np.asarray(sorted(keys), dtype=str)
    item_ids = np.asarray(item_ids, dtype=str)
    if member_ids is None:
        seen: set[str] = set()
        for p in parts:
            seen |= set(p.members[np.unique(p.member_codes)])
        member_ids = np.asarray(sorted(seen), dtype=str)
    member_ids = np.asarray(member_ids, dtype=str)
    item_index, member_index = pd.Index(item_ids), pd.Index(member_ids)
    icol = np.concatenate(
        [item_index.get_indexer(p.items)[p.item_codes] for p in parts] or [np.empty(0, np.int64)]
    )
    irow = np.concatenate(
        [member_index.get_indexer(p.members)[p.member_codes] for p in parts]
        or [np.empty(0, np.int64)]
    )
    weight = np.concatenate([p.weight for p in parts] or [np.empty(0)])
    ts = np.concatenate([p.ts.astype("datetime64[us]") for p in parts] or [np.empty(0, "M8[us]")])
    if (icol < 0).any():
        log.info("%d interactions with items outside the item index dropped", int((icol < 0).sum()))
    ok = (icol >= 0) & (irow >= 0) & (weight > 0)
    irow, icol, weight, ts = irow[ok], icol[ok], weight[ok], ts[ok]
    age_us = as_of.value // 1000 - ts.astype("datetime64[us]").astype(np.int64)
    age = np.maximum(age_us / 86_400e6, 0.0)
    conf = weight * _decay(age, settings.half_life_days)
    shape = (len(member_ids), len(item_ids))

    def matrix(values: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values, (irow, icol)), shape=shape, dtype=np.float64)
        m.sum_duplicates()
        return m.astype(np.float32)

    # most recent interaction per cell (a csr constructor would sum duplicates)
    if len(age):
        cell = irow.astype(np.int64) * shape[1] + icol
        recent = pd.Series(age).groupby(cell, sort=True).min()
        keys = recent.index.to_numpy()
        last = sp.csr_matrix(
            (recent.to_numpy() + 1.0, (keys // shape[1], keys % shape[1])), shape=shape
        ).astype(np.float32)
    else:
        last = sp.csr_matrix(shape, dtype=np.float32)
    return Interactions(
        member_ids=member_ids,
        item_ids=item_ids,
        confidence=matrix(conf),
        count=matrix(np.ones(len(conf))),
        last_days=last,
        as_of=as_of,
    )
