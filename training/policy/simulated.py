"""``offers evaluate policy --data DIR``: the shipped decision path against simple policies on a
simulated program, whose true effects are known (``truth/``).

What is evaluated is what ships:

* the models are trained by the same code as ``offers train affinity`` / ``offers train
  uplift`` (:func:`training.affinity.train.train_affinity`,
  :func:`training.uplift.train.train_uplift`), registered in a scratch MLflow registry and made
  champion;
* they are loaded by the service's loader (:func:`serving.loader.load_model`), turned into
  engine inputs by the one adapter (:func:`serving.engine.adapters.model_inputs`) and decided
  by the same :class:`~serving.engine.DecisionEngine`, with the members' history
  (``state_from_events``) and consent, as the API and ``offers score`` do.

Two fits:

* **before T** (T = the start of the latest logged campaign, held out): trained on a copy of
  the data cut at T; the policies then act on the campaigns logged at or after T, which these
  models never saw, for the off-policy estimates (IPS, SNIPS, DR) next to the truth;
* **to the end of the data**: the policies decide a new send at the observation end, scored
  with the truth. Every ratio is also taken at equal spend: random and the oracle are given
  the engine's (true expected) spend.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.catalog.model import load_catalog
from features.pipeline import load_tables, member_features
from features.sources import schema as S
from features.sources.io import write_table
from features.sources.validate import load_dir
from serving.engine import (
    DecisionContext,
    DecisionEngine,
    EngineSettings,
    FallbackTables,
    state_from_events,
)
from serving.engine.adapters import effect_se, model_inputs
from serving.engine.settings import PERSONALISED, ExplorationSettings, HoldoutSettings
from serving.loader import load_model
from training.policy.bound import level_errors, observable_oracle
from training.policy.evaluate import (
    LoggedDecisions,
    allocate_as_engine,
    baseline_picks,
    engine_picks,
    evaluate_send,
    off_policy_estimates,
    one_hot,
    summary,
    truth_of_picks,
)
from training.policy.truth import SimulatedTruth

__all__ = ["ShippedModels", "run_policy_evaluation", "train_shipped"]

log = logging.getLogger(__name__)
Step = Callable[[str], None]
AFFINITY_URI = "models:/offers-affinity@champion"
UPLIFT_URI = "models:/offers-uplift@champion"


@dataclass
class ShippedModels:
    """The champions of a scratch registry, loaded as serving loads them."""

    affinity: Any
    uplift: Any
    versions: dict[str, str]
    feature_config: Any
    # the uplift fit's level metrics (level_window.spend, level_att/level_se per treatment,
    # heterogeneity_scale per outcome): what the decisions rest on, for the run's record
    uplift_levels: dict[str, float] = field(default_factory=dict)

    def inputs(self, members: pd.DataFrame, engine: DecisionEngine, segment_column: str) -> Any:
        return model_inputs(
            self.affinity,
            self.uplift,
            members,
            engine.offers,
            segment_column=segment_column,
            model_versions=self.versions,
            uncertainty_z=engine.settings.scoring.uncertainty_z,
        )


def train_shipped(
    data_dir: Path,
    work: Path,
    seed: int = 0,
    als_trials: int = 1,
    trees: int | None = None,
    level_by_campaign: bool = False,
    calibration_pairs: Literal["held", "sends"] = "held",
) -> ShippedModels:
    """Train both models on ``data_dir`` with the code of ``offers train``, register them in a
    scratch registry under ``work``, make them champion and load them with serving's loader.
    ``level_by_campaign``: :attr:`UpliftTrainSettings.level_by_campaign` (off, as shipped);
    ``calibration_pairs``: :attr:`EvalSettings.calibration_pairs` (``held``, as shipped)."""
    from features.pipeline.config import FeatureConfig
    from training.affinity.evaluate import EvalSettings
    from training.affinity.search import SearchSettings
    from training.affinity.train import train_affinity
    from training.registry import ModelRegistry
    from training.uplift.fit import UpliftTrainSettings
    from training.uplift.train import train_uplift

    work.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    registry = ModelRegistry(tracking_uri=tracking, home=work)
    aff = train_affinity(
        data_dir,
        EvalSettings(calibration_pairs=calibration_pairs),
        SearchSettings(als_trials=als_trials, bpr_trials=1, seed=seed, num_threads=1),
        registry,
        dataset=data_dir.name,
    )
    # offers train uplift's own defaults (what ships); --trees overrides the boosting rounds
    params = {"n_estimators": trees} if trees is not None else None
    upl = train_uplift(
        data_dir,
        UpliftTrainSettings(base_params=params, seed=seed, level_by_campaign=level_by_campaign),
        registry,
    )
    for name, result in (("offers-affinity", aff), ("offers-uplift", upl)):
        if not result.decision.promoted:
            registry.promote(name, result.version, reason="policy evaluation (scratch registry)")
    lkg = work / "lkg"
    a = load_model("affinity", AFFINITY_URI, tracking_uri=tracking, lkg_dir=lkg, fallback=False)
    u = load_model("uplift", UPLIFT_URI, tracking_uri=tracking, lkg_dir=lkg, fallback=False)
    py = u.model.unwrap_python_model() if hasattr(u.model, "unwrap_python_model") else u.model
    raw = (getattr(py, "meta_", None) or {}).get("feature_config")
    config = FeatureConfig.model_validate(raw) if raw is not None else None
    levels = {
        k: float(v)
        for k, v in upl.metrics.items()
        if k.startswith(("level_", "heterogeneity_", "rows.level_window"))
    }
    return ShippedModels(
        a.model, u.model, {"affinity": str(a.version), "uplift": str(u.version)}, config, levels
    )


def _end_of_data(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    last = max(tables["transactions"][S.TS].max(), tables["offer_events"][S.TS].max())
    return pd.Timestamp(last).normalize() + pd.Timedelta(days=1)


def latest_campaign_start(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """The first send time of the latest logged campaign (the held-out one)."""
    ev = tables["offer_events"]
    logged = ev.loc[ev[S.EVENT].isin(["sent", "held_out"]) & ev[S.CAMPAIGN_ID].notna()]
    if logged.empty:
        raise ValueError("offer_events: no logged campaign (sent/held_out with a campaign_id)")
    starts = logged.groupby(S.CAMPAIGN_ID)[S.TS].min()
    return pd.Timestamp(starts.max())


def write_before(data: Path, tables: dict[str, pd.DataFrame], T: pd.Timestamp, out: Path) -> Path:
    """A copy of the program's canonical tables with nothing at or after ``T``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if name in ("transactions", "offer_events"):
            frame = frame.loc[frame[S.TS] < T]
        elif name == "members":
            frame = frame.loc[frame[S.JOINED_AT] < T]
        write_table(frame.reset_index(drop=True), out, name)
    (out / "catalog.yaml").write_text((data / "catalog.yaml").read_text())
    return out


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


def _outcome_model(train: Any, seed: int) -> Any:
    """E[spend in the window | features] on the training rows: the DR estimator's baseline."""
    import lightgbm

    from models.uplift.encoding import FeatureEncoder
    from training.uplift.data import SPEND

    enc = FeatureEncoder().fit(train.features)
    model = lightgbm.LGBMRegressor(
        n_estimators=150, learning_rate=0.05, min_child_samples=50, random_state=seed,
        verbose=-1, n_jobs=1,
    )  # fmt: skip
    model.fit(enc.transform(train.features), train.frame[SPEND].to_numpy(dtype=np.float64))
    cols = list(train.feature_columns)
    return lambda frame: model.predict(enc.transform(frame[cols]))


_SCALED = ("true_incremental_value", "spend", "redemptions", "true_incremental_spend")


def matched_spend(
    engine: DecisionEngine,
    prepared: Any,
    true_p: np.ndarray,
    true_s: np.ndarray,
    results: dict[str, dict[str, Any]],
    k: int,
) -> dict[str, dict[str, Any]]:
    """Random, affinity top-k and the oracle at the engine's true expected spend.

    Random and top-k are scaled linearly to the engine's spend (their value per unit of spend
    is a property of the policy: sending more or fewer of the same random or top-k picks
    scales value and spend together, in expectation); the oracle is allocated again on the true
    value with a total budget of that spend on the true expected cost (its value per unit of
    spend falls as it spends more, so scaling would flatter or wrong it)."""
    o = engine.offers
    margin = engine.settings.scoring.margin_rate
    spend = results["engine"]["spend"]
    out: dict[str, dict[str, Any]] = {}
    for name in ("random", "affinity_top_k"):
        r = results[name]
        f = spend / r["spend"] if r["spend"] > 0 else 0.0
        out[f"{name}_at_engine_spend"] = {
            **{key: r[key] * f for key in _SCALED},
            "sends": round(r["sends"] * f),
            "members_reached": round(r["members_reached"] * f),
            "value_per_send": r["value_per_send"],
            "scale": f,
        }
    true_eiv = margin * true_s - true_p * o.cost[None, :]
    oracle = allocate_as_engine(
        engine, prepared, np.asarray(true_eiv, np.float32), np.asarray(true_p, np.float32), k, spend
    )
    out["oracle_at_engine_spend"] = truth_of_picks(oracle, true_p, true_s, o.cost, margin)
    return out


def diagnostics(
    engine: DecisionEngine,
    feats: pd.DataFrame,
    inputs: Any,
    context: DecisionContext,
    state: Any,
    budget_left: np.ndarray,
    tables: Any,
    true_p: np.ndarray,
    true_s: np.ndarray,
    prepared: Any,
) -> dict[str, Any]:
    """Where the engine loses value: how the models' P(redeem), incremental spend and EIV
    agree with the truth on the eligible pairs (correlation; mean level), and the engine's true
    value when one of its two inputs is replaced by the truth."""
    from scipy.stats import spearmanr

    from serving.engine.scoring import ScoreInputs

    o = engine.offers
    margin = engine.settings.scoring.margin_rate
    mask = prepared.mask
    p_hat, s_hat = (
        prepared.scores.p_redeem,
        margin * np.asarray(inputs.incremental_spend, dtype=np.float64),
    )
    eiv_true = margin * true_s - true_p * o.cost[None, :]

    def agree(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
        a, b = np.asarray(pred, np.float64)[mask], np.asarray(true, np.float64)[mask]
        if len(a) < 3 or a.std() == 0 or b.std() == 0:
            return {"pearson": float("nan"), "spearman": float("nan")}
        return {
            "pearson": float(np.corrcoef(a, b)[0, 1]),
            "spearman": float(spearmanr(a, b).statistic),
            "mean_pred": float(a.mean()),
            "mean_true": float(b.mean()),
        }

    def value_with(p: np.ndarray, s: np.ndarray) -> float:
        swapped = ScoreInputs(p, s, has_row=np.ones(len(feats), dtype=bool))
        picks = engine_picks(
            engine.decide(feats, swapped, context, state, budget_left, tables, frame=False)
        )
        return truth_of_picks(picks, true_p, true_s, o.cost, margin)["true_incremental_value"]

    within = []  # per member: does the model rank the member's eligible offers like the truth?
    eiv_hat = prepared.scores.eiv
    for i in np.flatnonzero(mask.sum(axis=1) >= 3)[:2000]:
        r = spearmanr(eiv_hat[i, mask[i]], eiv_true[i, mask[i]]).statistic
        if np.isfinite(r):
            within.append(r)
    return {
        "p_redeem": agree(p_hat, true_p),
        "incremental_margin": agree(s_hat, margin * true_s),
        "eiv": agree(eiv_hat, eiv_true),
        "eiv_rank_within_member_spearman": float(np.mean(within)) if within else None,
        "engine_value_with_true_p_redeem": value_with(true_p, inputs.incremental_spend),
        "engine_value_with_true_spend_effect": value_with(inputs.p_redeem, true_s),
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The engine's value against each baseline at equal spend (None when undefined)."""
    eng = results["engine"]["true_incremental_value"]

    def ratio(name: str) -> float | None:
        v = results.get(name, {}).get("true_incremental_value")
        return eng / v if v is not None and v > 0 else None

    best_simple = max(
        results["random_at_engine_spend"]["true_incremental_value"],
        results["affinity_top_k_at_engine_spend"]["true_incremental_value"],
    )
    oracle_at = results["oracle_at_engine_spend"]["true_incremental_value"]
    oracle = results.get("oracle", {}).get("true_incremental_value", oracle_at)
    return {
        "vs_random_at_engine_spend": ratio("random_at_engine_spend"),
        "vs_affinity_top_k_at_engine_spend": ratio("affinity_top_k_at_engine_spend"),
        "vs_affinity_top_k": ratio("affinity_top_k"),
        "vs_best_simple": eng / best_simple if best_simple > 0 else None,
        "gain_over_best_simple": eng - best_simple,
        "share_of_oracle_at_engine_spend": ratio("oracle_at_engine_spend"),
        # holding out (sending nothing) is worth 0 by definition of incremental value
        "not_lose_to_holdout": bool(eng >= 0),
        "goal": ">= the best of random and affinity top-k (each at the engine's spend) + 30% of "
        "its size (1.3x when it is positive), >= 40% of the oracle at the engine's spend, and "
        "above holding out (> 0) where the oracle finds value",
        "goal_met": goal_met(eng, best_simple, oracle_at, oracle),
    }


def goal_met(engine: float, best_simple: float, oracle_at_spend: float, oracle: float) -> bool:
    """The value goal at equal spend (see :func:`ratios`): ``engine >= best + 0.3 |best|``
    (1.3x a positive best), ``engine >= 0.4 x oracle`` at that spend, and ``engine > 0`` when
    the oracle earns anything (sending nothing meets matched-spend ratios trivially)."""
    beats_simple = engine >= best_simple + 0.3 * abs(best_simple)
    share = oracle_at_spend <= 0 or engine >= 0.4 * oracle_at_spend
    positive = engine > 0 if oracle > 0 else engine >= 0
    return bool(beats_simple and share and positive)


def run_policy_evaluation(
    data: Path,
    channel: str = "email",
    k: int = 1,
    budget_scale: float | None = None,
    match_spend: bool = False,
    seed: int = 0,
    als_trials: int = 1,
    trees: int | None = None,
    step: Step | None = None,
    settings: EngineSettings | None = None,
    observable_bound: bool = False,
    level_by_campaign: bool = False,
    calibration_pairs: Literal["held", "sends"] = "held",
) -> dict[str, Any]:
    """Train what ships (twice: before T and to the data end), decide a send at the data end
    with every policy and estimate each policy off-policy on the held-out campaigns; returns
    the report (``policies``, ``ratios``, ``setup``, ``models``, ``off_policy_setup``).
    ``observable_bound``: add ``observable_oracle_at_engine_spend`` (training.policy.bound).
    ``level_by_campaign``: the uplift fit's levels campaign by campaign (not what ships);
    ``calibration_pairs``: the affinity calibrator's pairs (``held`` ships)."""
    from training.uplift.data import TrainingSetConfig, build_training_set

    t0 = time.perf_counter()
    say = step or (lambda msg: log.info("policy evaluation: %s", msg))
    data = Path(data)
    truth = SimulatedTruth.load(data)
    tables = load_dir(data)
    catalog = load_catalog(data / "catalog.yaml")
    settings = settings or EngineSettings(
        k=k, holdout=HoldoutSettings(share=0.0), exploration=ExplorationSettings(epsilon=0.0)
    )
    engine = DecisionEngine(catalog, settings)
    end = _end_of_data(tables)
    T = latest_campaign_start(tables)
    with tempfile.TemporaryDirectory(prefix="offers-policy-") as tmp:
        work = Path(tmp)
        say(f"training what ships on the data before {T} (the held-out campaign)")
        before = train_shipped(
            write_before(data, tables, T, work / "before"),
            work / "reg-T",
            seed,
            als_trials,
            trees,
            level_by_campaign,
            calibration_pairs,
        )
        say("training what ships on all the data")
        shipped = train_shipped(
            data, work / "reg-end", seed, als_trials, trees, level_by_campaign, calibration_pairs
        )

        say("off-policy estimates on the held-out campaign")
        train = build_training_set(data, TrainingSetConfig(treatment="kind"))
        early = train.subset((train.frame[S.TS] + pd.Timedelta(days=14) <= T).to_numpy())
        candidates = candidate_settings(settings)
        ope, ope_info = _off_policy(
            engine, tables, train, T, before, early, truth, settings.scoring.margin_rate, seed,
            candidates,
        )  # fmt: skip

        say("send at the data end")
        feats = member_features(load_tables(data), end, shipped.feature_config).to_pandas()
        ids = feats[S.MEMBER_ID].to_numpy(dtype=object)
        inputs = shipped.inputs(feats, engine, settings.segment_column)
        served = np.asarray(inputs.fallback, dtype=object)
        segments = feats[settings.segment_column].to_numpy(dtype=object)
        tables_fb = FallbackTables.from_scores(
            inputs.p_redeem, inputs.incremental_spend, segments, served == PERSONALISED
        )
        state = state_from_events(
            tables["offer_events"], ids, engine.offers, end, settings.caps.period_days
        )
        scale = budget_scale if budget_scale is not None else len(ids) / 1_000_000
        budget_left = engine.offers.budget * scale
        true_p, true_s = truth.matrix(ids, end)
        context = DecisionContext(channel, end, f"policy-eval-{end.date()}", k=k)
        results, batch = evaluate_send(
            engine, feats, inputs, context, inputs.p_redeem, true_p, true_s, state,
            budget_left, tables_fb, match_spend,
        )  # fmt: skip
        pr = engine.prepare(feats, inputs, context, state, budget_left, tables_fb)
        results.update(matched_spend(engine, pr, true_p, true_s, results, k or settings.k))

        diag = diagnostics(
            engine, feats, inputs, context, state, budget_left, tables_fb, true_p, true_s, pr
        )
        diag["level_errors"] = level_errors(
            inputs.incremental_spend, effect_se(shipped.uplift, engine.offers),
            settings.scoring.uncertainty_z, pr.mask, true_s,
        )  # fmt: skip
        if observable_bound:
            say("the observable oracle (trees fitted to the truth on the observed features)")
            results["observable_oracle_at_engine_spend"] = observable_oracle(
                engine, pr, feats, true_p, true_s, results["engine"]["spend"],
                k or settings.k, seed,
            )  # fmt: skip

        say("the engine's settings chosen by off-policy value, engine at them")
        tuned_settings = candidates[ope_info.get("settings_choice", {}).get("chosen", "default")]
        tuned_engine = DecisionEngine(catalog, tuned_settings)
        tuned, _ = evaluate_send(
            tuned_engine, feats, inputs, context, inputs.p_redeem, true_p, true_s, state,
            budget_left, tables_fb, match_spend,
        )  # fmt: skip
        tuned_results = {**tuned, "engine": tuned["engine"]}
        tuned_results.update(
            matched_spend(tuned_engine, pr, true_p, true_s, tuned_results, k or settings.k)
        )
        results["engine_ope_tuned"] = tuned["engine"]
    for name in results:
        results[name]["off_policy"] = ope.get(name, {})
    chosen = (ope_info.get("settings_choice") or {}).get("chosen", DEFAULT_CANDIDATE)
    results["engine_ope_tuned"]["off_policy"] = ope.get(f"engine[{chosen}]", {})
    results["engine_ope_tuned"]["settings"] = chosen
    fallback = batch.rows.groupby("fallback")[S.MEMBER_ID].nunique().to_dict()
    consent = batch.rows.loc[batch.rows["status"] == "no_offer", S.MEMBER_ID].nunique()
    return {
        "policies": results,
        "ratios": ratios(results),
        "ratios_ope_tuned": ratios(tuned_results),
        "ope_tuned_settings": ope_info.get("settings_choice"),
        "engine_vs_affinity_top_k": summary(results),
        "setup": {
            "data": str(data),
            "as_of": str(end),
            "held_out_campaign_start": str(T),
            "channel": channel,
            "k": k,
            "members": len(ids),
            "members_without_offer": int(consent),
            "budget_scale": scale,
            "match_spend": match_spend,
            "margin_rate": settings.scoring.margin_rate,
            "engine_fallbacks": {str(key): int(v) for key, v in fallback.items()},
            "engine_budget_prices": {n: v for n, v in batch.prices.items() if v > 0},
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "models": {
            "what": "trained by offers train's code, loaded by serving's loader, "
            "decided through the one adapter and the engine",
            "end": shipped.versions,
            "before_T": before.versions,
            "uplift_levels_end": shipped.uplift_levels,
        },
        "off_policy_setup": ope_info,
        "off_policy_candidates": {n: v for n, v in ope.items() if n.startswith("engine[")},
        "diagnostics": diag,
    }


DEFAULT_CANDIDATE = "default"


def candidate_settings(settings: EngineSettings) -> dict[str, EngineSettings]:
    """The engine settings the off-policy choice compares: cost weight x value floor."""
    out: dict[str, EngineSettings] = {}
    for cost_weight in (0.5, 1.0, 2.0):
        for floor, min_value in (("floor0", 0.0), ("always", -1e9)):
            scoring = settings.scoring.model_copy(
                update={"cost_weight": cost_weight, "min_value": min_value}
            )
            name = f"cost{cost_weight:g}-{floor}"
            same = cost_weight == settings.scoring.cost_weight and (
                min_value == settings.scoring.min_value
            )
            out[DEFAULT_CANDIDATE if same else name] = settings.model_copy(
                update={"scoring": scoring}
            )
    return out


def choose_by_dr(
    logged: LoggedDecisions, policies: dict[str, np.ndarray], q: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """The candidate with the highest DR value on the held-out contexts; the default stays
    unless the best beats it by more than one standard error of the paired difference."""
    from training.policy.evaluate import _with_none, ope_estimate

    if not names:
        return {"chosen": DEFAULT_CANDIDATE, "candidates": {}}
    terms = {n: ope_estimate(logged, _with_none(policies[f"engine[{n}]"]), q)["dr"] for n in names}
    value = {n: float(t.mean()) for n, t in terms.items()}
    best = max(value, key=lambda n: value[n])
    chosen = DEFAULT_CANDIDATE if DEFAULT_CANDIDATE in terms else best
    if best != chosen:
        diff = terms[best] - terms[chosen]
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.inf
        if float(diff.mean()) > se:
            chosen = best
    return {
        "chosen": chosen,
        "rule": "highest DR value; the default unless beaten by more than one paired SE",
        "candidates": value,
    }


def _off_policy(engine, tables, train, T, models, early, truth, margin, seed, candidates=None):
    """Every policy's action at each logged context at or after T, then the estimates.

    ``candidates``: engine settings by name, each also decided on the contexts (reported as
    ``engine[<name>]``) so that the settings can be chosen by their off-policy value."""
    candidates = candidates or {}
    engines = {name: DecisionEngine(engine.catalog, st) for name, st in candidates.items()}
    rows = _logged_rows(train, tables, T)
    o = engine.offers
    offer_ids = list(o.ids)
    cost = o.cost
    baseline = _outcome_model(early, seed)
    names = ("engine", "affinity_top_k", "random", "oracle", *(f"engine[{c}]" for c in engines))
    probs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    parts = []
    for cid, g in rows.groupby(S.CAMPAIGN_ID, sort=True):
        g = g.reset_index(drop=True)
        t = g[S.TS].min()
        pool = np.isin(offer_ids, g[S.OFFER_ID].dropna().unique())
        ids = g[S.MEMBER_ID].to_numpy(dtype=object)
        inputs = models.inputs(g, engine, engine.settings.segment_column)
        ctx = DecisionContext(str(g[S.CHANNEL].iloc[0]), t, str(cid), k=1)
        state = state_from_events(
            tables["offer_events"], ids, o, t, engine.settings.caps.period_days
        )
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
        base = baseline_picks(
            engine, pr, inputs.p_redeem, np.where(pr.mask, true_value, -1.0), keys, 1
        )
        probs["engine"].append(one_hot(engine_picks(batch)[:, 0], o.n))
        for c, eng_c in engines.items():
            picks_c = eng_c.decide(g, inputs, ctx, state, left, restrict=support, frame=False)
            probs[f"engine[{c}]"].append(one_hot(engine_picks(picks_c)[:, 0], o.n))
        probs["affinity_top_k"].append(one_hot(base["affinity_top_k"][:, 0], o.n))
        probs["oracle"].append(one_hot(base["oracle"][:, 0], o.n))
        n_el = pr.mask.sum(axis=1, keepdims=True)
        probs["random"].append(np.where(pr.mask, 1.0 / np.maximum(n_el, 1), 0.0))
        action = pd.Index(offer_ids).get_indexer(g[S.OFFER_ID].fillna("").to_numpy(dtype=object))
        b_hat = baseline(g)
        q = margin * (b_hat[:, None] + inputs.incremental_spend) - inputs.p_redeem * cost[None, :]
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
    chosen = choose_by_dr(logged, policies, cat["q"], list(engines))
    treated = cat["action"] >= 0
    info = {
        "contexts": len(cat["action"]),
        "campaigns": sorted(rows[S.CAMPAIGN_ID].unique().tolist()),
        "treated": int(treated.sum()),
        "mean_actions": float(cat["n_eligible"].mean()),
        "logged_offer_in_support": float(cat["in_support"][treated].mean()),
        "engine_rules_equal_logger_rules": float(cat["same_rules"].mean()),
        "dr_reward_model": "LightGBM E[spend | features] on training rows before T, plus the "
        "shipped models' effects and P(redeem) x cost",
        "value_unit": "incremental value per logged decision (currency)",
        "settings_choice": chosen,
    }
    return est, info
