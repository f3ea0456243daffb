"""The off-policy gate: a challenger model is promoted only if the *decisions* it leads to are
not worse than the champion's on logged decisions it was not trained on.

The metric gate of :mod:`training.registry` (Qini, NDCG) judges a model alone; this one judges
the policy the service would run with it. On the latest logged campaign (randomised sends with
their logged propensities and the control group, rebuilt by ``training.uplift.data``), the
engine decides through the one adapter with (a) the champions of both model families and
(b) the challenger of one family with the other family's champion; each policy's
doubly-robust value per logged decision is estimated and the challenger passes when its value
is no more than one standard error (of the paired difference) below the champion's.

The reward model of the DR estimator is the same for both policies (E[spend | features] on
training rows before the campaign), so the comparison does not favour either model's own
beliefs; the estimate is unbiased given the logged propensities. Data without logged
propensities (most real sources) cannot be judged this way: the check says so and passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.catalog.model import load_catalog
from features.sources import schema as S
from features.sources.validate import load_dir
from serving.engine import (
    DecisionContext,
    DecisionEngine,
    EngineSettings,
    state_from_events,
)
from serving.engine.adapters import model_inputs
from serving.engine.settings import ExplorationSettings, HoldoutSettings
from serving.loader import load_model
from training.policy.evaluate import LoggedDecisions, ope_estimate
from training.policy.simulated import _logged_rows, _outcome_model, latest_campaign_start

__all__ = ["PolicyCheck", "PolicyGateResult", "PolicyValue"]

log = logging.getLogger(__name__)

FAMILIES = {"offers-affinity": "affinity", "offers-uplift": "uplift"}


@dataclass(frozen=True)
class PolicyValue:
    """DR value per logged decision of a policy (incremental over sending nothing)."""

    versions: dict[str, str]
    value: float
    se: float


@dataclass(frozen=True)
class PolicyGateResult:
    """The two policies' values, the paired difference and the verdict."""

    passed: bool
    reason: str
    champion: PolicyValue | None = None
    challenger: PolicyValue | None = None
    difference: float | None = None
    difference_se: float | None = None
    contexts: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": self.passed, "reason": self.reason}
        for name in ("champion", "challenger"):
            v = getattr(self, name)
            if v is not None:
                out[name] = {"versions": v.versions, "dr_value": v.value, "se": v.se}
        out.update(
            difference=self.difference,
            difference_se=self.difference_se,
            contexts=self.contexts,
            **self.details,
        )
        return out


def _latest_observed_campaign(rows: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """Start of the latest campaign with rows whose outcome window is over (in the training
    set): a campaign still running (the service's decisions of today, exported by ``offers
    export``) has no outcomes yet and cannot judge a policy. No such rows: the latest campaign.
    """
    logged = rows.loc[rows[S.CAMPAIGN_ID].notna()]
    if logged.empty:
        return latest_campaign_start(tables)
    return pd.Timestamp(logged.groupby(S.CAMPAIGN_ID)[S.TS].min().max())


class PolicyCheck:
    """``check(registry, name, champion_version, challenger_version)`` on ``data_dir``'s latest
    logged campaign (see the module docstring)."""

    def __init__(self, data_dir: Path | str, seed: int = 0, margin_rate: float | None = None):
        self.data_dir = Path(data_dir)
        self.seed = seed
        self.margin_rate = margin_rate
        self._contexts: Any = None

    # -- the logged decisions ---------------------------------------------------------------
    def _load(self) -> Any:
        if self._contexts is not None:
            return self._contexts
        from training.uplift.data import TrainingSetConfig, build_training_set

        tables = load_dir(self.data_dir)
        train = build_training_set(self.data_dir, TrainingSetConfig(treatment="kind"))
        T = _latest_observed_campaign(train.frame, tables)
        rows = _logged_rows(train, tables, T)
        early = train.subset((train.frame[S.TS] + pd.Timedelta(days=14) <= T).to_numpy())
        logged = rows[S.PROPENSITY].notna().all() and len(rows) > 0
        baseline = _outcome_model(early, self.seed) if logged and len(early.frame) else None
        catalog = load_catalog(self.data_dir / "catalog.yaml")
        settings = EngineSettings(
            k=1, holdout=HoldoutSettings(share=0.0), exploration=ExplorationSettings(epsilon=0.0)
        )
        if self.margin_rate is not None:
            scoring = settings.scoring.model_copy(update={"margin_rate": self.margin_rate})
            settings = settings.model_copy(update={"scoring": scoring})
        self._contexts = (tables, T, rows, baseline, DecisionEngine(catalog, settings), logged)
        return self._contexts

    def _policy(self, affinity: Any, uplift: Any, versions: dict[str, str]) -> np.ndarray:
        """(n, m) probability of each offer per logged context under the engine's policy."""
        tables, _T, rows, _b, engine, _ok = self._load()
        o = engine.offers
        offer_ids = list(o.ids)
        out = np.zeros((len(rows), o.n))
        for _cid, g in rows.groupby(S.CAMPAIGN_ID, sort=True):
            idx = g.index.to_numpy()
            g = g.reset_index(drop=True)
            t = g[S.TS].min()
            pool = np.isin(offer_ids, g[S.OFFER_ID].dropna().unique())
            ids = g[S.MEMBER_ID].to_numpy(dtype=object)
            inputs = model_inputs(
                affinity, uplift, g, o, model_versions=versions,
                uncertainty_z=engine.settings.scoring.uncertainty_z,
            )  # fmt: skip
            ctx = DecisionContext(str(g[S.CHANNEL].iloc[0]), t, "policy-gate", k=1)
            state = state_from_events(
                tables["offer_events"], ids, o, t, engine.settings.caps.period_days
            )
            left = np.where(pool, np.inf, 0.0)  # the campaign's offers only; no budgets
            picks = engine.decide(g, inputs, ctx, state, left).picks[:, 0]
            has = picks >= 0
            out[idx[has], picks[has]] = 1.0
        return out

    def _value(self, prob: np.ndarray) -> tuple[np.ndarray, LoggedDecisions]:
        """Per-context DR terms of ``prob`` minus those of sending nothing."""
        _t, _T, rows, baseline, engine, _ok = self._load()
        o = engine.offers
        margin = engine.settings.scoring.margin_rate
        action = pd.Index(list(o.ids)).get_indexer(rows[S.OFFER_ID].fillna("").to_numpy(object))
        reward = (
            margin * rows["spend"].to_numpy(dtype=np.float64)
            - np.where(action >= 0, o.cost[np.maximum(action, 0)], 0.0)
            * rows["redeemed"].to_numpy()
        )
        logged = LoggedDecisions(action, rows[S.PROPENSITY].to_numpy(np.float64), reward)
        b = margin * baseline(rows)
        q = np.repeat(b[:, None], o.n + 1, axis=1)  # the same control variate for every action
        target = np.column_stack([prob, np.clip(1.0 - prob.sum(axis=1), 0.0, 1.0)])
        nothing = np.zeros_like(target)
        nothing[:, -1] = 1.0
        return ope_estimate(logged, target, q)["dr"] - ope_estimate(logged, nothing, q)[
            "dr"
        ], logged

    # -- the check --------------------------------------------------------------------------
    def __call__(
        self, registry: Any, name: str, champion_version: str, challenger_version: str
    ) -> PolicyGateResult:
        family = FAMILIES.get(name)
        if family is None:
            return PolicyGateResult(True, f"no policy check for model {name!r}")
        other_name = next(n for n in FAMILIES if n != name)
        other = registry.version_of(other_name, "champion")
        if other is None:
            return PolicyGateResult(True, f"no {other_name} champion: policy check skipped")
        _t, T, rows, baseline, _e, logged = self._load()
        if not logged or baseline is None:
            return PolicyGateResult(
                True, "no logged propensities on the latest campaign: policy check not applicable"
            )
        lkg = registry.home / "policy-gate-models"

        def load(model_name: str, version: str) -> Any:
            uri = f"models:/{model_name}/{version}"
            return load_model(
                FAMILIES[model_name], uri, tracking_uri=registry.tracking_uri, lkg_dir=lkg,
                fallback=False,
            ).model  # fmt: skip

        other_model = load(other_name, other)
        values: dict[str, tuple[np.ndarray, dict[str, str]]] = {}
        for role, version in (("champion", champion_version), ("challenger", challenger_version)):
            mine = load(name, version)
            pair = {family: mine, FAMILIES[other_name]: other_model}
            versions = {family: version, FAMILIES[other_name]: other}
            terms, _ = self._value(self._policy(pair["affinity"], pair["uplift"], versions))
            values[role] = (terms, versions)
        n = len(rows)

        def summary(terms: np.ndarray, versions: dict[str, str]) -> PolicyValue:
            se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            return PolicyValue(versions, float(terms.mean()), se)

        champ = summary(*values["champion"])
        chall = summary(*values["challenger"])
        diff = values["challenger"][0] - values["champion"][0]
        d, d_se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        passed = d >= -d_se
        verdict = "not worse than" if passed else "worse than"
        reason = (
            f"policy DR value {chall.value:.4f} vs champion's {champ.value:.4f} "
            f"(difference {d:+.4f}, se {d_se:.4f}): {verdict} the champion's "
            f"(held-out campaign from {T.date()}, {n} logged decisions)"
        )
        return PolicyGateResult(
            passed, reason, champ, chall, d, d_se, n,
            {"campaign_start": str(T), "rule": "challenger >= champion - 1 se (paired)"},
        )  # fmt: skip
