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

from features.catalog import Catalog
from features.schema import OFFER_ID
from serving.batch.campaign import Campaign
from serving.batch.scorers import Scorer
from serving.engine import (
    DecisionBatch,
    DecisionContext,
    DecisionEngine,
    EngineSettings,
    MemberOfferState,
)
from serving.engine.hashing import unit_interval

__all__ = ["SAMPLE_SALT", "SendPlan", "build_engine", "in_price_sample", "usage"]

log = logging.getLogger(__name__)

SAMPLE_SALT = "price-sample"


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


def usage(batch_rows: pd.DataFrame, engine: DecisionEngine) -> tuple[np.ndarray, float]:
    """Budget spent by decided rows: per offer in its budget's unit, and the expected money.

    Spend follows the engine's budget basis: expected redemptions (P(redeem)) or every send.
    """
    o = engine.offers
    shown = batch_rows.loc[batch_rows["status"] == "offers"]
    j = pd.Index(list(o.ids)).get_indexer(shown[OFFER_ID].to_numpy(dtype=object))
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


@dataclass
class SendPlan:
    """The engine, the send's context, the budgets at the start and the solved prices."""

    engine: DecisionEngine
    context: DecisionContext
    budget_left: np.ndarray  # (m,) per offer in its unit; nan = no budget, 0 = not allowed
    total_money: float | None
    prices: dict[str, float] | None = None
    sample_members: int = 0

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
        members: pd.DataFrame,
        scorer: Scorer,
        left: np.ndarray | None = None,
        total_left: float | None = None,
        state: MemberOfferState | None = None,
        prices: dict[str, float] | None = None,
    ) -> DecisionBatch:
        """Decisions for one chunk at the plan's prices with what is left of each budget."""
        inputs = scorer.score(members, self.engine.offers)
        return self.engine.decide(
            members,
            inputs,
            self.context,
            state=state,
            budget_left=self.budget_left if left is None else left,
            total_money=self.total_money if total_left is None else total_left,
            prices=self.prices if prices is None else prices,
        )

    def solve_prices(self, sample: pd.DataFrame, rate: float, scorer: Scorer) -> dict[str, float]:
        """Solve the budget prices once on ``sample`` (a ``rate`` share of the send)."""
        if not self.has_budgets or len(sample) == 0:
            self.prices = {}
            return self.prices
        rate = min(max(rate, 1e-12), 1.0)
        left = np.where(np.isfinite(self.budget_left), self.budget_left * rate, self.budget_left)
        total = None if self.total_money is None else self.total_money * rate
        inputs = scorer.score(sample, self.engine.offers)
        batch = self.engine.decide(
            sample, inputs, self.context, budget_left=left, total_money=total
        )
        self.prices = {k: float(v) for k, v in batch.prices.items()}
        self.sample_members = len(sample)
        log.info("budget prices on %d sampled members: %s", len(sample), self.prices)
        return self.prices
