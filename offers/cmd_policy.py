"""``offers evaluate policy``: the decision engine against baselines on a simulated program.

The engine runs on the real models, trained here from the program's own data with the model
packages' public APIs: the shipped affinity model and its P(redeem) calibrator
(``training.affinity_report.run_evaluation``: validation search, fit before its test window T,
isotonic/Platt calibration) and an uplift X-learner (``models.uplift``) of the 14-day spend on
the logged campaigns (``training.uplift_data``), by offer kind, fitted on the spend minus a
cross-fitted outcome model of the features (the same effects, less noise). Two fits:

* **before T** (affinity as reported, uplift on sends whose window ended by T): the policies
  then act on the campaigns logged at or after T, which these models never saw, for the
  off-policy estimates;
* **to the end of the data** (affinity refitted with the chosen parameters, uplift on every
  send): the policies decide a new send at the observation end, scored with the truth.

The evaluation itself is ``serving.engine.policy_eval``; the truth is ``truth/`` (evaluation
only). Output: ``{"policies": {"engine": {"true_incremental_value", "spend", "redemptions", ...,
"off_policy": {"truth", "ips", "snips", "dr", ...}}, "affinity_top_k": ..., "random": ...,
"oracle": ...}, "engine_vs_affinity_top_k": ..., "setup": ..., "models": ...}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console

from features import schema as S
from offers.cli import evaluate_group

__all__ = ["evaluate_policy", "register", "run_policy_evaluation"]

log = logging.getLogger(__name__)
console = Console(stderr=True)
KIND, OFFER = "kind", "offer"


# ---- models ------------------------------------------------------------------------------------
class OfferCalibrator:
    """P(redeem | sent) from an affinity score, per offer: logistic regression on the score and
    one indicator per offer, fitted on logged sends (offers never sent share the intercept)."""

    def fit(
        self, score: np.ndarray, offer: np.ndarray, redeemed: np.ndarray, n_offers: int
    ) -> OfferCalibrator:
        from sklearn.linear_model import LogisticRegression

        self.n_offers_ = n_offers
        self.lr_ = LogisticRegression(C=1.0, max_iter=1000).fit(
            self._design(score, offer), redeemed
        )
        return self

    def _design(self, score: np.ndarray, offer: np.ndarray) -> np.ndarray:
        onehot = np.zeros((len(score), self.n_offers_))
        onehot[np.arange(len(score)), offer] = 1.0
        return np.column_stack([score, onehot])

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """(n, n_offers) probabilities for a score matrix whose columns are the offers."""
        n, m = scores.shape
        offer = np.tile(np.arange(m), n)
        return self.lr_.predict_proba(self._design(scores.ravel(), offer))[:, 1].reshape(n, m)


@dataclass
class AffinityScorer:
    """An affinity model, the interactions it scores and its P(redeem) calibrator."""

    model: Any
    rows: Any  # models.affinity.Interactions the model reads members from
    calibrator: Any  # OfferCalibrator
    label: str

    def raw(self, member_ids: np.ndarray, offer_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The model's scores (members x offers) and whether each member has a model row."""
        from models.affinity import PERSONALISED, item_key

        items = pd.Index(self.rows.item_ids).get_indexer(item_key("offer", np.asarray(offer_ids)))
        if (items < 0).any():
            missing = np.asarray(offer_ids)[items < 0][:5]
            raise ValueError(f"affinity model: offers {list(missing)} are not among its items")
        batch = self.rows.take(self.rows.member_index(np.asarray(member_ids, dtype=str)))
        raw = self.model.score(batch, items).astype(np.float64)
        return raw, self.model.fallback(batch) == PERSONALISED

    def score(self, member_ids: np.ndarray, offer_ids: list[str]) -> dict[str, np.ndarray]:
        """Raw score, calibrated P(redeem) and "has a model row" per member x offer."""
        raw, has_row = self.raw(member_ids, offer_ids)
        p = np.clip(self.calibrator.predict(raw), 0.0, 1.0)
        return {"score": raw, "p_redeem": p, "has_row": has_row}


def fit_redeem_calibration(
    run: Any, settings: Any, tables: dict[str, pd.DataFrame], offer_ids: list[str], seed: int
) -> tuple[OfferCalibrator, dict[str, Any]]:
    """Calibrate on the sends of the validation window [V, T): the blend (chosen parameters)
    fitted before V scores each sent (member, offer); the label is its redemption."""
    V = pd.Timestamp(run.report["split"]["valid_start"])
    T = pd.Timestamp(run.test_task.start)
    model, rows = refit_affinity(run, settings, tables, V, seed)
    scorer = AffinityScorer(model, rows, None, "calibration")
    ev = tables["offer_events"]
    sent = ev.loc[(ev[S.EVENT] == "sent") & (ev[S.TS] >= V) & (ev[S.TS] < T)]
    red = ev.loc[ev[S.EVENT] == "redeemed", [S.CAMPAIGN_ID, S.MEMBER_ID, S.OFFER_ID]]
    sent = sent.merge(
        red.drop_duplicates().assign(y=1), how="left", on=[S.CAMPAIGN_ID, S.MEMBER_ID, S.OFFER_ID]
    )
    ids = sent[S.MEMBER_ID].drop_duplicates().to_numpy(dtype=object)
    raw, _ = scorer.raw(ids, offer_ids)
    r = pd.Index(ids).get_indexer(sent[S.MEMBER_ID].to_numpy(dtype=object))
    c = pd.Index(offer_ids).get_indexer(sent[S.OFFER_ID].to_numpy(dtype=object))
    y = sent["y"].fillna(0).to_numpy(dtype=int)
    if len(np.unique(y)) < 2:
        raise ValueError(f"redemption calibration: sends in [{V}, {T}) have a single class")
    cal = OfferCalibrator().fit(raw[r, c], c, y, len(offer_ids))
    info = {
        "method": "logistic on the blend score + one indicator per offer",
        "window": [str(V), str(T)],
        "sends": len(y),
        "redeemed": int(y.sum()),
        "offers_sent": len(np.unique(c)),
    }
    return cal, info


@dataclass
class UpliftScorer:
    """Incremental 14-day spend per member and offer from an uplift learner (see fit_uplift)."""

    learner: Any
    encoder: Any
    outcome: Any  # E[spend | x], fitted on the same rows (the DR estimator's baseline)
    grain: str
    feature_columns: tuple[str, ...]
    label: str
    level: dict[str, float]  # offer id -> average effect (empirical Bayes)
    center: dict[str, float]  # arm -> mean prediction over the training rows
    reliability: dict[str, float]  # arm -> weight of the individual deviations

    def effects(self, features: pd.DataFrame, offers: list[Any]) -> np.ndarray:
        """(n, n_offers) incremental 14-day spend; offers without any send get 0."""
        X = self.encoder.transform(features[list(self.feature_columns)])
        eff = self.learner.predict(X)
        arms = {t: j for j, t in enumerate(self.learner.treatments_)}
        out = np.zeros((len(features), len(offers)))
        for j, o in enumerate(offers):
            arm = o.kind if self.grain == KIND else o.offer_id
            if o.offer_id not in self.level or arm not in arms:
                continue
            dev = eff[:, arms[arm]] - self.center[arm]
            out[:, j] = self.level[o.offer_id] + self.reliability[arm] * dev
        return out

    def baseline(self, features: pd.DataFrame) -> np.ndarray:
        return self.outcome.predict(self.encoder.transform(features[list(self.feature_columns)]))


def _lgbm(seed: int, trees: int = 200) -> Any:
    import lightgbm

    return lightgbm.LGBMRegressor(
        n_estimators=trees, learning_rate=0.05, num_leaves=31, min_child_samples=50,
        random_state=seed, verbose=-1, n_jobs=1,
    )  # fmt: skip


def fit_uplift(train: Any, grain: str, seed: int, label: str, trees: int = 200) -> UpliftScorer:
    """Uplift on the logged campaigns, built to be robust to the noise of spend:

    * the outcome is spend minus a cross-fitted E[spend | x] (2 member folds): the same
      effects, much less variance;
    * the *level* of each offer's effect is its mean residual minus the control group's,
      shrunk toward its kind's (empirical Bayes, :func:`offer_levels`);
    * the *individual* deviations come from an X-learner (``models.uplift``) per ``grain``
      arm, weighted by their split-half reliability: two learners on disjoint member halves
      predict the same rows; the served learner is their average, whose reliability is
      2 rho / (1 + rho) (Spearman-Brown) for their correlation rho: the optimal linear
      shrinkage of a noisy predictor toward its mean.
    """
    from models.uplift import XLearner
    from models.uplift.encoding import FeatureEncoder
    from training.uplift_data import SPEND, TREATMENT

    enc = FeatureEncoder().fit(train.features)
    X = enc.transform(train.features)
    y = train.frame[SPEND].to_numpy(dtype=np.float64)
    arm = train.frame[TREATMENT].to_numpy(dtype=object)
    prop = train.frame[S.PROPENSITY].to_numpy(dtype=np.float64)
    fold = (pd.util.hash_array(train.frame[S.MEMBER_ID].to_numpy(dtype=object)) % 2).astype(int)
    m_hat = np.zeros(len(y))
    for f in (0, 1):
        m_hat[fold == f] = _lgbm(seed, trees).fit(X[fold != f], y[fold != f]).predict(X[fold == f])
    r = y - m_hat

    def learner(rows: np.ndarray) -> Any:
        params = {"n_estimators": max(trees // 2, 10)}
        return XLearner(control=train.control, base_params=params, random_state=seed).fit(
            X[rows], r[rows], arm[rows], prop[rows]
        )

    halves = [learner(fold == f) for f in (0, 1)]
    pa, pb = (h.predict(X) for h in halves)
    reliability, center = {}, {}
    for t in sorted(set(halves[0].treatments_) | set(halves[1].treatments_)):
        ja, jb = (list(h.treatments_).index(t) if t in h.treatments_ else -1 for h in halves)
        rho = float(np.corrcoef(pa[:, ja], pb[:, jb])[0, 1]) if min(ja, jb) >= 0 else 0.0
        rho = max(rho, 0.0) if np.isfinite(rho) else 0.0
        reliability[str(t)] = 2 * rho / (1 + rho)
        center[str(t)] = float((pa[:, ja] + pb[:, jb]).mean() / 2) if min(ja, jb) >= 0 else 0.0
    full = _Bagged(halves)
    level = offer_levels(train.frame, r, train.control)
    outcome = _lgbm(seed, trees).fit(X, y)
    return UpliftScorer(full, enc, outcome, grain, train.feature_columns, label, level, center,
                        reliability)  # fmt: skip


class _Bagged:
    """The average of learners fitted on disjoint member halves (arms: the union)."""

    def __init__(self, learners: list[Any]) -> None:
        self.learners = learners
        self.treatments_ = sorted(set().union(*(set(lr.treatments_) for lr in learners)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), len(self.treatments_)))
        count = np.zeros(len(self.treatments_))
        for lr in self.learners:
            cols = [self.treatments_.index(t) for t in lr.treatments_]
            out[:, cols] += lr.predict(X)
            count[cols] += 1
        return out / np.maximum(count, 1)


def offer_levels(frame: pd.DataFrame, resid: np.ndarray, control: str) -> dict[str, float]:
    """Average effect per offer: mean residual of its sends minus the control group's, shrunk
    toward its kind's by ``tau2 / (tau2 + se2)`` (``se2``: the offer mean's sampling variance,
    ``tau2``: the between-offer variance within kinds, method of moments)."""
    from training.uplift_data import TREATMENT

    is_control = (frame[TREATMENT] == control).to_numpy()
    base = float(resid[is_control].mean())
    treated = frame[S.OFFER_ID].notna().to_numpy() & ~is_control
    df = pd.DataFrame(
        {"offer": frame.loc[treated, S.OFFER_ID].to_numpy(dtype=object),
         "kind": frame.loc[treated, S.KIND].to_numpy(dtype=object), "r": resid[treated] - base}
    )  # fmt: skip
    by = df.groupby("offer").agg(kind=("kind", "first"), mean=("r", "mean"), var=("r", "var"),
                                  n=("r", "size"))  # fmt: skip
    kind_mean = df.groupby("kind")["r"].mean().reindex(by["kind"]).to_numpy()
    dev = by["mean"].to_numpy() - kind_mean
    se2 = by["var"].fillna(by["var"].mean()).to_numpy() / by["n"].to_numpy()
    tau2 = max(float(np.mean(dev**2) - np.mean(se2)), 0.0)
    w = tau2 / (tau2 + se2)
    return dict(zip(by.index.astype(str), (kind_mean + w * dev).astype(float), strict=True))


def fit_affinity(tables: dict[str, pd.DataFrame], seed: int, als_trials: int) -> tuple[Any, Any]:
    """The affinity evaluation run (models before T, calibrator) and a refit to the data end."""
    from training.affinity_eval import EvalSettings
    from training.affinity_report import run_evaluation
    from training.affinity_search import SearchSettings

    settings = EvalSettings()
    run = run_evaluation(
        tables, settings, SearchSettings(als_trials=als_trials, bpr_trials=1, seed=seed), "policy"
    )
    return run, settings


def refit_affinity(run: Any, settings: Any, tables: dict[str, pd.DataFrame], as_of: Any, seed: int):
    """The shipped blend with the chosen parameters, fitted on everything before ``as_of``."""
    from models.affinity import ALS, Blend, build_interactions
    from models.affinity.segments import feature_tables, member_segments

    train = build_interactions(tables, as_of, settings.interaction_settings())
    seg = member_segments(feature_tables(tables), as_of)
    train = train.with_segments(seg.reindex(train.member_ids).fillna("none|none").to_numpy(str))
    als = ALS(**run.search.als, random_state=seed, num_threads=1).fit(train)
    model = Blend.from_als(
        als, train, segment_min_members=settings.segment_min_members, **run.search.blend
    )
    return model, train


# ---- data --------------------------------------------------------------------------------------
def _end_of_data(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    last = max(tables["transactions"][S.TS].max(), tables["offer_events"][S.TS].max())
    return pd.Timestamp(last).normalize() + pd.Timedelta(days=1)


def _logged_rows(train: Any, tables: dict[str, pd.DataFrame], since: pd.Timestamp) -> pd.DataFrame:
    """Training-set rows (sends and controls) at or after ``since``, with channel and redeemed."""
    rows = train.frame.loc[train.frame[S.TS] >= since].reset_index(drop=True)
    ev = tables["offer_events"]
    channel = ev.set_index(S.EVENT_ID)[S.CHANNEL]
    rows[S.CHANNEL] = channel.reindex(rows[S.EVENT_ID]).to_numpy()
    red = ev.loc[ev[S.EVENT] == "redeemed", [S.CAMPAIGN_ID, S.MEMBER_ID, S.OFFER_ID]]
    red = red.drop_duplicates().assign(redeemed=1)
    rows = rows.merge(red, on=[S.CAMPAIGN_ID, S.MEMBER_ID, S.OFFER_ID], how="left")
    rows["redeemed"] = rows["redeemed"].fillna(0).astype(int)
    return rows


# ---- the evaluation ----------------------------------------------------------------------------
def run_policy_evaluation(
    data: Path,
    channel: str = "email",
    k: int = 1,
    budget_scale: float | None = None,
    match_spend: bool = False,
    grain: str = KIND,
    seed: int = 0,
    als_trials: int = 3,
    step: Any = None,
    trees: int = 200,
) -> dict[str, Any]:
    """Fit the models, evaluate every policy on a send at the data end and off-policy on the
    logged campaigns after T; returns the report (see the module docstring)."""
    from features.catalog import load_catalog
    from features.pipeline import load_tables, member_features
    from features.validate import load_dir
    from serving.engine import (
        DecisionContext,
        DecisionEngine,
        EngineSettings,
        FallbackTables,
        ScoreInputs,
        state_from_events,
    )
    from serving.engine.policy_eval import evaluate_send, summary
    from serving.engine.settings import ExplorationSettings, HoldoutSettings
    from serving.engine.sim_truth import SimulatedTruth
    from training.uplift_data import TrainingSetConfig, build_training_set

    t0 = time.perf_counter()
    say = step or (lambda msg: log.info("policy evaluation: %s", msg))
    data = Path(data)
    truth = SimulatedTruth.load(data)
    tables = load_dir(data)
    catalog = load_catalog(data / "catalog.yaml")
    settings = EngineSettings(
        k=k, holdout=HoldoutSettings(share=0.0), exploration=ExplorationSettings(epsilon=0.0)
    )
    engine = DecisionEngine(catalog, settings)
    offers = catalog.offers
    offer_ids = [o.offer_id for o in offers]
    end = _end_of_data(tables)

    say("affinity models (validation search)")
    run, aff_settings = fit_affinity(tables, seed, als_trials)
    T = pd.Timestamp(run.test_task.start)
    say("P(redeem | sent) calibration on the validation window's sends")
    cal, cal_info = fit_redeem_calibration(run, aff_settings, tables, offer_ids, seed)
    aff_before = AffinityScorer(run.shipped, run.test_task.train, cal, f"blend<{T.date()}")
    say("affinity refit to the data end")
    model_end, rows_end = refit_affinity(run, aff_settings, tables, end, seed)
    aff_end = AffinityScorer(model_end, rows_end, cal, f"blend<{end.date()}")

    say("uplift training set (features at every logged send)")
    train = build_training_set(data, TrainingSetConfig(treatment=grain))
    window = pd.Timedelta(days=train.config.window_days)
    early = train.subset((train.frame[S.TS] + window <= T).to_numpy())
    say("uplift models")
    up_before = fit_uplift(early, grain, seed, f"xlearner-{grain}<{T.date()}", trees)
    up_end = fit_uplift(train, grain, seed, f"xlearner-{grain}<{end.date()}", trees)

    say("send at the data end")
    feats = member_features(load_tables(data), end, train.feature_config).to_pandas()
    # Consent is the engine's own rule (``consent``); every policy acts on the engine's mask.
    ids = feats[S.MEMBER_ID].to_numpy(dtype=object)
    a = aff_end.score(ids, offer_ids)
    s = up_end.effects(feats, offers)
    inputs = ScoreInputs(
        np.where(a["has_row"][:, None], a["p_redeem"], np.nan),
        np.where(a["has_row"][:, None], s, np.nan),
        has_row=a["has_row"],
        model_versions={"affinity": aff_end.label, "uplift": up_end.label},
    )
    tables_fb = FallbackTables.from_scores(
        a["p_redeem"], s, feats[settings.segment_column].to_numpy(dtype=object), a["has_row"]
    )
    state = state_from_events(tables["offer_events"], ids, engine.offers, end)
    scale = budget_scale if budget_scale is not None else len(ids) / 1_000_000
    budget_left = engine.offers.budget * scale
    true_p, true_s = truth.matrix(ids, end)
    context = DecisionContext(channel, end, f"policy-eval-{end.date()}", k=k)
    results, batch = evaluate_send(
        engine, feats, inputs, context, a["score"], true_p, true_s, state, budget_left,
        tables_fb, match_spend,
    )  # fmt: skip

    say("off-policy estimates on the logged campaigns after T")
    ope, ope_info = _off_policy(
        engine, tables, train, T, aff_before, up_before, truth, settings.scoring.margin_rate
    )
    for name in results:
        results[name]["off_policy"] = ope.get(name, {})
    fallback = batch.rows.groupby("fallback")[S.MEMBER_ID].nunique().to_dict()
    return {
        "policies": results,
        "engine_vs_affinity_top_k": summary(results),
        "setup": {
            "data": str(data),
            "as_of": str(end),
            "channel": channel,
            "k": k,
            "members": len(ids),
            "budget_scale": scale,
            "match_spend": match_spend,
            "margin_rate": settings.scoring.margin_rate,
            "engine_fallbacks": {str(key): int(v) for key, v in fallback.items()},
            "engine_budget_prices": {n: v for n, v in batch.prices.items() if v > 0},
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "models": {
            "affinity": {
                "end": aff_end.label,
                "before_T": aff_before.label,
                "p_redeem_calibration": cal_info,
            },
            "uplift": {
                "end": up_end.label,
                "before_T": up_before.label,
                "grain": grain,
                "training_rows": len(train.frame),
                "rows_before_T": len(early.frame),
            },
            "T": str(T),
        },
        "off_policy_setup": ope_info,
    }


def _off_policy(engine, tables, train, T, aff, up, truth, margin):
    """Every policy's action at each logged context after T, then the estimates."""
    from serving.engine import DecisionContext, ScoreInputs, state_from_events
    from serving.engine.policy_eval import (
        LoggedDecisions,
        baseline_picks,
        off_policy_estimates,
        one_hot,
    )

    rows = _logged_rows(train, tables, T)
    o = engine.offers
    offer_ids = list(o.ids)
    cost = o.cost
    probs: dict[str, list[np.ndarray]] = {"engine": [], "affinity_top_k": [], "random": [],
                                          "oracle": []}  # fmt: skip
    parts = []
    for cid, g in rows.groupby(S.CAMPAIGN_ID, sort=True):
        g = g.reset_index(drop=True)
        t = g[S.TS].min()
        pool = np.isin(offer_ids, g[S.OFFER_ID].dropna().unique())
        ids = g[S.MEMBER_ID].to_numpy(dtype=object)
        a = aff.score(ids, offer_ids)
        s = up.effects(g, engine.catalog.offers)
        inputs = ScoreInputs(a["p_redeem"], s, has_row=np.ones(len(g), bool))
        ctx = DecisionContext(str(g[S.CHANNEL].iloc[0]), t, str(cid), k=1)
        state = state_from_events(tables["offer_events"], ids, o, t)
        left = np.where(pool, np.inf, 0.0)  # only the campaign's offers; no budgets
        # Every policy acts within what the logger could have drawn (unbiased IPS needs it).
        support = truth.logger_support(g, t, pool, state.received)
        left = np.where(support.any(axis=0), left, 0.0)
        own = engine.prepare(g, inputs, ctx, state, left).mask  # the engine's own rules
        pr = engine.prepare(g, inputs, ctx, state, left, restrict=support)
        batch = engine.decide(g, inputs, ctx, state, left, restrict=support)
        rows_t = truth.rows(ids)
        tp, ts_ = truth.pairs(np.repeat(rows_t, o.n), np.tile(np.arange(o.n), len(g)), t)
        true_value = margin * ts_.reshape(len(g), o.n) - tp.reshape(len(g), o.n) * cost
        keys = np.asarray([f"{cid}|{m}" for m in ids], dtype=object)
        base = baseline_picks(engine, pr, a["score"], np.where(pr.mask, true_value, -1.0), keys, 1)
        probs["engine"].append(one_hot(batch.picks[:, 0], o.n))
        probs["affinity_top_k"].append(one_hot(base["affinity_top_k"][:, 0], o.n))
        probs["oracle"].append(one_hot(base["oracle"][:, 0], o.n))
        n_el = pr.mask.sum(axis=1, keepdims=True)
        probs["random"].append(np.where(pr.mask, 1.0 / np.maximum(n_el, 1), 0.0))
        action = pd.Index(offer_ids).get_indexer(g[S.OFFER_ID].fillna("").to_numpy(dtype=object))
        b_hat = up.baseline(g)
        q = margin * (b_hat[:, None] + s) - a["p_redeem"] * cost[None, :]
        parts.append(
            {
                "action": action,
                "propensity": g[S.PROPENSITY].to_numpy(dtype=np.float64),
                "reward": margin * g["spend"].to_numpy(dtype=np.float64)
                - np.where(action >= 0, cost[np.maximum(action, 0)], 0.0)
                * g["redeemed"].to_numpy(),
                "q": np.column_stack([q, margin * b_hat]),
                "true_value": true_value,
                "in_support": np.where(
                    action >= 0, support[np.arange(len(g)), np.maximum(action, 0)], True
                ),
                "n_support": support.sum(axis=1),
                "n_eligible": pr.mask.sum(axis=1),
                "same_rules": (own == support).all(axis=1),
            }
        )
    if not parts:
        return {}, {"contexts": 0, "note": f"no logged campaign at or after {T}"}
    cat = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    logged = LoggedDecisions(cat["action"], cat["propensity"], cat["reward"])
    policies = {name: np.concatenate(v) for name, v in probs.items()}
    est = off_policy_estimates(logged, policies, cat["q"], cat["true_value"])
    treated = cat["action"] >= 0
    control_share = float(np.median(cat["propensity"][~treated])) if (~treated).any() else 0.0
    k_logged = np.rint((1 - control_share) / cat["propensity"][treated])
    n_support = cat["n_support"][treated]
    info = {
        "contexts": len(cat["action"]),
        "campaigns": sorted(rows[S.CAMPAIGN_ID].unique().tolist()),
        "treated": int(treated.sum()),
        "actions": "the logger's support (its own eligibility rules, rebuilt) within the "
        "engine's eligibility; 'nothing' always allowed",
        "mean_actions": float(cat["n_eligible"].mean()),
        # checks of the rebuilt support against the log (treated rows)
        "logged_offer_in_support": float(cat["in_support"][treated].mean()),
        "support_size_equals_logged_k": float((n_support == k_logged).mean()),
        # how often the engine's own rules give exactly the logger's support
        "engine_rules_equal_logger_rules": float(cat["same_rules"].mean()),
        "value_unit": "incremental value per logged decision (currency)",
    }
    return est, info


# ---- CLI ---------------------------------------------------------------------------------------
def evaluate_policy(
    data: Annotated[
        Path | None, typer.Option("--data", help="a simulated program (offers simulate)")
    ] = None,
    channel: Annotated[str, typer.Option(help="channel of the send")] = "email",
    k: Annotated[int, typer.Option(min=1, help="offers per member")] = 1,
    budget_scale: Annotated[
        float | None,
        typer.Option(help="catalog budgets x this (default: members / 1,000,000)"),
    ] = None,
    match_spend: Annotated[
        bool, typer.Option(help="cap the engine's total expected cost at affinity top-k's")
    ] = False,
    grain: Annotated[str, typer.Option(help="uplift treatment grain: kind or offer")] = KIND,
    seed: Annotated[int, typer.Option(help="seed of the model fits")] = 0,
    als_trials: Annotated[int, typer.Option(min=1, help="ALS configurations tried")] = 3,
    trees: Annotated[int, typer.Option(min=10, help="boosting rounds of the outcome models")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    dataset: Annotated[
        str | None,
        typer.Option(help="randomised real data instead: hillstrom, starbucks or open-bandit"),
    ] = None,
    dataset_set: Annotated[
        list[str] | None,
        typer.Option("--set", help="--dataset setting KEY=VALUE (docs/benchmarks.md)"),
    ] = None,
) -> None:
    """Engine vs affinity top-k, random and oracle on a simulated program.

    True values of a send at the data end, and off-policy estimates (IPS, SNIPS, DR) from the
    logged campaigns next to the truth. With --dataset: the engine's send policy valued on a
    randomised real data set (training.policy).
    """
    if dataset is not None:
        from training.policy.cli import evaluate_dataset

        evaluate_dataset(dataset, dataset_set, seed, as_json)
        return
    if data is None:
        console.print("[red]error:[/] --data (a simulated program) or --dataset is required")
        raise typer.Exit(code=1)
    if grain not in (KIND, OFFER):
        console.print(f"[red]error:[/] --grain: {grain!r} is not 'kind' or 'offer'")
        raise typer.Exit(code=1)
    if not (data / "truth").is_dir():
        console.print(f"[red]error:[/] {data}/truth not found: needs `offers simulate --out`")
        raise typer.Exit(code=1)
    with _stdout_to_stderr(), console.status("policy evaluation") as status:
        report = run_policy_evaluation(
            data, channel, k, budget_scale, match_spend, grain, seed, als_trials,
            step=lambda msg: status.update(f"policy evaluation: {msg}"), trees=trees,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    _print(report)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 to 2 meanwhile (DuckDB draws its progress
    bars on the process' stdout, which must hold only the report)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Policies on {report['setup']['members']:,} members (truth)")
    for col in ("policy", "true value", "spend", "redemptions", "sends", "OPE truth", "IPS",
                "SNIPS", "DR"):  # fmt: skip
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, r in report["policies"].items():
        ope = r.get("off_policy", {})
        table.add_row(
            name, f"{r['true_incremental_value']:,.0f}", f"{r['spend']:,.0f}",
            f"{r['redemptions']:,.0f}", f"{r['sends']:,}",
            *(f"{ope[x]:.3f}" if x in ope else "-" for x in ("truth", "ips", "snips", "dr")),
        )  # fmt: skip
    Console().print(table)
    Console().print(report["engine_vs_affinity_top_k"])


def register(app: typer.Typer) -> None:
    """Add ``evaluate policy`` (under a shared ``evaluate`` group) to ``app``."""
    evaluate_group(app).command("policy")(evaluate_policy)
