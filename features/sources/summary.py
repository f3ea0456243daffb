"""Descriptive summary of a canonical program: who the members are and how offers performed.

Used by ``offers demo``; pure functions of the canonical tables.
"""

from __future__ import annotations

import pandas as pd

from features.sources import schema as S

__all__ = ["conversion_by_arm", "redemption_by_kind", "summarize"]


def redemption_by_kind(offers: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per offer kind: offers sent, redeemed, and the redemption rate (redeemed / sent)."""
    ev = events[events[S.EVENT].isin(["sent", "redeemed"])][[S.EVENT, S.OFFER_ID]]
    ev = ev.merge(offers[[S.OFFER_ID, S.KIND]], on=S.OFFER_ID, how="left")
    counts = ev.pivot_table(index=S.KIND, columns=S.EVENT, aggfunc="size", fill_value=0)
    counts = counts.reindex(columns=["sent", "redeemed"], fill_value=0)
    counts["redemption_rate"] = counts["redeemed"] / counts["sent"].where(counts["sent"] > 0)
    return counts.sort_values("sent", ascending=False)


def conversion_by_arm(
    events: pd.DataFrame, transactions: pd.DataFrame, window_days: int = 14
) -> pd.DataFrame:
    """Treated (sent) vs control (held_out): share of members who bought within the window.

    Each send / hold-out event counts once; a conversion is any transaction in
    ``(ts, ts + window_days]`` by the same member.
    """
    arms = events[events[S.EVENT].isin(["sent", "held_out"])][[S.MEMBER_ID, S.TS, S.EVENT]]
    arms = arms.sort_values(S.TS).reset_index(drop=True)
    tx = transactions[[S.MEMBER_ID, S.TS]].sort_values(S.TS)
    tx = tx.rename(columns={S.TS: "tx_ts"})
    nxt = pd.merge_asof(
        arms,
        tx,
        left_on=S.TS,
        right_on="tx_ts",
        by=S.MEMBER_ID,
        direction="forward",
        allow_exact_matches=False,
    )
    window = pd.Timedelta(days=window_days)
    nxt["converted"] = (nxt["tx_ts"] - nxt[S.TS]).le(window).fillna(False)
    out = nxt.groupby(S.EVENT)["converted"].agg(members="size", conversion="mean")
    out.index = out.index.map({"sent": "treated", "held_out": "control"})
    return out


def summarize(tables: dict[str, pd.DataFrame], lifecycle: pd.Series | None = None) -> dict:
    """Members by tier (and lifecycle stage when given), offers by kind, redemption, arms."""
    members = tables["members"]
    tier = members[S.TIER].fillna("(none)")
    if lifecycle is not None:
        stage = members[S.MEMBER_ID].map(lifecycle).fillna("(unknown)")
        by_tier_stage = pd.crosstab(tier, stage)
    else:
        by_tier_stage = tier.value_counts().to_frame("members")
    return {
        "members": len(members),
        "transactions": len(tables["transactions"]),
        "offer_events": len(tables["offer_events"]),
        "members_by_tier_and_stage": by_tier_stage,
        "offers_by_kind": tables["offers"][S.KIND].value_counts(),
        "redemption_by_kind": redemption_by_kind(tables["offers"], tables["offer_events"]),
        "conversion_by_arm": conversion_by_arm(tables["offer_events"], tables["transactions"]),
    }
