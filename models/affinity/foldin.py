"""Request-time fold-in: a member's latest interactions plus the current basket, no retraining.

Build one row per member over the model's items from whatever is known at request time (the
member's recent canonical events and the categories or products in the basket being paid for),
then score it as a *new* member: ALS solves the member's factors from that row
(``recalculate_user``) instead of using the trained ones.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.affinity.interactions import (
    AffinityInputError,
    Interactions,
    InteractionSettings,
    build_interactions,
    item_key,
)

__all__ = ["as_new_members", "basket_rows", "member_rows"]


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
    """``rows`` plus the current basket of each member (category or product ids), as fresh
    purchases (weight ``settings.purchase``, age 0). Basket entries the model does not know are
    ignored."""
    settings = settings or InteractionSettings()
    if len(baskets) != rows.n_members:
        raise AffinityInputError(f"baskets: {len(baskets)} baskets for {rows.n_members} members")
    lengths = [len(set(b)) for b in baskets]
    member = np.repeat(np.arange(rows.n_members), lengths)
    keys = [item_key(kind, x) for b in baskets for x in sorted(set(b))]
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
