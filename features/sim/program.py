"""Assemble the simulated program: canonical tables, catalog and ground truth; write them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.catalog.model import Catalog, default_catalog_path, dump_catalog, load_catalog
from features.sim import config as C
from features.sim import response as R
from features.sim.budgets import effective_budgets, scale_budgets
from features.sim.campaigns import CampaignLog, run_campaigns
from features.sim.config import SimConfig
from features.sim.members import DAY, Members, make_members, publish_segment
from features.sim.purchases import Lines, make_purchases, mean_line_value
from features.sim.qualify import qualify_share
from features.sim.response import (
    Context,
    baseline_probability,
    offer_params,
    redeem_probability,
    respond,
)
from features.sources import schema as S
from features.sources.io import to_canonical_frame, write_table

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
    pair_seed: int = 0  # seed of the per-pair noise (non-easy levels; truth/difficulty.json)

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
        (out / "truth" / DIFFICULTY_FILE).write_text(
            json.dumps(difficulty_record(self.config, self.pair_seed), indent=2) + "\n",
            encoding="utf-8",
        )
        return out


DIFFICULTY_FILE = "difficulty.json"


def difficulty_record(cfg: SimConfig, pair_seed: int) -> dict:
    """What ``truth/difficulty.json`` holds: the level, its parameters and the pair seed."""
    d = asdict(cfg.difficulty)
    d["auto_apply_kinds"] = list(d["auto_apply_kinds"])
    return {"level": d.pop("name"), "pair_seed": pair_seed, **d}


def _write_plain(df: pd.DataFrame, path: Path) -> None:
    """Parquet of a truth frame, read back as plain strings and floats (no pandas metadata).

    Categorical id columns are written as dictionary-encoded strings (no per-row strings are
    materialised); other columns are not dictionary-encoded (floats gain nothing from it).
    """
    cols = {}
    for c in df.columns:
        arr = pa.array(df[c])
        if pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.string())
        cols[c] = arr
    ids = [
        c for c, a in cols.items() if pa.types.is_dictionary(a.type) or pa.types.is_string(a.type)
    ]
    pq.write_table(pa.table(cols), path, compression="zstd", use_dictionary=ids, store_schema=False)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded decimal numbers as an Arrow string array.

    Every id has the same length, so the string buffer is built directly as an (n, length)
    byte matrix: no per-row Python work and no intermediate copies.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    n, head = len(numbers), prefix.encode()
    length = len(head) + width
    if n and int(numbers.max()) >= 10**width:
        raise ValueError(f"ids: {int(numbers.max())} needs more than {width} digits")
    buf = np.empty((n, length), dtype=np.uint8)
    buf[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    rest = numbers.copy()
    for d in range(length - 1, len(head) - 1, -1):
        buf[:, d] = rest % 10 + ord("0")
        rest //= 10
    if (n + 1) * length < 2**31:
        offsets: np.ndarray = np.arange(0, (n + 1) * length, length, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.ravel()))
    offsets = np.arange(0, (n + 1) * length, length, dtype=np.int64)
    big = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.ravel()))
    return big.cast(pa.string())


def _str(values: pa.Array) -> pd.Series:
    """An Arrow string array as a pandas ``str`` Series (no Python objects)."""
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([values])), copy=False)


def _take(dictionary: pa.Array | list[str], codes: np.ndarray) -> pd.Series:
    """Strings ``dictionary[codes]`` (null where a code is negative) as a ``str`` Series."""
    if not isinstance(dictionary, pa.Array):
        dictionary = pa.array(dictionary, type=pa.string())
    codes = np.asarray(codes)
    neg = codes < 0
    idx = pa.array(np.where(neg, 0, codes).astype(np.int32), mask=neg if neg.any() else None)
    return _str(dictionary.take(idx))


def _codes(codes: np.ndarray, categories: list[str]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories), validate=False)


def _to_ts(seconds: np.ndarray) -> np.ndarray:
    return (seconds.astype(np.int64) * 1_000_000).astype("datetime64[us]")


def _members_frame(
    m: Members, member_ids: pa.Array, tiers: tuple[str, ...], tier: np.ndarray, points: np.ndarray
) -> pd.DataFrame:
    return to_canonical_frame(
        pd.DataFrame(
            {
                S.MEMBER_ID: _str(member_ids),
                S.JOINED_AT: _to_ts(m.joined_at),
                S.BIRTH_DATE: _to_ts(m.birth_date),
                S.TIER: _take(list(tiers), tier),
                S.POINTS_BALANCE: points,
                S.AGE: m.age.astype(float),
                S.GENDER: _take(list(C.GENDERS), m.gender),
                S.INCOME: m.income,
                S.REGION: _take(list(C.REGIONS), m.region),
                S.SEGMENT: _take(
                    list(C.SEGMENTS),
                    m.segment if m.published_segment is None else m.published_segment,
                ),
                S.EMAIL_OPT_IN: m.email_opt_in,
                S.APP_OPT_IN: m.app_opt_in,
            }
        ),
        "members",
    )


def _transactions_frame(lines: list[Lines], member_ids: pa.Array, chunk: int) -> pd.DataFrame:
    """Basket lines of every source, in time order, one transaction_id per basket.

    Consumes ``lines`` (their arrays are released as they are merged) and builds the canonical
    frame in row chunks so the peak memory stays near the size of the result.
    """

    def merged(name: str) -> np.ndarray:
        out = np.concatenate([getattr(ln, name) for ln in lines])
        for ln in lines:
            setattr(ln, name, None)
        return out

    ts = merged("ts")
    basket = merged("basket")
    # Time order; the lines of one basket share its ts and stay together.
    bits = max(int(basket.max()).bit_length(), 1) if len(basket) else 1
    key = ((ts - ts.min()) << bits) | basket if len(ts) else ts
    order = np.argsort(key, kind="stable")
    del key
    ts, basket = ts[order], basket[order]
    member = merged("member")[order]
    new = np.empty(len(basket), dtype=bool)
    new[:1] = True
    new[1:] = basket[1:] != basket[:-1]
    del basket
    txn_no = np.cumsum(new) - 1
    del new
    cols = {f: merged(f)[order] for f in ("category", "sku", "quantity", "amount", "channel")}
    cols["store"] = merged("store")[order]
    del order
    width = max(9, len(str(int(txn_no[-1]) if len(txn_no) else 0)))
    sku_names = pa.array(
        [f"{c[:3]}-{k:04d}" for c in C.CATEGORIES for k in range(C.SKUS_PER_CATEGORY)]
    )
    stores = [f"st-{r[0]}{k:02d}" for r in C.REGIONS for k in range(C.STORES_PER_REGION)]
    parts = []
    for a in range(0, max(len(ts), 1), chunk):
        sl = slice(a, a + chunk)
        cat = cols["category"][sl]
        frame = pd.DataFrame(
            {
                S.TRANSACTION_ID: _str(_ids("t", txn_no[sl], width)),
                S.MEMBER_ID: _str(member_ids.take(pa.array(member[sl]))),
                S.TS: _to_ts(ts[sl]),
                S.AMOUNT: cols["amount"][sl],
                S.SKU: _take(
                    sku_names, cat.astype(np.int32) * C.SKUS_PER_CATEGORY + cols["sku"][sl]
                ),
                S.CATEGORY: _take(list(C.CATEGORIES), cat),
                S.QUANTITY: cols["quantity"][sl].astype(float),
                S.STORE_ID: _take(stores, cols["store"][sl]),
                S.CHANNEL: _take(list(C.TXN_CHANNELS), cols["channel"][sl]),
            }
        )
        parts.append(to_canonical_frame(frame, "transactions"))
        del frame
    del cols, ts, member, txn_no
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _events_frame(log: CampaignLog, member_ids: pa.Array, offer_ids: list[str]) -> pd.DataFrame:
    ev = log.cat(log.events)
    order = np.lexsort((ev["event"], ev["offer"], ev["member"], ev["ts"]))
    ev = {k: v[order] for k, v in ev.items()}
    n = len(order)
    frame = pd.DataFrame(
        {
            S.EVENT_ID: _str(_ids("ev", np.arange(n), max(9, len(str(n))))),
            S.MEMBER_ID: _str(member_ids.take(pa.array(ev["member"]))),
            S.TS: _to_ts(ev["ts"]),
            S.EVENT: _take(list(S.EVENTS), ev["event"]),
            S.OFFER_ID: _take(offer_ids, ev["offer"]),
            S.CAMPAIGN_ID: _take(log.ids, ev["campaign"]),
            S.CHANNEL: _take(list(S.CHANNELS), ev["channel"]),
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
    member_ids: pa.Array,
    log: CampaignLog,
    ctx: Context | None = None,
) -> dict[str, pd.DataFrame]:
    """True affinity and effects of a send at ``end`` for every (member, offer)."""
    n, n_off = m.n, len(op.ids)
    aff = np.empty((n, n_off), dtype=np.float32)
    tc = np.empty((n, n_off), dtype=np.float32)
    ts_ = np.empty((n, n_off), dtype=np.float32)
    members = np.arange(n)
    p0_w = baseline_probability(m, members, end_s, cfg.effect_window_days)
    for j in range(n_off):
        r = respond(m, mean_line, op, members, np.full(n, j), ctx)
        dur = min(op.duration[j], cfg.effect_window_days)
        aff[:, j] = redeem_probability(r, baseline_probability(m, members, end_s, dur))
        if ctx is None:
            tc[:, j] = r.q * (1 - p0_w)
            ts_[:, j] = r.q * r.mu
        else:
            _, tc[:, j], ts_[:, j] = R.effects(
                r, m, members, end_s, cfg.effect_window_days, cfg.difficulty
            )
    mcodes = np.repeat(np.arange(n, dtype=np.int32), n_off)
    ocodes = np.tile(np.arange(n_off, dtype=np.int8 if n_off < 128 else np.int32), n)
    mid = pd.Categorical.from_codes(mcodes, categories=pd.Index(_str(member_ids)), validate=False)
    oid = _codes(ocodes, list(op.ids))
    # copy=False: both frames share the id codes and the value arrays (30M rows at 1M members).
    affinity = pd.DataFrame(
        {S.MEMBER_ID: mid, S.OFFER_ID: oid, "affinity": aff.ravel()}, copy=False
    )
    effects = pd.DataFrame(
        {S.MEMBER_ID: mid, S.OFFER_ID: oid, "tau_conversion": tc.ravel(), "tau_spend": ts_.ravel()},
        copy=False,
    )
    del aff, tc, ts_
    latent = {
        S.MEMBER_ID: _str(member_ids),
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
    if m.published_segment is not None:  # the true segment is latent at the non-easy levels
        latent["segment"] = _take(list(C.SEGMENTS), m.segment)
    ct = log.cat(log.truth)
    campaign = pd.DataFrame(
        {
            S.CAMPAIGN_ID: _take(log.ids, ct.pop("campaign")),
            S.MEMBER_ID: _str(member_ids.take(pa.array(ct.pop("member")))),
            S.OFFER_ID: _take(list(op.ids), ct.pop("offer")),
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
    """Simulate a loyalty program with known ground truth (see ``features.sim.simulate``)."""
    if n_members < 1:
        raise ValueError(f"n_members: {n_members} must be at least 1")
    cfg = config or SimConfig()
    d = cfg.difficulty
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
    budgets = qualify = None
    pair_seed = int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])
    if not d.is_easy:
        m.published_segment = publish_segment(rng, m, d.segment_accuracy)
        if d.redemption_rules:
            qualify = qualify_share(
                m.pref, m.spend_scale, op.min_spend, op.category, d.mc_baskets, pair_seed
            )
        if d.budget_rate > 0:
            per_year = purchases.cum_amount[-1] / m.n * 365 / cfg.history_days
            catalog = scale_budgets(catalog, per_year, d.budget_rate)
            budgets = effective_budgets(catalog, m.n)
    log_ = run_campaigns(
        rng, m, purchases, mean_line, catalog, op, cfg, n_baskets, budgets, qualify, pair_seed
    )
    if log_.removed is not None and len(log_.removed):  # baseline baskets that did not happen
        ln = purchases.lines
        keep = ~np.isin(ln.basket, log_.removed)
        for f in ("member", "basket", "ts", "category", "sku", "quantity", "amount"):
            setattr(ln, f, getattr(ln, f)[keep])
        ln.channel, ln.store = ln.channel[keep], ln.store[keep]

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

    member_ids = _ids("m", np.arange(m.n), max(7, len(str(m.n))))
    step("tables")
    members = _members_frame(m, member_ids, cfg.tiers, tier, points)
    offers = catalog.to_offers_frame()
    del purchases
    transactions = _transactions_frame(lines, member_ids, cfg.chunk_rows)
    del lines
    events = _events_frame(log_, member_ids, list(op.ids))
    step("ground truth")
    ctx = None
    if not d.is_easy:
        assert log_.sends is not None
        ctx = Context(d, end_s, log_.sends, pair_seed, qualify)
    truth = _truth(m, mean_line, catalog, op, cfg, end_s, member_ids, log_, ctx)
    if budgets is not None:
        assert log_.budget_closed is not None and log_.budget_spent is not None
        closed = log_.budget_closed | (log_.budget_spent >= budgets)
        has = np.isfinite(budgets)
        truth["budgets"] = pd.DataFrame(
            {
                S.OFFER_ID: np.asarray(op.ids)[has],
                "unit": [o.budget.unit for o in catalog.offers if o.budget is not None],
                "budget": budgets[has],
                "spent": log_.budget_spent[has],
                "closed": closed[has],
            }
        )
    return Program(
        members=members,
        offers=offers,
        transactions=transactions,
        offer_events=events,
        catalog=catalog,
        truth=truth,
        config=cfg,
        pair_seed=pair_seed if not d.is_easy else 0,
    )
