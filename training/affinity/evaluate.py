"""Chronological offline evaluation of affinity models: windows, tasks, metrics per model.

Split: models are trained on everything before ``T`` and evaluated on the window
``[T, test_end)``; only members active in both count (at least one training interaction and at
least one positive in the window). Hyper-parameters and the shipped combination are chosen on a
separate validation window ``[V, T)`` with models trained before ``V``, so the test window is
looked at once.

Targets (what counts as a positive in the window):

* ``offers``: ``redeemed`` offer events. Candidates (``candidates="held"``, the default) are the
  offers the member *held* during the window (sent before its end and still valid at its
  start: ``duration_days`` after the send, else the offer's ``valid_to``, else sent inside the
  window); members need at least ``min_candidates`` of them, otherwise the ranking is trivial.
  With ``candidates="all"`` every offer is a candidate for everyone. Offers of kind
  ``informational`` are never candidates (``redeemable_only``): they cannot be redeemed, so
  ranking them for redemption would only pad the list with certain misses.
* ``products`` / ``categories``: purchases (positive amount and quantity) in the window; every
  product (category) seen in training is a candidate and every product bought counts as
  relevant, including ones that never appeared in training (they cannot be recommended).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.pipeline import FeatureTables
from features.sources import schema as S
from models.affinity import (
    FALLBACKS,
    AffinityModel,
    Interactions,
    InteractionSettings,
    build_interactions,
    item_key,
)
from models.affinity.segments import member_segments
from training.affinity.metrics import KS, catalog_coverage, ranking_metrics

__all__ = [
    "EvalInputError",
    "EvalSettings",
    "Task",
    "Windows",
    "build_task",
    "choose_windows",
    "evaluate_model",
    "pair_scores",
]

log = logging.getLogger(__name__)

TARGET_KIND = {"offers": "offer", "products": "product", "categories": "category"}
Target = Literal["offers", "products", "categories"]


class EvalInputError(ValueError):
    """The data cannot support the requested evaluation (empty window, no members...)."""


class EvalSettings(BaseModel):
    """What is evaluated and on which windows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target = "offers"
    candidates: Literal["held", "all"] = "held"
    calibration_pairs: Literal["held", "sends"] = Field(
        default="held",
        description="P(redeem) calibration pairs with held candidates: 'held' (the offers "
        "held in the window, redeemed inside it) or 'sends' (the sends the data observes "
        "whole, redeemed within their redeemable period; docs/engine.md, seventh session)",
    )
    calibration_recency_knots: tuple[float, ...] = Field(
        default=(45.0, 120.0),
        description="days without a purchase past which the P(redeem) member term bends "
        "(a hinge on the log recency at each; () for one slope; docs/engine.md, eighth session)",
    )
    calibration_no_purchase: bool = Field(
        default=True,
        description="a member without any purchase in the rows gets her own P(redeem) term "
        "(off: she counts as the average member)",
    )
    calibration_band_offsets: bool = Field(
        default=False,
        description="each offer's P(redeem) offset also per recency band (the knots; off: "
        "measured on two programs only, docs/engine.md, eighth session)",
    )
    split: datetime | None = Field(default=None, description="T: start of the test window")
    test_days: float | None = Field(
        default=None, gt=0, description="default: test_share of the span"
    )
    valid_days: float | None = Field(default=None, gt=0, description="default: = test_days")
    test_share: float = Field(default=0.2, gt=0, lt=1)
    min_candidates: int = Field(default=2, ge=1)
    redeemable_only: bool = Field(
        default=True, description="offers target: no informational offers"
    )
    ks: tuple[int, ...] = KS
    interactions: InteractionSettings = InteractionSettings()
    segment_min_members: int = 20

    @field_validator("calibration_recency_knots")
    @classmethod
    def _knots_positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(x) and x > 0 for x in v):
            raise ValueError(f"calibration_recency_knots: days must be finite and > 0, got {v}")
        return v

    def interaction_settings(self) -> InteractionSettings:
        """Interaction settings with purchases at the level the target needs."""
        if self.target == "products":
            return self.interactions.model_copy(update={"purchase_items": "product"})
        if self.target == "categories":
            return self.interactions.model_copy(update={"purchase_items": "category"})
        return self.interactions


@dataclass(frozen=True)
class Windows:
    """Validation window [valid_start, test_start), test window [test_start, test_end)."""

    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def to_dict(self) -> dict[str, str]:
        return {
            "valid_start": self.valid_start.isoformat(),
            "train_end": self.test_start.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def _time_span(tables: Mapping[str, Any], target: str) -> tuple[Any, Any]:
    """First and last timestamp of the target's table (a pandas frame or a backend table)."""
    t = tables["offer_events"] if target == "offers" else tables["transactions"]
    if isinstance(t, pd.DataFrame):
        ts = t[S.TS].dropna()
        return (None, None) if ts.empty else (ts.min(), ts.max())
    span = t.aggregate(first=t[S.TS].min(), last=t[S.TS].max()).to_pandas()
    first, last = span["first"].iloc[0], span["last"].iloc[0]
    return (None, None) if pd.isna(first) else (pd.Timestamp(first), pd.Timestamp(last))


def choose_windows(tables: Mapping[str, Any], settings: EvalSettings) -> Windows:
    """Test window = the last ``test_days`` (default: ``test_share`` of the target's time span,
    rounded to whole days) or from ``split`` to the end; validation = the window before it."""
    first, last = _time_span(tables, settings.target)
    if first is None:
        raise EvalInputError(f"target {settings.target!r}: no events to split in time")
    end = last + pd.Timedelta(seconds=1)
    if settings.split is not None:
        t = pd.Timestamp(settings.split)
        if not first < t < end:
            raise EvalInputError(f"split: {t} is outside the data ({first} .. {last})")
    else:
        days = settings.test_days or max(1.0, round((last - first).days * settings.test_share))
        t = (end - pd.Timedelta(days=days)).normalize()
    valid_days = settings.valid_days or settings.test_days or (end - t) / pd.Timedelta(days=1)
    v = t - pd.Timedelta(days=valid_days)
    if v <= first:
        raise EvalInputError(f"validation window starts at {v}, before the first event {first}")
    return Windows(v, t, end)


@dataclass
class Task:
    """One evaluation: training matrix before ``start``, positives in ``[start, end)``."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp
    train: Interactions
    rows: np.ndarray  # evaluated members (rows of train)
    candidates: np.ndarray  # candidate item indices
    eligible: np.ndarray | None  # (len(rows) x len(candidates)) bool, or everyone everything
    relevant: sp.csr_matrix  # (len(rows) x n_items)
    n_relevant: np.ndarray
    n_cold: int  # members with positives in the window who have no training interaction
    pair_rows: np.ndarray | None = None  # calibration pairs: train rows
    pair_items: np.ndarray | None = None  # ... item indices
    pair_labels: np.ndarray | None = None  # ... redeemed in the window (0/1)
    sampled_from: int | None = None  # training members before subsampling (None: all kept)

    def batch(self, rows: np.ndarray | None = None) -> Interactions:
        """Training rows of the evaluated members (or of ``rows``)."""
        return self.train.take(self.rows if rows is None else rows)

    def summary(self) -> dict[str, object]:
        return {
            "window": [self.start.isoformat(), self.end.isoformat()],
            "members": len(self.rows),
            "cold_members": int(self.n_cold),
            "candidate_items": len(self.candidates),
            "train_members": int(self.train.n_members),
            "items": int(self.train.n_items),
            "interactions": int(self.train.confidence.nnz),
            "sampled_from_members": self.sampled_from,
            "mean_relevant": float(np.mean(self.n_relevant)) if len(self.n_relevant) else 0.0,
            "mean_eligible": float(self.eligible.sum(axis=1).mean())
            if self.eligible is not None and len(self.rows)
            else float(len(self.candidates)),
        }


def subsample_members(task: Task, max_members: int | None, seed: int = 0) -> Task:
    """``task`` restricted to a seeded uniform sample of ``max_members`` training members (the
    task itself when it has no more than that): their training rows, and the evaluated rows,
    positives, eligibility and calibration pairs of the sampled members. A uniform sample keeps
    the share of evaluated members and the item popularity of the whole task."""
    n = task.train.n_members
    if max_members is None or n <= max_members:
        return task
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max_members, replace=False))
    new_row = np.full(n, -1, dtype=np.int64)
    new_row[keep] = np.arange(len(keep))
    sel = new_row[task.rows] >= 0
    out = replace(
        task,
        train=task.train.take(keep),
        rows=new_row[task.rows[sel]],
        eligible=None if task.eligible is None else task.eligible[sel],
        relevant=task.relevant[np.flatnonzero(sel)],
        n_relevant=task.n_relevant[sel],
        sampled_from=n,
    )
    if task.pair_rows is not None and task.pair_items is not None:
        pk = new_row[task.pair_rows] >= 0
        out.pair_rows = new_row[task.pair_rows[pk]]
        out.pair_items = task.pair_items[pk]
        out.pair_labels = None if task.pair_labels is None else task.pair_labels[pk]
    log.info("%s task: %d of %d training members sampled", task.name, len(keep), n)
    return out


def _positives(tables: Mapping[str, Any], target: str, start, end) -> pd.DataFrame:
    """(member, item key) of every positive in the window, distinct."""
    if target == "offers":
        ev = tables["offer_events"]
        w = ev.loc[
            (ev[S.TS] >= start)
            & (ev[S.TS] < end)
            & (ev[S.EVENT] == "redeemed")
            & ev[S.OFFER_ID].notna()
        ]
        keys = item_key("offer", w[S.OFFER_ID].to_numpy())
    else:
        col = S.SKU if target == "products" else S.CATEGORY
        tx = tables["transactions"]
        if not isinstance(tx, pd.DataFrame):
            w = _purchases_in(tx, col, start, end)
        else:
            keep = (tx[S.TS] >= start) & (tx[S.TS] < end) & (tx[S.AMOUNT] > 0) & tx[col].notna()
            if S.QUANTITY in tx.columns:
                keep &= ~(tx[S.QUANTITY] <= 0)
            w = tx.loc[keep]
        keys = item_key(TARGET_KIND[target], w[col].to_numpy())
    out = pd.DataFrame({"member": w[S.MEMBER_ID].astype(str).to_numpy(), "item": keys})
    return out.drop_duplicates(ignore_index=True)


def _purchases_in(tx: ir.Table, col: str, start: Any, end: Any) -> pd.DataFrame:
    """Distinct (member, ``col``) of the purchases in ``[start, end)``, computed by the backend."""
    lo = ibis.literal(pd.Timestamp(start).to_pydatetime(), type="timestamp")
    hi = ibis.literal(pd.Timestamp(end).to_pydatetime(), type="timestamp")
    t = tx.filter(tx[S.TS] >= lo, tx[S.TS] < hi, tx[S.AMOUNT] > 0, tx[col].notnull())
    if S.QUANTITY in t.columns:
        t = t.filter(t[S.QUANTITY].isnull() | (t[S.QUANTITY] > 0))
    out = t.select(t[S.MEMBER_ID].cast("string"), t[col].cast("string")).distinct()
    return out.to_pandas()


def _hold_end(tables: Mapping[str, Any], sent: pd.DataFrame) -> pd.Series:
    """When each send's offer stops being redeemable: ``duration_days`` after the send, else
    the offer's ``valid_to``, else unknown (NaT)."""
    offers = tables["offers"].set_index(S.OFFER_ID)
    dur = sent[S.OFFER_ID].map(offers[S.DURATION_DAYS]) if S.DURATION_DAYS in offers else None
    valid_to = sent[S.OFFER_ID].map(offers[S.VALID_TO]) if S.VALID_TO in offers else None
    hold_end = pd.Series(pd.NaT, index=sent.index, dtype="datetime64[us]")
    if valid_to is not None:
        hold_end = hold_end.fillna(pd.to_datetime(valid_to))
    if dur is not None:
        by_duration = sent[S.TS] + pd.to_timedelta(dur.astype(float), unit="D")
        hold_end = by_duration.where(dur.notna(), hold_end)
    return hold_end


def _held(tables: Mapping[str, Any], start, end) -> pd.DataFrame:
    """(member, offer key) of offers held during the window (see module docstring)."""
    ev = tables["offer_events"]
    sent = ev.loc[(ev[S.EVENT] == "sent") & (ev[S.TS] < end) & ev[S.OFFER_ID].notna()]
    hold_end = _hold_end(tables, sent)
    held = (hold_end >= start) | (hold_end.isna() & (sent[S.TS] >= start))
    h = sent.loc[held]
    out = pd.DataFrame(
        {
            "member": h[S.MEMBER_ID].astype(str).to_numpy(),
            "item": item_key("offer", h[S.OFFER_ID].to_numpy()),
        }
    )
    return out.drop_duplicates(ignore_index=True)


def _observed_until(tables: Mapping[str, Any]) -> pd.Timestamp:
    """The data's last timestamp: the latest offer event or transaction."""
    last = [_time_span(tables, t)[1] for t in ("offers", "products") if _has(tables, t)]
    return max(pd.Timestamp(x) for x in last if x is not None)


def _has(tables: Mapping[str, Any], target: str) -> bool:
    return ("offer_events" if target == "offers" else "transactions") in tables


def _send_pairs(tables: Mapping[str, Any], start, end, observed_until) -> pd.DataFrame:
    """(member, offer key, label) of the sends in ``[start, end)`` whose whole redeemable
    period the data observes (it ends by ``observed_until``, the data's last timestamp; a send
    whose offer has no known end: until ``end``); label 1 when that member redeemed that offer
    after the send and within that period (redemptions after ``end`` included). That is what a
    send's P(redeem) means. A send that straddles the window's start (redemptions before it
    not seen) or the data's end (not over yet) is left out: how much of it would be cut off
    differs from offer to offer with the campaigns' dates."""
    ev = tables["offer_events"]
    ev = ev.loc[ev[S.OFFER_ID].notna()]
    sent = ev.loc[(ev[S.EVENT] == "sent") & (ev[S.TS] >= start) & (ev[S.TS] < end)]
    hold = _hold_end(tables, sent)
    keep = (hold.isna() | (hold <= observed_until)).to_numpy()
    until = hold.where(hold.notna(), pd.Timestamp(end)).to_numpy()
    sent = sent.loc[keep].assign(until=until[keep])
    key = [S.MEMBER_ID, S.OFFER_ID]
    first = sent.sort_values(S.TS, kind="stable").groupby(key, sort=False).head(1)
    first = first[[*key, S.TS, "until"]].rename(columns={S.TS: "sent_at"})
    red = ev.loc[ev[S.EVENT] == "redeemed", [*key, S.TS]].merge(first, on=key, how="inner")
    hit = red.loc[(red[S.TS] >= red["sent_at"]) & (red[S.TS] <= red["until"]), key]
    hit = hit.drop_duplicates().assign(label=1)
    out = first.merge(hit, on=key, how="left")
    return pd.DataFrame(
        {
            "member": out[S.MEMBER_ID].astype(str).to_numpy(),
            "item": item_key("offer", out[S.OFFER_ID].to_numpy()),
            "label": out["label"].fillna(0).to_numpy(dtype=np.int8),
        }
    )


def _informational(tables: Mapping[str, Any], item_ids: np.ndarray) -> np.ndarray:
    """Item indices of the offers of kind ``informational``."""
    offers = tables["offers"]
    info = offers.loc[offers[S.KIND] == "informational", S.OFFER_ID].to_numpy()
    idx = pd.Index(item_ids).get_indexer(pd.Index(item_key("offer", info)))
    return idx[idx >= 0]


def _pairs_matrix(pairs: pd.DataFrame, member_ids: np.ndarray, item_ids: np.ndarray):
    r = pd.Index(member_ids).get_indexer(pairs["member"])
    c = pd.Index(item_ids).get_indexer(pairs["item"])
    ok = (r >= 0) & (c >= 0)
    m = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (r[ok], c[ok])),
        shape=(len(member_ids), len(item_ids)),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def build_task(
    tables: Mapping[str, Any],
    start: pd.Timestamp,
    end: pd.Timestamp,
    settings: EvalSettings,
    segments_source: Mapping[str, pd.DataFrame] | FeatureTables,
    name: str = "test",
) -> Task:
    """Training matrix before ``start`` (with segments as of ``start``), positives and
    candidates in ``[start, end)``, the evaluated members and the calibration pairs."""
    train = build_interactions(tables, start, settings.interaction_settings())
    seg = member_segments(segments_source, start)
    labels = seg.reindex(train.member_ids).fillna("none|none").to_numpy(dtype=str)
    train = train.with_segments(labels)
    kind = TARGET_KIND[settings.target]
    candidates = train.items_of_kind(kind)
    if settings.target == "offers" and settings.redeemable_only:
        candidates = np.setdiff1d(candidates, _informational(tables, train.item_ids))
    if len(candidates) == 0:
        raise EvalInputError(f"target {settings.target!r}: no {kind} items in the training data")
    pos = _positives(tables, settings.target, start, end)
    held = settings.target == "offers" and settings.candidates == "held"
    if held:
        hold = _held(tables, start, end)
        pos = pos.merge(hold, on=["member", "item"], how="inner")
    n_cold = int((~pos["member"].isin(train.member_ids)).groupby(pos["member"]).any().sum())
    relevant_all = _pairs_matrix(pos, train.member_ids, train.item_ids)
    # relevant counts: every distinct positive (unknown items included) of known members
    n_rel_all = pos.groupby("member").size().reindex(train.member_ids, fill_value=0).to_numpy()
    ok = n_rel_all > 0
    eligible_all = None
    if held:
        held_m = _pairs_matrix(hold, train.member_ids, train.item_ids)[:, candidates]
        n_held = np.diff(held_m.indptr)
        ok &= n_held >= settings.min_candidates
        eligible_all = held_m
    rows = np.flatnonzero(ok)
    if len(rows) == 0:
        raise EvalInputError(
            f"{name} window {start} .. {end}: no member has a training interaction and a "
            f"positive ({settings.target}) in the window"
        )
    eligible = None if eligible_all is None else eligible_all[rows].toarray() > 0
    task = Task(
        name=name,
        start=start,
        end=end,
        train=train,
        rows=rows,
        candidates=candidates,
        eligible=eligible,
        relevant=relevant_all[rows],
        n_relevant=n_rel_all[rows],
        n_cold=n_cold,
    )
    if settings.target == "offers":
        _add_pairs(
            task, tables, start, end, held_m if held else None, relevant_all,
            whole_sends=settings.calibration_pairs == "sends",
        )  # fmt: skip
    log.info("%s task: %s", name, task.summary())
    return task


def _add_pairs(task, tables, start, end, held_m, relevant_all, whole_sends=False) -> None:
    """Calibration pairs: with held candidates, every (known member, held offer) labelled
    redeemed inside the window, or with ``whole_sends`` every send the window observes whole
    (:func:`_send_pairs`) to a known member of a candidate offer, labelled over its redeemable
    period; else every offer for the known members with an offer event in the window."""
    if held_m is not None and whole_sends:
        sp_ = _send_pairs(tables, start, end, _observed_until(tables))
        rows = pd.Index(task.train.member_ids).get_indexer(sp_["member"])
        items = pd.Index(task.train.item_ids).get_indexer(sp_["item"])
        keep = (rows >= 0) & np.isin(items, task.candidates)
        rows, items = rows[keep], items[keep]
        labels = sp_["label"].to_numpy()[keep] > 0
    elif held_m is not None:
        coo = held_m.tocoo()
        rows, items = coo.row, task.candidates[coo.col]
        labels = np.asarray(relevant_all[rows, items]).ravel() > 0
    else:
        ev = tables["offer_events"]
        active = ev.loc[(ev[S.TS] >= start) & (ev[S.TS] < end), S.MEMBER_ID].astype(str).unique()
        members = pd.Index(task.train.member_ids).get_indexer(active)
        members = np.sort(members[members >= 0])
        rows = np.repeat(members, len(task.candidates))
        items = np.tile(task.candidates, len(members))
        labels = np.asarray(relevant_all[rows, items]).ravel() > 0
    order = np.lexsort((items, rows))
    task.pair_rows, task.pair_items = rows[order], items[order]
    task.pair_labels = labels[order].astype(np.int8)


def _batches(n: int, size: int):
    for lo in range(0, n, size):
        yield np.arange(lo, min(n, lo + size))


def rank_task(model: AffinityModel, task: Task, k: int, batch_size: int = 256) -> np.ndarray:
    """Top-k item indices of every evaluated member (eligible offers only)."""
    out = []
    for b in _batches(len(task.rows), batch_size):
        elig = None if task.eligible is None else task.eligible[b]
        out.append(model.rank(task.batch(task.rows[b]), task.candidates, k, elig).items)
    return np.vstack(out) if out else np.empty((0, k), dtype=np.int64)


def evaluate_model(
    model: AffinityModel, task: Task, ks: tuple[int, ...] = KS, batch_size: int = 256
) -> dict[str, float]:
    """Ranking metrics at each k, catalog coverage at the largest k and fallback shares."""
    kmax = max(ks)
    ranked = rank_task(model, task, kmax, batch_size)
    out = ranking_metrics(ranked, task.relevant, ks, task.n_relevant)
    out[f"catalog_coverage@{kmax}"] = catalog_coverage(ranked, kmax, len(task.candidates))
    used = model.fallback(task.batch(), task.candidates)
    for fb in FALLBACKS:
        out[f"share_{fb}"] = float(np.mean(used == fb))
    return out


def pair_scores(model: AffinityModel, task: Task, batch_size: int = 256) -> np.ndarray:
    """The model's score of every calibration pair of ``task``."""
    if task.pair_rows is None or task.pair_items is None:
        raise EvalInputError(f"{task.name} task has no calibration pairs (target is not offers)")
    members, first = np.unique(task.pair_rows, return_index=True)
    out = np.empty(len(task.pair_rows), dtype=np.float32)
    col = pd.Index(task.candidates)
    for b in _batches(len(members), batch_size):
        scores = model.score(task.batch(members[b]), task.candidates)
        lo = first[b[0]]
        hi = first[b[-1] + 1] if b[-1] + 1 < len(first) else len(task.pair_rows)
        r = np.searchsorted(members[b], task.pair_rows[lo:hi])
        c = col.get_indexer(task.pair_items[lo:hi])
        out[lo:hi] = scores[r, c]
    return out
