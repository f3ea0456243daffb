"""Edits of a :class:`~serving.engine.MemberTable` the serving bundle makes per request.

``cold_members(n)`` is a table of members the snapshot does not know (onboarding stage, no
features); ``blank_unknown`` resets the rows of unknown members to that cold start;
``with_basket`` adds the live checkout basket (its total, whether it reaches the next tier or a
purchase milestone). Pure functions: each returns a new table.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.sources import schema as S
from serving.engine import MemberTable

__all__ = ["blank_unknown", "cold_members", "with_basket"]


def cold_members(n: int) -> MemberTable:
    """``n`` members without a snapshot row: ids ``cold0..``, lifecycle ``onboarding``."""
    frame = pd.DataFrame({S.MEMBER_ID: [f"cold{i}" for i in range(n)]})
    frame["lifecycle_stage"] = "onboarding"
    return MemberTable.from_frame(frame)


def blank_unknown(table: MemberTable, unknown: np.ndarray) -> MemberTable:
    """Rows of unknown members reset to a cold start (no features, onboarding stage)."""
    stage = table.stage.copy()
    stage[unknown] = 0  # LIFECYCLE_STAGES[0] == "onboarding"
    tier = table.tier.copy()
    tier[unknown] = -1
    seg = table.segment.copy()
    seg[unknown] = None
    nxt = table.next_tier.copy()
    nxt[unknown] = None
    num = {k: np.where(unknown, np.nan, v) for k, v in table.num.items()}
    shares = {k: np.where(unknown, np.nan, v) for k, v in table.shares.items()}
    return replace(
        table,
        stage=stage,
        tier=tier,
        segment=seg,
        next_tier=nxt,
        num=num,
        shares=shares,
        basket_reaches_next_tier=table.basket_reaches_next_tier & ~unknown,
        basket_is_milestone=table.basket_is_milestone & ~unknown,
        consent=None
        if table.consent is None
        else np.where(unknown[:, None], np.int8(-1), table.consent).astype(np.int8),
    )


def with_basket(table: MemberTable, total: float | np.ndarray) -> MemberTable:
    """The live basket: its total, and whether it reaches the next tier (one point per unit
    of currency) or is a purchase milestone (the member is one purchase away)."""
    total = np.asarray(total, dtype=np.float64)
    if total.ndim == 0:  # one total for every row (np.broadcast_to costs ~25 us per call)
        total = np.full(table.n, float(total))
    else:
        total = np.broadcast_to(total, (table.n,)).copy()
    has = np.isfinite(total)
    num = dict(table.num)
    num["basket_total"] = total
    to_next = table.num["points_to_next_tier"]
    to_milestone = table.num["purchases_to_next_milestone"]
    # An unknown distance (NaN) never counts: NaN <= x is False (no nan_to_num pass needed).
    return replace(
        table,
        num=num,
        basket_reaches_next_tier=has & (to_next <= total),
        basket_is_milestone=has & (to_milestone <= 1),
    )
