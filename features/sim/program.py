"""Assemble the simulated program: canonical tables, catalog and ground truth; write them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import schema as S
from features.catalog import Catalog, default_catalog_path, dump_catalog, load_catalog
from features.io import to_canonical_frame, write_table
from features.sim import config as C
from features.sim.campaigns import CampaignLog, run_campaigns
from features.sim.config import SimConfig
from features.sim.members import DAY, Members, make_members
from features.sim.purchases import Lines, make_purchases, mean_line_value
from features.sim.response import baseline_probability, offer_params, redeem_probability, respond

__all__ = ["Program", "simulate"]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class Program:
    """A simulated loyalty program: the four canonical tables, its catalog and ground truth."""

    members: pd.DataFrame
    offers: pd.DataFrame
    transactions: pd.DataFrame
    offer_events: pd.DataFrame
    catalog: Catalog
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)
    config: SimConfig = field(default_factory=SimConfig)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The canonical tables by name."""
        return {
            "members": self.members,
            "offers": self.offers,
            "transactions": self.transactions,
            "offer_events": self.offer_events,
        }

    def write(self, out_dir: Path | str) -> Path:
        """Write the tables (Parquet), ``catalog.yaml`` and ``truth/*.parquet`` to ``out_dir``."""
        out = Path(out_dir)
        for name, df in self.tables().items():
            write_table(df, out, name)
        dump_catalog(self.catalog, out / "catalog.yaml")
        (out / "truth").mkdir(parents=True, exist_ok=True)
        for name, df in self.truth.items():
            _write_plain(df, out / "truth" / f"{name}.parquet")
        return out


def _write_plain(df: pd.DataFrame, path: Path) -> None:
    """Parquet without pandas metadata; categorical columns stored as plain strings."""
    cols = {}
    for c in df.columns:
        s = df[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            cols[c] = pa.array(s.to_numpy(dtype=object) if len(s) < 1000 else s).cast(pa.string())
        else:
            cols[c] = pa.array(s)
    pq.write_table(pa.table(cols), path, compression="zstd")


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    """``prefix`` + zero-padded 0..n-1 as an Arrow string array (vectorised)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _codes(codes: np.ndarray, categories: pa.Array | list[str]) -> pd.Categorical:
    cats = pd.Index(categories.to_pandas() if isinstance(categories, pa.Array) else categories)
    return pd.Categorical.from_codes(codes.astype(np.int64), categories=cats, validate=False)


def _to_ts(seconds: np.ndarray) -> np.ndarray:
    return (seconds.astype(np.int64) * 1_000_000).astype("datetime64[us]")


def _members_frame(m: Members, member_ids: pa.Array, tier: np.ndarray, points: np.ndarray):
    return to_canonical_frame(
        pd.DataFrame(
            {
                S.MEMBER_ID: member_ids.to_pandas(),
                S.JOINED_AT: _to_ts(m.joined_at),
                S.BIRTH_DATE: _to_ts(m.birth_date),
                S.TIER: _codes(tier, list(C.SimConfig().tiers)),
                S.POINTS_BALANCE: points,
                S.AGE: m.age.astype(float),
                S.GENDER: _codes(m.gender, list(C.GENDERS)),
                S.INCOME: m.income,
                S.REGION: _codes(m.region, list(C.REGIONS)),
                S.SEGMENT: _codes(m.segment, list(C.SEGMENTS)),
                S.EMAIL_OPT_IN: m.email_opt_in,
                S.APP_OPT_IN: m.app_opt_in,
            }
        ),
        "members",
    )


def _transactions_frame(lines: list[Lines], member_cats: pd.Index) -> pd.DataFrame:
    cat = {f: np.concatenate([getattr(ln, f) for ln in lines]) for f in Lines.__dataclass_fields__}
    order = np.lexsort((cat["basket"], cat["member"], cat["ts"]))
    cat = {k: v[order] for k, v in cat.items()}
    basket = cat.pop("basket")
    new = np.empty(len(basket), dtype=bool)
    new[:1] = True
    new[1:] = basket[1:] != basket[:-1]
    txn_no = np.cumsum(new) - 1
    n_txn = int(txn_no[-1]) + 1 if len(txn_no) else 0
    txn_ids = _ids("t", n_txn, max(9, len(str(n_txn))))
    sku_names = [f"{c[:3]}-{k:04d}" for c in C.CATEGORIES for k in range(C.SKUS_PER_CATEGORY)]
    stores = [f"st-{r}-{k:02d}" for r in C.REGIONS for k in range(C.STORES_PER_REGION)]
    frame = pd.DataFrame(
        {
            S.TRANSACTION_ID: _codes(txn_no, txn_ids),
            S.MEMBER_ID: pd.Categorical.from_codes(cat["member"], categories=member_cats),
            S.TS: _to_ts(cat["ts"]),
            S.AMOUNT: cat["amount"],
            S.SKU: _codes(
                cat["category"].astype(np.int64) * C.SKUS_PER_CATEGORY + cat["sku"], sku_names
            ),
            S.CATEGORY: _codes(cat["category"], list(C.CATEGORIES)),
            S.QUANTITY: cat["quantity"].astype(float),
            S.STORE_ID: _codes(cat["store"], stores),
            S.CHANNEL: _codes(cat["channel"], list(C.TXN_CHANNELS)),
        }
    )
    del cat
    return to_canonical_frame(frame, "transactions")


def _events_frame(log: CampaignLog, member_cats: pd.Index, offer_ids: list[str]) -> pd.DataFrame:
    ev = log.cat(log.events)
    order = np.lexsort((ev["event"], ev["offer"], ev["member"], ev["ts"]))
    ev = {k: v[order] for k, v in ev.items()}
    n = len(order)
    frame = pd.DataFrame(
        {
            S.EVENT_ID: _ids("ev", n, max(9, len(str(n)))).to_pandas(),
            S.MEMBER_ID: pd.Categorical.from_codes(ev["member"], categories=member_cats),
            S.TS: _to_ts(ev["ts"]),
            S.EVENT: _codes(ev["event"], list(S.EVENTS)),
            S.OFFER_ID: _codes(ev["offer"], offer_ids),
            S.CAMPAIGN_ID: _codes(ev["campaign"], log.ids),
            S.CHANNEL: _codes(ev["channel"], list(S.CHANNELS)),
            S.PROPENSITY: ev["propensity"],
        }
    )
    return to_canonical_frame(frame, "offer_events")


def _truth(
    m: Members,
    mean_line: np.ndarray,
    cat: Catalog,
    op,
    cfg: SimConfig,
    end_s: int,
    member_cats: pd.Index,
    log: CampaignLog,
) -> dict[str, pd.DataFrame]:
    """True affinity and effects of a send at ``end`` for every (member, offer)."""
    n, n_off = m.n, len(op.ids)
    aff = np.empty((n, n_off), dtype=np.float32)
    tc = np.empty((n, n_off), dtype=np.float32)
    ts_ = np.empty((n, n_off), dtype=np.float32)
    members = np.arange(n)
    p0_w = baseline_probability(m, members, end_s, cfg.effect_window_days)
    for j in range(n_off):
        r = respond(m, mean_line, op, members, np.full(n, j))
        dur = min(op.duration[j], cfg.effect_window_days)
        aff[:, j] = redeem_probability(r, baseline_probability(m, members, end_s, dur))
        tc[:, j] = r.q * (1 - p0_w)
        ts_[:, j] = r.q * r.mu
    mcodes = np.repeat(np.arange(n, dtype=np.int64), n_off)
    ocodes = np.tile(np.arange(n_off, dtype=np.int64), n)
    mid = pd.Categorical.from_codes(mcodes, categories=member_cats)
    oid = _codes(ocodes, list(op.ids))
    affinity = pd.DataFrame({S.MEMBER_ID: mid, S.OFFER_ID: oid, "affinity": aff.ravel()})
    effects = pd.DataFrame(
        {S.MEMBER_ID: mid, S.OFFER_ID: oid, "tau_conversion": tc.ravel(), "tau_spend": ts_.ravel()}
    )
    del aff, tc, ts_
    latent = {
        S.MEMBER_ID: pd.Categorical.from_codes(np.arange(n), categories=member_cats),
        "price_sensitivity": m.price_sensitivity,
        "purchase_rate": m.rate.astype(np.float32),
        "lapse_at": np.where(
            m.lapse_at == Members.NO_LAPSE,
            np.datetime64("NaT"),
            _to_ts(np.minimum(m.lapse_at, end_s)),
        ),
        "spend_scale": m.spend_scale,
        "view_prob": m.view_prob,
        "incrementality_shift": m.incr_z,
        "points_keep_share": m.keep_share,
        "baseline_p_14d_at_end": p0_w,
    }
    for i, c in enumerate(C.CATEGORIES):
        latent[f"pref_{c}"] = m.pref[:, i]
    for i, k in enumerate(S.OFFER_KINDS):
        latent[f"resp_{k}"] = np.exp(m.log_resp[:, i])
    ct = log.cat(log.truth)
    campaign = pd.DataFrame(
        {
            S.CAMPAIGN_ID: _codes(ct.pop("campaign"), log.ids),
            S.MEMBER_ID: pd.Categorical.from_codes(ct.pop("member"), categories=member_cats),
            S.OFFER_ID: _codes(ct.pop("offer"), list(op.ids)),
            "sent_at": _to_ts(ct.pop("ts")),
            **ct,
        }
    )
    return {
        "affinity": affinity,
        "effects": effects,
        "members_latent": pd.DataFrame(latent),
        "assignments": campaign,
    }


def simulate(
    n_members: int = 10_000,
    seed: int = 42,
    config: SimConfig | None = None,
    progress: Progress | None = None,
) -> Program:
    """Simulate a loyalty program with known ground truth (see ``features.simulate``)."""
    if n_members < 1:
        raise ValueError(f"n_members: {n_members} must be at least 1")
    cfg = config or SimConfig()
    step = progress or (lambda msg: log.info("simulate: %s", msg))
    catalog = load_catalog(cfg.catalog_path or default_catalog_path())
    rng = np.random.default_rng(seed)
    end_s = int(np.datetime64(cfg.end, "s").astype(np.int64))
    step("members")
    m = make_members(rng, n_members, cfg, end_s)
    mean_line = mean_line_value(m)
    step("purchases")
    purchases = make_purchases(rng, m, cfg, end_s)
    op = offer_params(catalog, cfg.effect_window_days)
    step("campaigns")
    n_baskets = len(purchases.key)
    log_ = run_campaigns(rng, m, purchases, mean_line, catalog, op, cfg, end_s, n_baskets)

    step("tiers and points")
    year_ago = end_s - 365 * DAY
    lines = [purchases.lines, *log_.induced]
    spend = np.zeros(m.n)
    for ln in lines:
        sel = ln.ts >= year_ago
        spend += np.bincount(ln.member[sel], weights=ln.amount[sel], minlength=m.n)
    earned = np.floor(spend)
    tier = np.searchsorted(np.asarray(cfg.tier_thresholds), earned, side="right") - 1
    points = np.floor(earned * m.keep_share) + log_.bonus_points

    member_ids = _ids("m", m.n, max(7, len(str(m.n))))
    member_cats = pd.Index(member_ids.to_pandas())
    step("tables")
    members = _members_frame(m, member_ids, tier, points)
    offers = catalog.to_offers_frame()
    transactions = _transactions_frame(lines, member_cats)
    del purchases, lines
    events = _events_frame(log_, member_cats, list(op.ids))
    step("ground truth")
    truth = _truth(m, mean_line, catalog, op, cfg, end_s, member_cats, log_)
    return Program(
        members=members,
        offers=offers,
        transactions=transactions,
        offer_events=events,
        catalog=catalog,
        truth=truth,
        config=cfg,
    )
