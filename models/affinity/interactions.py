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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, overload

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from features.sources import schema as S

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


@overload
def item_key(kind: str, ids: str) -> str: ...
@overload
def item_key(kind: str, ids: pd.Series | np.ndarray) -> np.ndarray: ...
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


_DAY_S = 86_400.0
_CELL_COLUMNS = ("member_id", "item", "conf", "cnt", "age")


def _table(tables: Any, name: str) -> ir.Table | None:
    """``tables[name]`` as an Ibis table (a pandas frame becomes a memtable), None if absent."""
    try:
        t = tables[name]
    except (KeyError, AttributeError):
        return None
    if t is None:
        return None
    if isinstance(t, pd.DataFrame):
        return ibis.memtable(t)
    return t


def _age_days(ts: ir.TimestampValue, as_of: pd.Timestamp) -> ir.FloatingValue:
    """Days from ``ts`` to ``as_of`` (whole epoch seconds, as in the feature pipeline)."""
    age_s = int(as_of.timestamp()) - ts.epoch_seconds().cast("int64")
    return ibis.greatest(age_s.cast("float64") / _DAY_S, 0.0)


def _decayed(weight: ir.FloatingValue, age: ir.FloatingValue, half_life: float | None):
    if half_life is None:
        return weight
    return weight * ibis.literal(0.5).pow(age / float(half_life))


def _window(t: ir.Table, as_of: pd.Timestamp, start: pd.Timestamp | None) -> ir.Table:
    when = ibis.literal(as_of.to_pydatetime(), type="timestamp")
    t = t.filter(t[S.TS] < when)
    if start is not None:
        t = t.filter(t[S.TS] >= ibis.literal(start.to_pydatetime(), type="timestamp"))
    return t


def _offer_cells(
    ev: ir.Table, as_of: pd.Timestamp, start: pd.Timestamp | None, settings: InteractionSettings
) -> ir.Table | None:
    """One row per (member, offer): decayed weighted sum, event count, youngest age."""
    weights = {e: w for e, w in settings.event_weights().items() if w > 0}
    if not weights:
        return None
    ev = _window(ev, as_of, start)
    ev = ev.filter(ev[S.OFFER_ID].notnull(), ev[S.EVENT].isin(list(weights)))
    w = ibis.cases(*[(ev[S.EVENT] == e, float(v)) for e, v in weights.items()], else_=0.0)
    age = _age_days(ev[S.TS], as_of)
    x = ev.select(
        member_id=ev[S.MEMBER_ID].cast("string"),
        item=ev[S.OFFER_ID].cast("string"),
        conf=_decayed(w, age, settings.half_life_days),
        age=age,
    )
    return x.group_by(["member_id", "item"]).aggregate(
        conf=x.conf.sum(), cnt=x.conf.count(), age=x.age.min()
    )


def _purchase_cells(
    tx: ir.Table, as_of: pd.Timestamp, start: pd.Timestamp | None, settings: InteractionSettings
) -> ir.Table | None:
    """One row per (member, category/product): baskets counted once, at their latest line."""
    col = {"category": S.CATEGORY, "product": S.SKU}.get(settings.purchase_items)
    if col is None or settings.purchase <= 0 or col not in tx.columns:
        return None
    t = _window(tx, as_of, start)
    t = t.filter(t[col].notnull(), t[S.AMOUNT] > 0)
    if S.QUANTITY in t.columns:
        t = t.filter(t[S.QUANTITY].isnull() | (t[S.QUANTITY] > 0))  # unknown quantity is kept
    baskets = t.group_by(
        member_id=t[S.MEMBER_ID].cast("string"),
        basket=t[S.TRANSACTION_ID].cast("string"),
        item=t[col].cast("string"),
    ).aggregate(ts=t[S.TS].max())
    age = _age_days(baskets.ts, as_of)
    x = baskets.select(
        "member_id",
        "item",
        conf=_decayed(ibis.literal(float(settings.purchase)), age, settings.half_life_days),
        age=age,
    )
    return x.group_by(["member_id", "item"]).aggregate(
        conf=x.conf.sum(), cnt=x.conf.count(), age=x.age.min()
    )


@dataclass(frozen=True)
class _Cells:
    """Aggregated cells of one item kind, as Arrow-decoded codes into small unique arrays."""

    kind: str
    member_codes: np.ndarray
    members: np.ndarray  # unique member ids (str)
    item_codes: np.ndarray
    items: np.ndarray  # unique item keys "<kind>:<id>"
    conf: np.ndarray
    cnt: np.ndarray
    age: np.ndarray


def _fetch(expr: ir.Table, kind: str) -> _Cells:
    """Run ``expr`` (columns ``_CELL_COLUMNS``) into Arrow and dictionary-encode the ids, so no
    Python string is made per cell."""
    arrow = expr.select(*_CELL_COLUMNS).to_pyarrow()
    m = pc.dictionary_encode(arrow.column("member_id")).combine_chunks()
    i = pc.dictionary_encode(arrow.column("item")).combine_chunks()

    def num(name: str, dtype: Any) -> np.ndarray:
        return arrow.column(name).to_numpy().astype(dtype, copy=False)

    return _Cells(
        kind,
        m.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        np.asarray(m.dictionary.to_numpy(zero_copy_only=False), dtype=str),
        i.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        np.asarray(item_key(kind, i.dictionary.to_numpy(zero_copy_only=False)), dtype=str),
        num("conf", np.float64),
        num("cnt", np.float64),
        num("age", np.float64),
    )


def build_interactions(
    tables: Mapping[str, Any],
    as_of: pd.Timestamp | str,
    settings: InteractionSettings | None = None,
    *,
    start: pd.Timestamp | str | None = None,
    item_ids: np.ndarray | None = None,
    member_ids: np.ndarray | None = None,
) -> Interactions:
    """Confidence matrix from canonical ``offer_events`` and ``transactions`` before ``as_of``.

    ``tables`` maps table names to pandas frames or to Ibis tables (e.g. ``FeatureTables`` on
    DuckDB or Spark): the cells are aggregated by the backend (one row per member and item)
    and only those rows come back, as Arrow, so a 32M-line transactions table never becomes a
    pandas frame. Ages are in whole epoch seconds, as in the feature pipeline.

    ``item_ids`` fixes the columns (a fitted model's items; other items are dropped and
    counted in the log); by default every offer of the ``offers`` table plus every purchased
    category/product. ``member_ids`` fixes the rows (members without interactions get empty
    rows); by default every member with at least one interaction.
    """
    settings = settings or InteractionSettings()
    as_of = pd.Timestamp(as_of)
    begin = None if start is None else pd.Timestamp(start)
    ev, tx = _table(tables, "offer_events"), _table(tables, "transactions")
    for name, t in (("offer_events", ev), ("transactions", tx)):
        if t is None:
            raise AffinityInputError(f"tables: missing canonical table '{name}'")
    parts: list[_Cells] = []
    for kind, expr in (
        (OFFER, _offer_cells(ev, as_of, begin, settings)),
        (settings.purchase_items, _purchase_cells(tx, as_of, begin, settings)),
    ):
        if expr is not None:
            part = _fetch(expr, kind)
            if len(part.conf):
                parts.append(part)

    if item_ids is None:
        offers = _table(tables, "offers")
        keys: set[str] = set()
        if offers is not None:
            ids = offers.select(offers[S.OFFER_ID].cast("string")).to_pyarrow().column(0)
            keys |= set(item_key(OFFER, ids.to_numpy(zero_copy_only=False)))
        for p in parts:
            keys |= set(p.items.tolist())
        item_ids = np.asarray(sorted(keys), dtype=str)
    item_ids = np.asarray(item_ids, dtype=str)
    if member_ids is None:
        member_ids = np.unique(np.concatenate([p.members for p in parts] or [np.empty(0, str)]))
    member_ids = np.asarray(member_ids, dtype=str)
    item_index, member_index = pd.Index(item_ids), pd.Index(member_ids)
    shape = (len(member_ids), len(item_ids))

    def cat(values: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(values) if values else np.empty(0, dtype)

    icol = cat([item_index.get_indexer(p.items)[p.item_codes] for p in parts], np.int64)
    irow = cat([member_index.get_indexer(p.members)[p.member_codes] for p in parts], np.int64)
    conf, cnt, age = (
        cat([getattr(p, f) for p in parts], np.float64) for f in ("conf", "cnt", "age")
    )
    if (icol < 0).any():
        log.info("%d cells with items outside the item index dropped", int((icol < 0).sum()))
    ok = (icol >= 0) & (irow >= 0) & (conf > 0)
    irow, icol = irow[ok], icol[ok]

    def matrix(values: np.ndarray) -> sp.csr_matrix:
        # cells are distinct (one row per member and item key), so nothing is summed here
        m = sp.csr_matrix((values[ok].astype(np.float32), (irow, icol)), shape=shape)
        m.sort_indices()
        return m

    return Interactions(
        member_ids=member_ids,
        item_ids=item_ids,
        confidence=matrix(conf),
        count=matrix(cnt),
        last_days=matrix(age + 1.0),
        as_of=as_of,
    )
