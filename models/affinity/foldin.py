"""Request-time fold-in: a member's latest interactions plus the current basket, no retraining.

Build one row per member over the model's items from whatever is known at request time (the
member's recent canonical events and the categories or products in the basket being paid for),
then score it as a *new* member: ALS solves the member's factors from that row
(``recalculate_user``) instead of using the trained ones.

:class:`FoldIn` is the same computation for the request path: built once from a loaded affinity
pyfunc (its ALS item factors, ``YtY`` plus the regularisation, the BM25 state, the blend
weights, the training rows and the calibrator), it solves one member's factors in closed form
with numpy (no implicit, no pandas, no pyfunc call) and gives the pyfunc's ``score`` and
``p_redeem`` with a ``basket`` column, for the catalog's offers.

Basket entries are bare ids of the model's purchase kind (``coffee`` for a category model) or
item keys (``category:coffee``, ``product:12345``); entries the model does not know are ignored,
and a basket with no known entry is no basket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack

from models.affinity.base import AffinityModel
from models.affinity.blend import Blend
from models.affinity.calibration import RedeemCalibrator, member_terms_row, purchase_columns
from models.affinity.factorization import ALS
from models.affinity.interactions import (
    ITEM_KINDS,
    AffinityInputError,
    Interactions,
    InteractionSettings,
    build_interactions,
    item_key,
)

__all__ = ["FoldIn", "as_new_members", "basket_keys", "basket_rows", "member_rows"]

_PURCHASE_KINDS = tuple(k for k in ITEM_KINDS if k != "offer")


def basket_keys(basket: Sequence[str], kind: str = "category") -> list[str]:
    """Item keys of a basket's entries, sorted and distinct: an entry that already is a
    purchase item key (``category:coffee``, ``product:123``) stays as it is, a bare id becomes
    ``<kind>:<id>``."""
    keys = set()
    for x in basket:
        head, sep, _ = str(x).partition(":")
        keys.add(str(x) if sep and head in _PURCHASE_KINDS else str(item_key(kind, str(x))))
    return sorted(keys)


def as_new_members(batch: Interactions) -> Interactions:
    """The same rows with blank member ids, so models fold them in instead of looking them up."""
    return replace(batch, member_ids=np.full(batch.n_members, "", dtype=str))


def member_rows(
    item_ids: np.ndarray,
    member_ids: list[str] | np.ndarray,
    offer_events: pd.DataFrame,
    transactions: pd.DataFrame,
    as_of: pd.Timestamp | str,
    settings: InteractionSettings | None = None,
    segments: np.ndarray | None = None,
) -> Interactions:
    """Rows over ``item_ids`` for ``member_ids`` from their canonical events before ``as_of``."""
    tables = {"offer_events": offer_events, "transactions": transactions}
    rows = build_interactions(
        tables, as_of, settings, item_ids=item_ids, member_ids=np.asarray(member_ids, dtype=str)
    )
    return rows.with_segments(segments)


def basket_rows(
    rows: Interactions,
    baskets: list[list[str]],
    kind: str = "category",
    settings: InteractionSettings | None = None,
) -> Interactions:
    """``rows`` plus the current basket of each member (``kind`` ids or item keys, see
    :func:`basket_keys`), as fresh purchases (weight ``settings.purchase``, age 0). Basket
    entries the model does not know are ignored."""
    settings = settings or InteractionSettings()
    if len(baskets) != rows.n_members:
        raise AffinityInputError(f"baskets: {len(baskets)} baskets for {rows.n_members} members")
    per_member = [basket_keys(b, kind) for b in baskets]
    member = np.repeat(np.arange(rows.n_members), [len(k) for k in per_member])
    keys = [k for b in per_member for k in b]
    col = pd.Index(rows.item_ids).get_indexer(pd.Index(keys, dtype=object))
    ok = col >= 0
    member, col = member[ok], col[ok]
    shape = (rows.n_members, rows.n_items)
    add = sp.csr_matrix(
        (np.full(len(col), settings.purchase, dtype=np.float32), (member, col)), shape=shape
    )
    ones = sp.csr_matrix((np.ones(len(col), dtype=np.float32), (member, col)), shape=shape)
    # the basket is "today": last_days becomes 1 wherever the basket touches
    last = rows.last_days.tolil()
    last[member, col] = 1.0
    return replace(
        rows,
        confidence=(rows.confidence + add).tocsr(),
        count=(rows.count + ones).tocsr(),
        last_days=last.tocsr().astype(np.float32),
    )


@dataclass(frozen=True)
class _Rows:
    """The training rows the fold-in starts from, as CSR arrays (row = a served member)."""

    indptr: np.ndarray  # (n + 1,) into indices/conf/last, one row per member row
    indices: np.ndarray
    conf: np.ndarray  # float32 confidence
    last: np.ndarray  # float32 last_days (0 = never)


@dataclass(frozen=True)
class FoldIn:
    """Closed-form ALS fold-in of a basket for one member, over a fixed list of offers.

    Built once per loaded model with :meth:`from_pyfunc`; :meth:`predict` gives, for member row
    ``row`` (a row of the ``member_ids`` it was built for, -1 for a member without history) and
    a basket, the affinity pyfunc's ``score`` and ``p_redeem`` for each offer as ``predict``
    with a ``basket`` column would (NaN for offers the model does not know; ``p_redeem`` NaN
    without a calibrator). Supported models: :class:`ALS` and :class:`Blend`.
    """

    kind: str  # the kind of bare basket ids
    purchase: float  # confidence a basket entry adds (InteractionSettings().purchase)
    item_index: dict[str, int]  # item key -> model column
    offer_cols: np.ndarray  # (m,) model column per offer, -1 unknown
    known: np.ndarray  # (m,) bool: the model knows the offer
    offer_pos: dict[int, int]  # model column of a known offer -> its row in y_offers
    rows: _Rows
    y: np.ndarray  # (n_items, f) float64 item factors
    yty_reg: np.ndarray  # (f, f) float64: YtY + regularization x I
    yty_reg_inv: np.ndarray  # its inverse
    y_offers: np.ndarray  # (known offers, f) float64 item factors of the known offers
    alpha: float
    bm25: tuple[float, float, np.ndarray, float] | None  # k1, b, idf (float32), avg length
    weights: tuple[float, float, float, float]  # freq, ALS, recency, popularity (blend)
    half_life: float
    popularity: np.ndarray  # (m,) popularity of each offer (0 where unknown)
    pop_term: np.ndarray  # (known offers,) popularity weight x popularity
    calibrator: RedeemCalibrator | None
    known_keys: np.ndarray | None = None  # item keys of the known offers (calibration groups)
    purchase_cols: np.ndarray | None = None  # (n_items,) bool: purchase items (member terms)

    @classmethod
    def from_pyfunc(
        cls,
        pyfunc: Any,
        offer_ids: Sequence[str],
        member_ids: Sequence[str] | np.ndarray | None = None,
    ) -> FoldIn:
        """From a loaded :class:`~models.affinity.pyfunc.AffinityPyfunc` (``model_``,
        ``rows_``, ``calibrator_``, ``basket_kind_``) for ``offer_ids``; ``member_ids`` fixes
        what ``row`` means (default: the model's training rows)."""
        model, rows = pyfunc.model_, pyfunc.rows_
        als, weights = _als_of(model)
        items = np.asarray(model.item_ids_, dtype=str)
        index = {k: i for i, k in enumerate(items.tolist())}
        keys = [str(item_key("offer", str(o))) for o in offer_ids]
        offer_cols = np.array([index.get(k, -1) for k in keys], dtype=np.int64)
        members = rows.member_ids if member_ids is None else np.asarray(member_ids, dtype=str)
        take = rows.take(rows.member_index(members))
        conf, last = take.confidence.tocsr(), take.last_days.tocsr()
        conf.sort_indices()
        last.sort_indices()
        last_aligned = np.asarray(last[_row_ids(conf), conf.indices]).ravel()
        y = np.asarray(als.item_factors_, dtype=np.float64)
        y32 = np.asarray(als.item_factors_, dtype=np.float32)
        bm25 = None
        if als.weighting == "bm25":
            st = als.bm25_
            bm25 = (float(st.k1), float(st.b), np.asarray(st.idf, np.float32), st.avg_length)
        elif als.weighting != "none":
            raise AffinityInputError(f"fold-in: weighting {als.weighting!r} is not supported")
        pop = np.where(offer_cols >= 0, model.popularity_[np.maximum(offer_cols, 0)], 0.0)
        half = float(getattr(model, "recency_half_life_days", 30.0))
        known = offer_cols >= 0
        # implicit's YtY is float32 (Y.T @ Y of the float32 factors): the same matrix here
        yty_reg = (y32.T @ y32).astype(np.float64) + als.regularization * np.eye(y.shape[1])
        return cls(
            kind=str(pyfunc.basket_kind_),
            purchase=float(InteractionSettings().purchase),
            item_index=index,
            offer_cols=offer_cols,
            known=known,
            offer_pos={int(c): j for j, c in enumerate(offer_cols[known].tolist())},
            rows=_Rows(
                conf.indptr.astype(np.int64),
                conf.indices.astype(np.int64),
                conf.data.astype(np.float32),
                last_aligned.astype(np.float32),
            ),
            y=y,
            yty_reg=yty_reg,
            yty_reg_inv=np.linalg.inv(yty_reg),
            y_offers=y[offer_cols[known]],
            alpha=float(als.alpha),
            bm25=bm25,
            weights=weights,
            half_life=half,
            popularity=pop.astype(np.float64),
            pop_term=weights[3] * pop[known].astype(np.float64),
            calibrator=pyfunc.calibrator_,
            known_keys=np.asarray(keys, dtype=str)[known],
            purchase_cols=purchase_columns(items),
        )

    @property
    def n_offers(self) -> int:
        return len(self.offer_cols)

    @property
    def personalises(self) -> bool:
        """Whether a basket can move the scores: the model's scores use ALS (a blend with
        ``als_weight`` 0 ranks by the member's own offer history and popularity alone)."""
        return self.weights[1] > 0

    def columns(self, basket: Sequence[str]) -> list[int]:
        """Model columns of the basket entries the model knows (sorted, distinct)."""
        index = self.item_index
        return sorted({index[k] for k in basket_keys(basket, self.kind) if k in index})

    def knows(self, basket: Sequence[str]) -> bool:
        """Whether any basket entry is an item of the model (else the basket changes nothing)."""
        return len(self.columns(basket)) > 0

    def predict(self, row: int, basket: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(score, p_redeem), each (m,) float64, for member row ``row`` (-1: no history) with
        ``basket`` folded in; raises when the basket has no entry the model knows."""
        out = self.fold(row, basket)
        if out is None:
            raise AffinityInputError(
                f"basket: none of {list(basket)[:5]} is an item of the model ({self.kind} ids)"
            )
        return out

    def fold(self, row: int, basket: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`predict`, or None when the model knows no entry of the basket."""
        add = self.columns(basket)
        if not add:
            return None
        conf, last = self._row(row, add)
        cols = np.fromiter(conf, dtype=np.int64, count=len(conf))
        x = np.fromiter(conf.values(), dtype=np.float32, count=len(conf))
        user = self._solve(cols, x)
        w_freq, w_als, w_rec, _ = self.weights
        s = self.y_offers @ user
        s *= w_als
        s += self.pop_term
        if w_freq or w_rec:  # the member's own offer interactions (the basket adds none)
            pos = self.offer_pos
            for col, c in conf.items():
                j = pos.get(col)
                if j is not None:
                    d = last[col]
                    s[j] += w_freq * np.log1p(c) + (
                        w_rec * 0.5 ** ((d - 1.0) / self.half_life) if d > 0 else 0.0
                    )
        score = np.full(self.n_offers, np.nan)
        score[self.known] = s
        if self.calibrator is None:
            return score, np.full(self.n_offers, np.nan)
        p = np.full(self.n_offers, np.nan)
        terms = None
        if self.calibrator.uses_members and self.purchase_cols is not None:
            terms = member_terms_row(conf, last, self.purchase_cols)
        p[self.known] = self.calibrator.predict(s, self.known_keys, terms)
        return score, p

    def p_redeem(self, row: int, basket: Sequence[str]) -> np.ndarray:
        """P(redeem) per offer (m,), as the pyfunc's ``predict`` with this ``basket``."""
        return self.predict(row, basket)[1]

    def _row(self, row: int, add: list[int]) -> tuple[dict[int, float], dict[int, float]]:
        """The member's confidence and last_days by model column, with the basket added (as
        ``basket_rows``: + ``purchase`` and last_days 1 on each basket column)."""
        conf: dict[int, float] = {}
        last: dict[int, float] = {}
        if row >= 0:
            r = self.rows
            a, b = r.indptr[row], r.indptr[row + 1]
            cols = r.indices[a:b].tolist()
            conf = dict(zip(cols, r.conf[a:b].tolist(), strict=True))
            last = dict(zip(cols, r.last[a:b].tolist(), strict=True))
        for j in add:  # float32 + float32 rounds once, as the exact sum does
            conf[j] = float(np.float32(conf.get(j, 0.0) + self.purchase))
            last[j] = 1.0
        return conf, last

    def _solve(self, cols: np.ndarray, conf: np.ndarray) -> np.ndarray:
        """The ALS user step, implicit's: (B + Yu^T (Cu - I) Yu) x = Yu^T Cu pu with
        B = YtY + reg I. Short rows use the Woodbury identity around the precomputed B^-1
        (an s x s solve for s interactions), long rows a direct f x f solve."""
        x = conf
        if self.bm25 is not None:  # models.affinity.weighting.Bm25.transform on one row
            k1, b, idf, avg = self.bm25
            norm = np.float32((1.0 - b) + b * float(x.sum(dtype=np.float32)) / avg)
            x = (x * np.float32(k1 + 1.0) / (np.float32(k1) * norm + x) * idf[cols]).astype(
                np.float32
            )
        if self.alpha != 1.0:
            x = (x * np.float32(self.alpha)).astype(np.float32)
        # confidences are > 0 (implicit would treat c <= 0 as a negative with confidence |c|)
        c = x.astype(np.float64)
        u = self.y[cols]  # (s, f)
        cpos, d = c, c - 1.0
        # LAPACK directly: np.linalg.solve costs several times more on these small systems
        if len(cols) >= u.shape[1]:
            _, x_u, info = lapack.dposv(self.yty_reg + (u.T * d) @ u, u.T @ cpos)
        else:
            w = u @ self.yty_reg_inv  # (s, f) = U B^-1
            k = w @ u.T  # (s, s) = U B^-1 U^T
            k *= d[:, None]
            k.flat[:: len(cols) + 1] += 1.0  # I + D K
            _, _, h, info = lapack.dgesv(k, k @ cpos - cpos)  # D K c = (I + D K) c - c
            x_u = w.T @ (cpos - h)  # B^-1 U^T cpos - B^-1 U^T h
        if info != 0:
            raise AffinityInputError(f"fold-in: the ALS system is singular (LAPACK info {info})")
        return x_u


def _row_ids(m: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))


def _als_of(model: AffinityModel) -> tuple[ALS, tuple[float, float, float, float]]:
    """The ALS inside ``model`` and the blend weights (freq, ALS, recency, popularity)."""
    if isinstance(model, Blend):
        pop = model.popularity_weight or 1e-6  # Blend.combine's tie-break weight
        a, b, c = model.freq_weight, model.als_weight, model.recency_weight
        return model.als_, (float(a), float(b), float(c), float(pop))
    if isinstance(model, ALS):
        return model, (0.0, 1.0, 0.0, 0.0)
    raise AffinityInputError(
        f"fold-in: model {type(model).__name__} has no closed-form fold-in (ALS or blend only)"
    )
