"""What a whole send shares: the engine, the budgets left, and the budget prices solved ONCE.

Budget prices (the Lagrangian multipliers of ``serving.engine.allocation``) are solved on a
sample of the send: the members whose salted id hash falls under ``price_sample / N`` (all
members when the send is smaller), with every budget scaled by the sample's share. Every chunk
(or Spark partition) is then decided at these fixed prices, so a member's offers do not depend
on which chunk it is in. The prices only steer; the hard guarantee that no budget is exceeded
comes from the budget left carried across chunks (:func:`usage`, see ``serving.batch.local``)
or from per-partition quotas (``serving.batch.spark``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog.model import Catalog
from features.sources.schema import OFFER_ID
from serving.batch.campaign import Campaign
from serving.batch.scorers import Scorer
from serving.engine import (
    DecisionBatch,
    DecisionContext,
    DecisionEngine,
    EngineSettings,
    MemberOfferState,
    MemberTable,
    ScoreInputs,
)
from serving.engine.hashing import unit_interval

__all__ = ["SAMPLE_SALT", "SendPlan", "build_engine", "in_price_sample", "surprise_spend", "usage"]

log = logging.getLogger(__name__)

SAMPLE_SALT = "price-sample"
_UNLIMITED = 1e18  # a budget that never binds but keeps its name (and price)


def build_engine(campaign: Campaign, catalog: Catalog) -> DecisionEngine:
    """The engine with the campaign's settings overrides and offers per member."""
    settings = EngineSettings.model_validate({**campaign.engine, "k": campaign.offers_per_member})
    campaign.check_offers([o.offer_id for o in catalog.offers])
    return DecisionEngine(catalog, settings)


def in_price_sample(member_ids: np.ndarray, rate: float) -> np.ndarray:
    """Members of the price sample (a salted hash of the id: the same in every chunk)."""
    if rate >= 1.0:
        return np.ones(len(member_ids), dtype=bool)
    return unit_interval(np.asarray(member_ids, dtype=object), SAMPLE_SALT) < rate


def surprise_spend(batch_rows: pd.DataFrame) -> float:
    """Expected cost of the surprises among decided rows (what the surprise budget counts)."""
    keep = ((batch_rows["status"] == "offers") & batch_rows["is_surprise"]).to_numpy()
    return float(batch_rows["expected_cost"].loc[keep].sum())


def usage(batch_rows: pd.DataFrame, engine: DecisionEngine) -> tuple[np.ndarray, float]:
    """Budget spent by decided rows: per offer in its budget's unit, and the expected money.

    Spend follows the engine's budget basis: expected redemptions (P(redeem)) or every send.
    """
    o = engine.offers
    cols = [OFFER_ID] + (
        ["p_redeem"] if engine.settings.allocation.budget_basis == "expected" else []
    )
    shown = batch_rows[cols].loc[(batch_rows["status"] == "offers").to_numpy()]
    j = _offer_index(shown[OFFER_ID], o.ids)
    if engine.settings.allocation.budget_basis == "expected":
        base = shown["p_redeem"].to_numpy(dtype=np.float64)
    else:
        base = np.ones(len(shown))
    money_unit = np.array([u == "money" for u in o.budget_unit])
    per_offer = np.bincount(
        j, weights=base * np.where(money_unit[j], o.cost[j], 1.0), minlength=o.n
    )
    money = float((base * o.cost[j]).sum())
    return per_offer, money


def _offer_index(offer_ids: pd.Series, ids: tuple[str, ...] | list[str]) -> np.ndarray:
    """Position of each offer id in ``ids`` (-1: unknown), without Python objects when the
    column is categorical over ``ids`` or Arrow-backed."""
    dtype = offer_ids.dtype
    if isinstance(dtype, pd.CategoricalDtype) and list(dtype.categories) == list(ids):
        return offer_ids.cat.codes.to_numpy(dtype=np.int64)
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        pos = pc.index_in(pa.array(offer_ids), value_set=pa.array(list(ids), pa.large_string()))
        return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return pd.Index(list(ids)).get_indexer(offer_ids.to_numpy(dtype=object))


@dataclass
class SendPlan:
    """The engine, the send's context, the budgets at the start and the solved prices."""

    engine: DecisionEngine
    context: DecisionContext
    budget_left: np.ndarray  # (m,) per offer in its unit; nan = no budget, 0 = not allowed
    total_money: float | None
    prices: dict[str, float] | None = None
    sample_members: int = 0
    refine_rounds: int = 3

    @classmethod
    def create(cls, campaign: Campaign, catalog: Catalog) -> SendPlan:
        engine = build_engine(campaign, catalog)
        o = engine.offers
        left = o.budget.astype(np.float64).copy()
        for offer_id, amount in campaign.budgets.items():
            left[list(o.ids).index(offer_id)] = amount
        if campaign.offers is not None:
            left[~np.isin(np.asarray(o.ids, dtype=object), campaign.offers)] = 0.0
        ctx = DecisionContext(
            campaign.channel, campaign.send_date, campaign.campaign_id, k=campaign.offers_per_member
        )
        return cls(engine, ctx, left, campaign.total_money)

    @property
    def has_budgets(self) -> bool:
        return bool(np.isfinite(self.budget_left).any() or self.total_money is not None)

    def decide(
        self,
        members: pd.DataFrame | MemberTable,
        scorer: Scorer,
        left: np.ndarray | None = None,
        total_left: float | None = None,
        state: MemberOfferState | None = None,
        prices: dict[str, float] | None = None,
        surprise_left: float | None = None,
        frame: bool = True,
        inputs: ScoreInputs | None = None,
    ) -> DecisionBatch:
        """Decisions for one chunk at the plan's prices with what is left of each budget.

        ``surprise_left``: what is left of the settings' surprise budget (a per-send amount the
        engine applies per call): the chunk is decided by an engine with that amount, and the
        rows keep the send's policy fingerprint. ``frame=False``: only what budget usage needs
        (see ``DecisionEngine.decide``). ``inputs``: the chunk's scores when
        already computed (e.g. in the background), else ``scorer`` scores it.
        """
        if inputs is None:
            if isinstance(members, MemberTable):
                raise TypeError("members: a MemberTable needs its inputs (scores) given")
            inputs = scorer.score(members, self.engine.offers)
        engine = self.engine
        st = engine.settings
        if surprise_left is not None and st.surprise.budget is not None:
            surprise = st.surprise.model_copy(update={"budget": max(surprise_left, 0.0)})
            engine = DecisionEngine(engine.catalog, st.model_copy(update={"surprise": surprise}))
        batch = engine.decide(
            members,
            inputs,
            self.context,
            state=state,
            budget_left=self.budget_left if left is None else left,
            total_money=self.total_money if total_left is None else total_left,
            prices=self.prices if prices is None else prices,
            frame=frame,
        )
        if engine is not self.engine and frame:
            batch.rows["policy"] = st.fingerprint()
        return batch

    def solve_prices(self, sample: pd.DataFrame, rate: float, scorer: Scorer) -> dict[str, float]:
        """Solve the budget prices once on ``sample`` (a ``rate`` share of the send).

        The allocation's prices can sit on the over-spending side of a budget (its repair pass
        then cuts the send in order of value). Applied chunk by chunk, such a cut would depend
        on the chunking, so the prices of any budget still over-spent at fixed prices (with
        exploration and surprises) are raised until the sample fits (doubling, then
        ``refine_rounds`` of bisection): chunks then never need to cut when the sample is the
        whole send, and the output does not depend on the chunk size.
        """
        self.prices = {}
        if not self.has_budgets or len(sample) == 0:
            return self.prices
        rate = min(max(rate, 1e-12), 1.0)
        left = np.where(np.isfinite(self.budget_left), self.budget_left * rate, self.budget_left)
        total = None if self.total_money is None else self.total_money * rate
        inputs = scorer.score(sample, self.engine.offers)
        table = self.engine.member_table(sample)  # validated once for every pass below
        batch = self.engine.decide(
            table, inputs, self.context, budget_left=left, total_money=total, frame=False
        )
        lam = {k: float(v) for k, v in batch.prices.items()}
        names = list(lam)
        limits = np.array([self._limit(nm, left, total) for nm in names])
        unlimited = np.where(np.isfinite(left), np.maximum(left, 0) * 0 + _UNLIMITED, left)
        unlimited = np.where(left == 0, 0.0, unlimited)
        big_total = None if total is None else _UNLIMITED

        def over(prices: dict[str, float]) -> np.ndarray:
            rows = self.engine.decide(
                table,
                inputs,
                self.context,
                budget_left=unlimited,
                total_money=big_total,
                prices=prices,
                frame=False,
            ).rows
            per, money = usage(rows, self.engine)
            used = np.array([self._used(nm, per, money) for nm in names])
            return used > limits * (1 + 1e-9) + 1e-9

        lo = np.array([lam[nm] for nm in names])
        bad = over(dict(zip(names, lo, strict=True)))
        hi = lo.copy()
        step = 0
        while bad.any() and step < 30:
            hi = np.where(bad, hi * 2 + 0.01, hi)
            bad = over(dict(zip(names, hi, strict=True)))
            step += 1
        for _ in range(self.refine_rounds if step else 0):
            mid = (lo + hi) / 2
            trial = np.where(hi > lo, mid, hi)
            bad = over(dict(zip(names, trial, strict=True)))
            hi = np.where(~bad & (hi > lo), trial, hi)
            lo = np.where(bad & (hi > lo), trial, lo)
        self.prices = {nm: float(v) for nm, v in zip(names, hi, strict=True)}
        self.sample_members = len(sample)
        log.info("budget prices on %d sampled members: %s", len(sample), self.prices)
        return self.prices

    def _limit(self, name: str, left: np.ndarray, total: float | None) -> float:
        if name == "total_money":
            return float(total or 0.0)
        return float(left[list(self.engine.offers.ids).index(name.removeprefix("offer:"))])

    def _used(self, name: str, per: np.ndarray, money: float) -> float:
        if name == "total_money":
            return money
        return float(per[list(self.engine.offers.ids).index(name.removeprefix("offer:"))])
