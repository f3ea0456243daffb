"""Ground truth of a simulated program, for policy evaluation only (reads ``truth/``).

The simulator (``features.sim.simulate``) writes the true P(redeem | sent) and effects for a send at
the observation end (``truth/affinity``, ``truth/effects``) and the members' latent traits
(``truth/members_latent``). :class:`SimulatedTruth` rebuilds the simulator's response model
from those traits (``features.sim.response``), so the true value of *any* offer for *any* member
at *any* time can be computed: what an evaluation needs for counterfactual actions at past
campaign sends, not only for the offer that was logged. ``tests/integration/test_policy_eval``
checks that the rebuilt model reproduces ``truth/affinity`` and ``truth/effects``.
At the non-easy difficulty levels (``truth/difficulty.json``) the response also depends on the
member's earlier receipts (read from ``offer_events``), a per-pair noise seed and the share of
baskets that qualify for each offer, all rebuilt here the way the simulator drew them.

It lives in ``training/`` so that nothing in the decision path can import it (serving never
imports training: tests/unit/test_import_direction.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalog.model import Catalog, load_catalog
from features.sim import config as C
from features.sim.config import Difficulty, SimConfig
from features.sim.members import Members
from features.sim.purchases import mean_line_value
from features.sim.qualify import qualify_share
from features.sim.response import (
    Context,
    baseline_probability,
    effects,
    offer_params,
    redeem_probability,
    respond,
)
from features.sources import schema as S
from serving.engine.errors import EngineInputError

__all__ = ["SimulatedTruth"]


@dataclass
class SimulatedTruth:
    """The simulator's response model for the members of a written program."""

    member_ids: np.ndarray
    members: Members
    catalog: Catalog
    window_days: int
    difficulty: Difficulty = field(default_factory=Difficulty)
    pair_seed: int = 0
    qualify: np.ndarray | None = None  # (members, offers) share of baskets that qualify
    send_keys: np.ndarray | None = None  # sorted member_row << 32 | send time (s)

    @classmethod
    def load(cls, data_dir: Path | str, config: SimConfig | None = None) -> SimulatedTruth:
        """Read ``members``, ``catalog.yaml`` and ``truth/members_latent`` of ``data_dir``."""
        d = Path(data_dir)
        latent_path = d / "truth" / "members_latent.parquet"
        if not latent_path.is_file():
            raise EngineInputError(
                f"{latent_path} not found: policy evaluation needs a simulated program "
                "(offers simulate --out DIR)"
            )
        cfg = config or SimConfig()
        latent = pd.read_parquet(latent_path)
        members = pd.read_parquet(d / "members.parquet")
        members = members.set_index(S.MEMBER_ID).loc[latent[S.MEMBER_ID].to_numpy()]
        n = len(latent)
        seconds = lambda col: (  # noqa: E731
            members[col].to_numpy(dtype="datetime64[s]").astype(np.int64)
        )
        lapse = latent["lapse_at"].to_numpy(dtype="datetime64[s]")
        lapse_s = np.where(np.isnat(lapse), Members.NO_LAPSE, lapse.astype(np.int64))
        pref = np.column_stack([latent[f"pref_{c}"] for c in C.CATEGORIES]).astype(np.float32)
        resp = np.column_stack([latent[f"resp_{k}"] for k in S.OFFER_KINDS]).astype(np.float32)
        segment = pd.Index(list(C.SEGMENTS)).get_indexer(members[S.SEGMENT].astype(object))
        f32 = np.float32
        m = Members(
            n=n,
            joined_at=seconds(S.JOINED_AT),
            birth_date=seconds(S.BIRTH_DATE),
            age=members[S.AGE].to_numpy(dtype=float),
            gender=np.zeros(n, dtype=np.int8),
            income=members[S.INCOME].to_numpy(dtype=float),
            region=np.zeros(n, dtype=np.int8),
            home_store=np.zeros(n, dtype=np.int16),
            segment=segment.astype(np.int8),
            email_opt_in=members[S.EMAIL_OPT_IN].to_numpy(dtype=bool),
            app_opt_in=members[S.APP_OPT_IN].to_numpy(dtype=bool),
            pref=pref,
            price_sensitivity=latent["price_sensitivity"].to_numpy(dtype=f32),
            rate=latent["purchase_rate"].to_numpy(dtype=np.float64),
            lapse_at=lapse_s,
            spend_scale=latent["spend_scale"].to_numpy(dtype=f32),
            view_prob=latent["view_prob"].to_numpy(dtype=f32),
            log_resp=np.log(resp).astype(f32),
            incr_z=latent["incrementality_shift"].to_numpy(dtype=f32),
            keep_share=latent["points_keep_share"].to_numpy(dtype=f32),
        )
        catalog = load_catalog(d / "catalog.yaml")
        ids = latent[S.MEMBER_ID].to_numpy(dtype=object)
        level, seed = _difficulty(d / "truth" / "difficulty.json")
        if level.is_easy:
            return cls(ids, m, catalog, cfg.effect_window_days)
        op = offer_params(catalog, cfg.effect_window_days)
        qualify = None
        if level.redemption_rules:
            qualify = qualify_share(
                m.pref, m.spend_scale, op.min_spend, op.category, level.mc_baskets, seed
            )
        events = pd.read_parquet(d / "offer_events.parquet", columns=[S.MEMBER_ID, S.TS, S.EVENT])
        sent = events[events[S.EVENT] == "sent"]
        rows = pd.Index(ids).get_indexer(sent[S.MEMBER_ID].to_numpy(dtype=object))
        ts = sent[S.TS].to_numpy(dtype="datetime64[s]").astype(np.int64)
        keys = np.sort((rows.astype(np.int64) << 32) | ts)
        return cls(ids, m, catalog, cfg.effect_window_days, level, seed, qualify, keys)

    def receipts_before(self, member_rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Offers each member received strictly before ``t`` (the fatigue count)."""
        if self.send_keys is None:
            return np.zeros(len(member_rows), dtype=np.int64)
        lo = np.searchsorted(self.send_keys, member_rows << 32, side="left")
        hi = np.searchsorted(self.send_keys, (member_rows << 32) | t, side="left")
        return hi - lo

    def rows(self, member_ids: np.ndarray | list[str]) -> np.ndarray:
        """Positions of the given member ids (raises on an unknown id)."""
        pos = pd.Index(self.member_ids).get_indexer(np.asarray(member_ids, dtype=object))
        if (pos < 0).any():
            bad = np.asarray(member_ids, dtype=object)[pos < 0][:3]
            raise EngineInputError(f"member_id: {list(bad)} not in the simulated program")
        return pos

    def pairs(
        self, member_rows: np.ndarray, offer_cols: np.ndarray, at: np.ndarray | pd.Timestamp
    ) -> tuple[np.ndarray, np.ndarray]:
        """True (P(redeem | sent), incremental spend over the window) of each pair at ``at``.

        ``offer_cols`` index the catalog's offers (file order); ``at`` is one time or one per
        pair. Same formulas as the simulator's ``truth/`` files (features.sim.response).
        """
        mi = np.asarray(member_rows, dtype=np.int64)
        oi = np.asarray(offer_cols, dtype=np.int64)
        t = np.broadcast_to(
            np.asarray(at, dtype="datetime64[s]").astype(np.int64), mi.shape
        ).astype(np.int64)
        op = offer_params(self.catalog, self.window_days)
        ctx = None
        if not self.difficulty.is_easy:
            n_prev = self.receipts_before(mi, t)
            ctx = Context(self.difficulty, t, n_prev, self.pair_seed, self.qualify)
        r = respond(self.members, mean_line_value(self.members), op, mi, oi, ctx)
        dur = np.minimum(op.duration[oi], self.window_days)
        p = redeem_probability(r, baseline_probability(self.members, mi, t, dur))
        if ctx is None:
            return p.astype(np.float64), (r.q * r.mu).astype(np.float64)
        _, _, tau_s = effects(r, self.members, mi, t, self.window_days, self.difficulty)
        return p.astype(np.float64), tau_s.astype(np.float64)

    def logger_support(
        self,
        features: pd.DataFrame,
        at: pd.Timestamp,
        pool: np.ndarray,
        received: np.ndarray,
        config: SimConfig | None = None,
    ) -> np.ndarray:
        """(n, n_offers): the offers the simulator's campaign could have drawn for each member
        at ``at`` (its own eligibility rules, ``features.sim.campaigns``), within ``pool``.

        ``features``: the members' features as of ``at`` (``member_id``, ``lifecycle_stage``,
        ``spend_365d``, ``spend_total``, ``points_balance``, ``n_purchases_total``);
        ``received``: (n, n_offers) sends before ``at`` (for the per-member caps). Off-policy
        estimates need the logging policy's support; this is the simulator's, rebuilt.
        """
        from features.sim.campaigns import YEAR, _eligible, _State  # the logger's own rules

        cfg = config or SimConfig()
        idx = self.rows(features[S.MEMBER_ID].to_numpy(dtype=object))
        t = int(np.datetime64(pd.Timestamp(at), "s").astype(np.int64))
        origin = int(
            np.datetime64(cfg.end - pd.Timedelta(days=cfg.history_days), "s").astype(np.int64)
        )
        covered = (t - max(t - 365 * 86_400, origin)) / 86_400
        spend = features["spend_365d"].to_numpy(dtype=np.float64)
        annual = spend * 365 / max(covered, 1.0)
        bonus = features["points_balance"].to_numpy(dtype=np.float64) - features[
            "spend_total"
        ].to_numpy(dtype=np.float64)
        m = self.members
        stage = pd.Index(list(S.LIFECYCLE_STAGES)).get_indexer(
            features["lifecycle_stage"].astype(object)
        )
        t_day = t // 86_400
        state = _State(
            stage=stage,
            tier=np.searchsorted(np.asarray(cfg.tier_thresholds), annual, side="right") - 1,
            points=np.floor(annual * m.keep_share[idx]) + np.maximum(np.round(bonus), 0),
            annual_spend=annual,
            baskets=features["n_purchases_total"].to_numpy(dtype=np.int64),
            days_to_birthday=np.mod(m.birth_date[idx] // 86_400 - t_day, YEAR),
            days_to_anniversary=np.mod(m.joined_at[idx] // 86_400 - t_day, YEAR),
            tenure_days=(t - m.joined_at[idx]) / 86_400,
        )
        offers = self.catalog.offers
        out = np.zeros((len(idx), len(offers)), dtype=bool)
        for j in np.flatnonzero(pool):
            cap = offers[j].per_member_cap or 255
            out[:, j] = _eligible(offers[j], state, m, idx, cfg) & (received[:, j] < cap)
        return out

    def matrix(self, member_ids: np.ndarray, at: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """(n_members, n_offers) true P(redeem) and incremental spend for a send at ``at``."""
        rows = self.rows(member_ids)
        m = len(self.catalog.offers)
        mi = np.repeat(rows, m)
        oi = np.tile(np.arange(m), len(rows))
        p, s = self.pairs(mi, oi, pd.Timestamp(at))
        return p.reshape(len(rows), m), s.reshape(len(rows), m)


def _difficulty(path: Path) -> tuple[Difficulty, int]:
    """The level and pair seed of ``truth/difficulty.json`` (easy when the file is absent:
    programs written before the levels existed)."""
    if not path.is_file():
        return Difficulty(), 0
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw = dict(raw)
    seed = int(raw.pop("pair_seed", 0))
    name = raw.pop("level", "easy")
    known = set(Difficulty.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise EngineInputError(f"{path}: unknown field(s) {sorted(unknown)}")
    raw["auto_apply_kinds"] = tuple(raw.get("auto_apply_kinds", ()))
    return Difficulty(name=name, **raw), seed
