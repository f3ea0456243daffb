"""Calibration figures of a simulated program next to the same figures on real data.

``python -m features.sim.calibrate sim --members N --seed S --difficulty L`` prints the
simulator's figures (JSON); ``python -m features.sim.calibrate real --data DIR`` prints those of
Hillstrom, Starbucks and The Complete Journey (``DIR`` = ``../shared/data``). docs/simulator.md
holds the table and the commands that produced it; tests/unit/test_sim_difficulty.py holds
the realistic level inside its documented bands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from features.sim.budgets import effective_budgets
from features.sim.program import Program
from features.sources import schema as S

__all__ = ["real_stats", "sim_stats"]

log = logging.getLogger(__name__)
DAY = pd.Timedelta(days=1)
LOW_RECENCY = (182, 273)  # "6-9 months": Hillstrom's recency 6-9, a ~1 % baseline
RECENCY_BANDS = ((0, 91), (91, 182), (182, 273), (273, 366))  # months 1-3, 4-6, 7-9, 10-12


def _recency(p: Program, rows: pd.DataFrame) -> np.ndarray:
    """Days from each row's member's last purchase before ``sent_at`` (inf: none)."""
    t = p.transactions[[S.MEMBER_ID, S.TS]].drop_duplicates().sort_values(S.TS)
    t[S.MEMBER_ID] = t[S.MEMBER_ID].astype(object)
    r = rows[[S.MEMBER_ID, "sent_at"]].reset_index().sort_values("sent_at")
    r[S.MEMBER_ID] = r[S.MEMBER_ID].astype(object)
    x = pd.merge_asof(
        r, t, left_on="sent_at", right_on=S.TS, by=S.MEMBER_ID, allow_exact_matches=False
    )
    days = (x["sent_at"] - x[S.TS]) / DAY
    return days.fillna(np.inf).to_numpy()[np.argsort(x["index"].to_numpy())]


def _bought(p: Program, rows: pd.DataFrame, start: int, stop: int) -> np.ndarray:
    """Whether each row's member bought in [sent_at + start, sent_at + stop) days."""
    t = p.transactions[[S.MEMBER_ID, S.TS]].drop_duplicates()
    x = rows[[S.CAMPAIGN_ID, S.MEMBER_ID, "sent_at"]].merge(t, on=S.MEMBER_ID)
    rel = (x[S.TS] - x["sent_at"]) / DAY
    hit = x[(rel >= start) & (rel < stop)][[S.CAMPAIGN_ID, S.MEMBER_ID]].drop_duplicates()
    key = pd.MultiIndex.from_frame(rows[[S.CAMPAIGN_ID, S.MEMBER_ID]])
    return key.isin(pd.MultiIndex.from_frame(hit))


def _diff(y: np.ndarray, treated: np.ndarray) -> tuple[float, float]:
    """Treated minus control mean of a 0/1 outcome and its standard error."""
    a, b = y[treated], y[~treated]
    se = np.sqrt(a.var() / max(len(a), 1) + b.var() / max(len(b), 1))
    return float(a.mean() - b.mean()), float(se)


def _observable_r2(p: Program, seed: int = 0) -> float:
    """Out-of-sample R^2 of the true conversion effect (send at ``end``) from what the program
    observes: RFM, category shares, tenure, demographics, published segment, tier, offer."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    end = pd.Timestamp(p.config.end)
    t, m = p.transactions, p.members.set_index(S.MEMBER_ID)
    year = t[t[S.TS] >= end - 365 * DAY]
    g = year.groupby(S.MEMBER_ID)
    feats = pd.DataFrame(index=m.index)
    feats["recency"] = (end - t.groupby(S.MEMBER_ID)[S.TS].max()) / DAY
    feats["baskets"] = g[S.TRANSACTION_ID].nunique()
    feats["spend"] = g[S.AMOUNT].sum()
    shares = year.pivot_table(
        index=S.MEMBER_ID, columns=S.CATEGORY, values=S.AMOUNT, aggfunc="sum", observed=True
    )
    feats = feats.join(shares.div(shares.sum(axis=1), axis=0).add_prefix("share_"))
    feats["tenure"] = (end - m[S.JOINED_AT]) / DAY
    for c in (S.AGE, S.INCOME, S.POINTS_BALANCE):
        feats[c] = m[c]
    for c in (S.SEGMENT, S.TIER, S.REGION, S.GENDER):
        feats[c] = m[c].astype("category").cat.codes
    feats["opt_in"] = m[S.EMAIL_OPT_IN].astype(float) + 2 * m[S.APP_OPT_IN].astype(float)
    feats = feats.fillna(-1)
    eff = p.truth["effects"]
    ids = np.asarray(eff[S.MEMBER_ID].astype(object))
    X = feats.loc[ids].to_numpy(dtype=np.float64)
    X = np.column_stack([X, np.asarray(eff[S.OFFER_ID].cat.codes)])
    y = eff["tau_conversion"].to_numpy(dtype=np.float64)
    members = pd.Index(feats.index)
    rng = np.random.default_rng(seed)
    test_m = rng.random(len(members)) < 0.3
    test = test_m[members.get_indexer(ids)]
    train = np.flatnonzero(~test)
    if len(train) > 300_000:  # bounded cost on large programs
        train = np.sort(rng.choice(train, 300_000, replace=False))
    model = HistGradientBoostingRegressor(
        max_iter=200, learning_rate=0.1, categorical_features=[X.shape[1] - 1], random_state=seed
    )
    model.fit(X[train], y[train])
    resid = y[test] - model.predict(X[test])
    return float(1 - resid.var() / y[test].var())


def sim_stats(p: Program, r2: bool = True) -> dict[str, float]:
    """The calibration figures of a simulated program (see docs/simulator.md)."""
    a = p.truth["assignments"].copy()
    e, t = p.offer_events, p.transactions
    treated = a["treated"].to_numpy()
    out: dict[str, float] = {}
    rec = _recency(p, a)
    low = (rec >= LOW_RECENCY[0]) & (rec < LOW_RECENCY[1])
    tr = a[treated]
    out["tau_conv_low_baseline_pp"] = 100 * float(tr.loc[low[treated], "tau_conversion"].mean())
    out["control_conv_low_baseline_pct"] = 100 * float(a.loc[low & ~treated, "p_baseline"].mean())
    y14 = _bought(p, a, 0, 14)
    d, se = _diff(y14[low], treated[low])
    out["observed_lift_low_baseline_pp"], out["observed_lift_low_baseline_se"] = 100 * d, 100 * se
    out["converted_share_of_non_buyers_pct"] = 100 * float(
        tr["tau_conversion"].mean() / (1 - tr["p_baseline"]).mean()
    )
    for lo, hi in RECENCY_BANDS:
        band = (rec[treated] >= lo) & (rec[treated] < hi)
        out[f"tau_conv_recency_{lo}_{hi}_pp"] = 100 * float(tr.loc[band, "tau_conversion"].mean())
    d, se = _diff(_bought(p, a, 14, 42), treated)
    out["pull_forward_15_42d_pp"], out["pull_forward_15_42d_se"] = 100 * d, 100 * se
    eff = p.truth["effects"]
    # The same bands on the truth for a send at `end` (every member x offer: larger samples).
    end = pd.Timestamp(p.config.end)
    last = p.transactions.groupby(S.MEMBER_ID, observed=True)[S.TS].max()
    rec_end = ((end - last) / DAY).reindex(eff[S.MEMBER_ID].astype(object)).to_numpy()
    for lo, hi in RECENCY_BANDS:
        band = (rec_end >= lo) & (rec_end < hi)
        out[f"tau_conv_at_end_recency_{lo}_{hi}_pp"] = 100 * float(
            eff.loc[band, "tau_conversion"].mean()
        )
    out["negative_effect_share_pairs"] = float((eff["tau_spend"] < 0).mean())
    out["negative_effect_share_sends"] = float((tr["tau_spend"] < 0).mean())
    out["negative_conversion_share_pairs"] = float((eff["tau_conversion"] < 0).mean())
    if r2:
        out["observable_r2_tau_conversion"] = _observable_r2(p)

    # Redemptions: viewed first?, on a qualifying basket?, by receipt number (fatigue).
    key = [S.CAMPAIGN_ID, S.MEMBER_ID]
    red = e[e[S.EVENT] == "redeemed"]
    viewed = e[e[S.EVENT] == "viewed"][key].assign(v=True)
    out["redeemed_without_view_share"] = float(
        red[key].merge(viewed, on=key, how="left")["v"].isna().mean()
    )
    # The redemption's basket: the member's lines at the redemption time.
    offers = p.offers.set_index(S.OFFER_ID)
    r = red[[S.MEMBER_ID, S.TS, S.OFFER_ID]].reset_index(drop=True).reset_index()
    r = r.join(offers[[S.MIN_SPEND, S.CATEGORY]], on=S.OFFER_ID)
    lines = r.merge(
        t[[S.MEMBER_ID, S.TS, S.AMOUNT, S.CATEGORY]], on=[S.MEMBER_ID, S.TS], suffixes=("", "_l")
    )
    lines["in_cat"] = lines[S.CATEGORY].isna() | (
        lines[S.CATEGORY].astype(object) == lines[f"{S.CATEGORY}_l"].astype(object)
    )
    per = lines.groupby("index").agg(total=(S.AMOUNT, "sum"), in_cat=("in_cat", "any"))
    per = per.reindex(r["index"])
    ok = (per["total"].to_numpy() >= r[S.MIN_SPEND].fillna(0).to_numpy() - 1e-9) & per[
        "in_cat"
    ].fillna(False).to_numpy(dtype=bool)
    out["redeemed_on_qualifying_basket_share"] = float(ok.mean()) if len(ok) else float("nan")
    sent = e[e[S.EVENT] == "sent"].sort_values([S.MEMBER_ID, S.TS])
    sent = sent.assign(n=sent.groupby(S.MEMBER_ID).cumcount() + 1)
    got = sent[key].merge(red[key].assign(r=True), on=key, how="left")["r"].notna().to_numpy()
    for k in (1, 5):
        out[f"redemption_rate_receipt_{k}"] = float(got[sent["n"].to_numpy() == k].mean())

    # Rewards and budgets.
    cost = offers[S.COST]
    red_cost = cost.loc[red[S.OFFER_ID]].to_numpy()
    out["reward_cost_share_of_spend_pct"] = 100 * float(red_cost.sum() / t[S.AMOUNT].sum())
    if "budgets" in p.truth:  # non-easy levels: what the logged campaigns spent and closed
        b = p.truth["budgets"]
        use = (b["spent"] / b["budget"]).to_numpy()
        out["budgets_closed_share"] = float(b["closed"].mean())
        worth = np.where(b["unit"] == "count", cost.loc[b[S.OFFER_ID]].to_numpy(), 1.0)
        out["budget_use_total"] = float((b["spent"] * worth).sum() / (b["budget"] * worth).sum())
    else:  # easy: the catalog's budgets for this many members, never enforced
        budgets = effective_budgets(p.catalog, len(p.members))
        n_red = red[S.OFFER_ID].value_counts().reindex(offers.index, fill_value=0).to_numpy()
        unit = np.array(
            [o.cost if o.budget and o.budget.unit == "money" else 1.0 for o in p.catalog.offers]
        )
        has = np.isfinite(budgets)
        use = n_red[has] * unit[has] / budgets[has]
        out["budgets_closed_share"] = 0.0
        worth = np.where(unit[has] == 1.0, cost.to_numpy()[has], 1.0)
        out["budget_use_total"] = float(
            (n_red[has] * unit[has] * worth).sum() / (budgets[has] * worth).sum()
        )
    out["budget_use_max"] = float(use.max())
    out["budget_use_median"] = float(np.median(use))
    out["budgets_used_half_share"] = float((use >= 0.5).mean())

    # Purchases.
    bt = t.groupby(S.TRANSACTION_ID)[S.AMOUNT].sum()
    out["basket_mean"], out["basket_median"] = float(bt.mean()), float(bt.median())
    out["basket_p90"] = float(bt.quantile(0.9))
    spend = np.sort(t.groupby(S.MEMBER_ID)[S.AMOUNT].sum().to_numpy())[::-1]
    out["top20_spend_share"] = float(spend[: max(1, len(spend) // 5)].sum() / spend.sum())
    return out


def _hillstrom(path: Path) -> dict[str, float]:
    df = pd.read_csv(next(path.glob("*.csv*")))
    mail = (df["segment"] != "No E-Mail").to_numpy()
    y = df["conversion"].to_numpy(dtype=float)
    out: dict[str, float] = {}
    for seg in ("Womens E-Mail", "Mens E-Mail"):
        arm = (df["segment"] == seg).to_numpy()
        low = df["recency"].between(6, 9).to_numpy()
        sel = low & (arm | ~mail)
        d, se = _diff(y[sel], arm[sel])
        tag = seg.split()[0].lower()
        out[f"lift_low_baseline_pp_{tag}"], out[f"lift_low_baseline_se_{tag}"] = 100 * d, 100 * se
        sel = arm | ~mail
        d, _ = _diff(y[sel], arm[sel])
        out[f"converted_share_of_non_buyers_pct_{tag}"] = 100 * d / (1 - y[~mail].mean())
    out["control_conv_low_baseline_pct"] = 100 * float(
        y[~mail & df["recency"].between(6, 9)].mean()
    )
    for lo, hi in ((1, 3), (4, 6), (7, 9), (10, 12)):
        band = df["recency"].between(lo, hi).to_numpy()
        d, se = _diff(y[band], mail[band])
        out[f"lift_recency_{lo}_{hi}m_pp"], out[f"lift_recency_{lo}_{hi}m_se"] = 100 * d, 100 * se
    return out


def _starbucks(path: Path) -> dict[str, float]:
    tr = pd.read_json(path / "transcript.json.gz", lines=True)
    val = pd.json_normalize(tr.pop("value"))
    offer = val["offer id"].fillna(val.get("offer_id"))
    tr = tr.assign(offer=offer, amount=val["amount"], reward=val["reward"])
    port = pd.read_json(path / "portfolio.json", lines=True).set_index("id")
    rec = tr[tr["event"] == "offer received"][["person", "offer", "time"]]
    view = tr[tr["event"] == "offer viewed"][["person", "offer", "time"]]
    done = tr[tr["event"] == "offer completed"][["person", "offer", "time", "reward"]]
    # A completion was viewed first if the member viewed that offer at or before completing.
    first_view = view.groupby(["person", "offer"])["time"].min().rename("first_view")
    d = done.join(first_view, on=["person", "offer"])
    out = {"redeemed_without_view_share": float((~(d["first_view"] <= d["time"])).mean())}
    out["reward_cost_share_of_spend_pct"] = 100 * float(done["reward"].sum() / tr["amount"].sum())
    # Fatigue: completion of a received (non-informational) offer within its duration, by
    # the receipt's number for the member.
    rec = rec.sort_values(["person", "time"]).assign(n=lambda x: x.groupby("person").cumcount() + 1)
    rec = rec.join(port[["duration", "offer_type"]], on="offer")
    rec = rec[rec["offer_type"] != "informational"].reset_index(drop=True)
    m = rec.reset_index().merge(done, on=["person", "offer"], suffixes=("", "_c"))
    ok = (m["time_c"] >= m["time"]) & (m["time_c"] <= m["time"] + 24 * m["duration"])
    hit = np.zeros(len(rec), dtype=bool)
    hit[m.loc[ok, "index"].to_numpy()] = True
    for k in (1, 5):
        out[f"redemption_rate_receipt_{k}"] = float(hit[rec["n"].to_numpy() == k].mean())
    return out


def _complete_journey(path: Path) -> dict[str, float]:
    tx = pd.read_parquet(
        path / "transactions.parquet", columns=["household_id", "basket_id", "sales_value"]
    )
    bt = tx.groupby("basket_id")["sales_value"].sum()
    spend = np.sort(tx.groupby("household_id")["sales_value"].sum().to_numpy())[::-1]
    return {
        "basket_mean": float(bt.mean()),
        "basket_median": float(bt.median()),
        "basket_p90": float(bt.quantile(0.9)),
        "top20_spend_share": float(spend[: max(1, len(spend) // 5)].sum() / spend.sum()),
    }


def real_stats(data: Path) -> dict[str, dict[str, float]]:
    """The same figures on the real data sets under ``data`` (../shared/data)."""
    return {
        "hillstrom": _hillstrom(data / "hillstrom"),
        "starbucks": _starbucks(data / "starbucks"),
        "complete_journey": _complete_journey(data / "complete-journey"),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: ``sim`` (simulate and measure) or ``real`` (measure the real data)."""
    ap = argparse.ArgumentParser(prog="python -m features.sim.calibrate")
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sim")
    s.add_argument("--members", type=int, default=20_000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--difficulty", default="realistic")
    s.add_argument("--no-r2", action="store_true")
    r = sub.add_parser("real")
    r.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args(argv)
    if args.what == "sim":
        from features.sim.simulate import SimConfig, simulate

        prog = simulate(args.members, args.seed, SimConfig(difficulty=args.difficulty))
        res: dict = {
            "members": args.members,
            "seed": args.seed,
            "difficulty": args.difficulty,
            **sim_stats(prog, r2=not args.no_r2),
        }
    else:
        res = real_stats(args.data)
    sys.stdout.write(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
