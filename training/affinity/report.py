"""The full offline evaluation: search on validation, fit before T, score the test window.

``run_evaluation`` returns the report (the JSON of ``offers evaluate affinity``), the models
fitted on everything before T (the shipped one is what ``offers train affinity`` registers), the
redemption calibrator and the test task (kept so a champion can be re-scored on the same
window).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.affinity import (
    ALS,
    BPR,
    AffinityInputError,
    AffinityModel,
    Blend,
    PersonalPopularity,
    Popularity,
    RedeemCalibrator,
    SegmentPopularity,
    brier_score,
    reliability_curve,
)
from models.affinity.calibration import member_terms, purchase_columns
from models.affinity.segments import feature_tables
from training.affinity.data import AffinityTables
from training.affinity.evaluate import (
    EvalSettings,
    Task,
    build_task,
    choose_windows,
    evaluate_model,
    pair_scores,
    subsample_members,
)
from training.affinity.search import (
    Progress,
    SearchResult,
    SearchSettings,
    bpr_compared,
    search,
)

__all__ = ["BASELINES", "SHIPPED", "EvalRun", "fit_models", "run_evaluation"]

log = logging.getLogger(__name__)

SHIPPED = "blend"
BASELINES: tuple[str, ...] = ("popularity", "segment_popularity", "personal_popularity")
MODEL_ORDER: tuple[str, ...] = ("als", "bpr", *BASELINES, SHIPPED)


@dataclass
class EvalRun:
    """Everything one evaluation produced."""

    report: dict[str, Any]
    models: dict[str, AffinityModel]
    calibrator: RedeemCalibrator | None
    test_task: Task
    search: SearchResult
    reliability: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def shipped(self) -> AffinityModel:
        return self.models[self.report["shipped"]]


def fit_models(
    task: Task,
    found: SearchResult,
    settings: EvalSettings,
    search_settings: SearchSettings,
    prefit: dict[str, AffinityModel] | None = None,
) -> dict[str, AffinityModel]:
    """Every reported model fitted on ``task``'s training matrix with the chosen parameters
    (``prefit``: models already fitted on that matrix, e.g. the search's best); BPR only when
    the search compared it (``found.bpr`` is not None)."""
    prefit = prefit or {}
    common: dict[str, Any] = {
        "random_state": search_settings.seed,
        "num_threads": search_settings.num_threads,
    }
    als = prefit.get("als") or ALS(**found.als, **common).fit(task.train)
    assert isinstance(als, ALS)
    models: dict[str, AffinityModel] = {"als": als}
    if found.bpr is not None:
        models["bpr"] = prefit.get("bpr") or BPR(**found.bpr, **common).fit(task.train)
    models["popularity"] = Popularity().fit(task.train)
    models["segment_popularity"] = SegmentPopularity(settings.segment_min_members).fit(task.train)
    models["personal_popularity"] = PersonalPopularity().fit(task.train)
    models[SHIPPED] = Blend.from_als(
        als, task.train, segment_min_members=settings.segment_min_members, **found.blend
    )
    return models


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def _ratios(metrics: dict[str, dict[str, float]], key: str) -> dict[str, float | str | None]:
    best_base = max(BASELINES, key=lambda m: metrics[m][key])
    return {
        f"als/popularity {key}": _ratio(metrics["als"][key], metrics["popularity"][key]),
        f"{SHIPPED}/popularity {key}": _ratio(metrics[SHIPPED][key], metrics["popularity"][key]),
        f"{SHIPPED}/personal_popularity {key}": _ratio(
            metrics[SHIPPED][key], metrics["personal_popularity"][key]
        ),
        f"{SHIPPED}/best_baseline {key}": _ratio(metrics[SHIPPED][key], metrics[best_base][key]),
        "best_baseline": best_base,
    }


def _choose_method(
    scores: np.ndarray, labels: np.ndarray, members: np.ndarray
) -> Literal["isotonic", "platt"]:
    """Isotonic or Platt: fitted on half of the validation members, Brier on the other half."""
    half = (pd.util.hash_array(members.astype(str)) % 2).astype(bool)
    best: Literal["isotonic", "platt"] = "isotonic"
    best_brier = np.inf
    methods: tuple[Literal["isotonic", "platt"], ...] = ("isotonic", "platt")
    for method in methods:
        if len(np.unique(labels[~half])) < 2 or not half.any():
            break
        p = RedeemCalibrator(method).fit(scores[~half], labels[~half]).predict(scores[half])
        b = brier_score(p, labels[half])
        if b < best_brier:
            best, best_brier = method, b
    return best


def _history_rates(events: Any, before: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item keys, sends and redemptions (capped at sends) of each offer logged before
    ``before`` (the offers' own history, for offers the calibration pairs did not see)."""
    from models.affinity.interactions import item_key

    ev = events if isinstance(events, pd.DataFrame) else pd.DataFrame(events)
    ev = ev.loc[(ev["ts"] < before) & ev["offer_id"].notna(), ["offer_id", "event"]]
    counts = pd.crosstab(ev["offer_id"].astype(str), ev["event"])
    sends = counts.get("sent", pd.Series(0, index=counts.index)).to_numpy(dtype=np.float64)
    red = counts.get("redeemed", pd.Series(0, index=counts.index)).to_numpy(dtype=np.float64)
    keys = np.asarray(item_key("offer", counts.index.to_numpy(dtype=str)), dtype=str)
    return keys, sends, np.minimum(red, sends)


def _pair_member_terms(task: Task) -> np.ndarray:
    """:func:`member_terms` of each calibration pair's member, from the task's training rows."""
    rows = task.train
    terms = member_terms(rows.confidence, rows.last_days, purchase_columns(rows.item_ids))
    return terms[task.pair_rows]


def _calibrate(
    valid_model: AffinityModel,
    test_model: AffinityModel,
    valid: Task,
    test: Task,
    history: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    settings: EvalSettings | None = None,
) -> tuple[RedeemCalibrator | None, dict[str, Any] | None, tuple | None]:
    """P(redeem) from the shipped model's score, fitted on the validation window's pairs
    (method chosen on a member split of them), scored on the test window's pairs; the member
    term's recency knots and no-purchase indicator from ``settings``."""
    settings = settings or EvalSettings()
    if valid.pair_labels is None or test.pair_labels is None:
        return None, None, None
    y_valid = valid.pair_labels
    if len(np.unique(y_valid)) < 2:
        log.warning("calibration skipped: validation pairs have a single class")
        return None, {"skipped": "validation pairs have a single class"}, None
    s_valid = pair_scores(valid_model, valid)
    assert valid.pair_rows is not None
    method = _choose_method(s_valid, y_valid, valid.train.member_ids[valid.pair_rows])
    assert valid.pair_items is not None and test.pair_items is not None
    items_valid = np.asarray(valid.train.item_ids, dtype=str)[valid.pair_items]
    m_valid = _pair_member_terms(valid)
    cal = RedeemCalibrator(
        method,
        recency_knots=settings.calibration_recency_knots,
        no_purchase_term=settings.calibration_no_purchase,
        band_offsets=settings.calibration_band_offsets,
    ).fit(s_valid, y_valid, groups=items_valid, members=m_valid)
    if history is not None:  # offers the window did not send: their own logged rate
        reference = float(np.clip(cal.predict(s_valid).mean(), 1e-4, 1 - 1e-4))
        cal.add_rates(*history, reference=reference)
    p = cal.predict(
        pair_scores(test_model, test),
        np.asarray(test.train.item_ids, dtype=str)[test.pair_items],
        _pair_member_terms(test),
    )
    y = test.pair_labels
    base = float(y_valid.mean())
    curve = reliability_curve(p, y, bins=10)
    info = {
        "method": method,
        "fitted_on": "validation window",
        "pairs_valid": len(y_valid),
        "pairs_test": len(y),
        "positive_rate_valid": base,
        "positive_rate_test": float(y.mean()),
        "member_terms": dict(
            zip(cal.member_term_names(), np.round(cal.member_coef_, 4).tolist(), strict=True)
        ),
        "brier": brier_score(p, y),
        "brier_base_rate": brier_score(np.full(len(y), base), y),
        "reliability": [
            [round(float(a), 4), round(float(b), 4), int(c)] for a, b, c in zip(*curve, strict=True)
        ],
    }
    return cal, info, curve


def run_evaluation(
    tables: Mapping[str, Any],
    settings: EvalSettings,
    search_settings: SearchSettings,
    dataset: str,
    progress: Progress | None = None,
) -> EvalRun:
    """Validation search, final fit before T, test metrics, calibration (see module doc)."""
    t0 = time.perf_counter()
    windows = choose_windows(tables, settings)
    step = (lambda s, i, n: progress(s, i, n)) if progress else (lambda s, i, n: None)
    step("prepare", 0, 2)
    ft = tables.features if isinstance(tables, AffinityTables) else feature_tables(tables)
    full_valid = build_task(
        tables, windows.valid_start, windows.test_start, settings, ft, name="valid"
    )
    # the search, validation metrics and calibration fit on a member sample (SearchSettings)
    valid = subsample_members(full_valid, search_settings.max_members, search_settings.seed)
    del full_valid  # the sample's matrices are copies: release the full validation matrix
    step("prepare", 1, 2)
    test = build_task(tables, windows.test_start, windows.test_end, settings, ft, name="test")
    step("prepare", 2, 2)
    # BPR is a comparison, never shipped: searched and reported for programs up to a size
    # (SearchSettings.compare_bpr), counted as the members the final models are fitted on
    members = int(test.train.n_members)
    with_bpr = bpr_compared(search_settings, members)
    log.info(
        "BPR comparison %s (compare_bpr=%s, %d members)",
        with_bpr,
        search_settings.compare_bpr,
        members,
    )
    found = search(valid, search_settings, settings.ks, progress, compare_bpr=with_bpr)
    valid_models = fit_models(valid, found, settings, search_settings, found.fitted)
    models = fit_models(test, found, settings, search_settings)
    order = [name for name in MODEL_ORDER if name in models]
    metrics: dict[str, dict[str, float]] = {}
    valid_metrics: dict[str, dict[str, float]] = {}
    for i, name in enumerate(order):
        step("evaluate", i, len(order))
        valid_metrics[name] = evaluate_model(valid_models[name], valid, settings.ks)
        metrics[name] = evaluate_model(models[name], test, settings.ks)
    step("evaluate", len(order), len(order))
    try:
        history = (
            _history_rates(tables["offer_events"], windows.test_start)
            if "offer_events" in tables
            else None
        )
        cal, cal_info, curve = _calibrate(
            valid_models[SHIPPED], models[SHIPPED], valid, test, history, settings
        )
    except AffinityInputError as exc:  # e.g. a single class in the window
        cal, cal_info, curve = None, {"skipped": str(exc)}, None
    kmax = max(settings.ks)
    report: dict[str, Any] = {
        "dataset": dataset,
        "target": settings.target,
        "candidates": settings.candidates if settings.target == "offers" else "all",
        "split": {**windows.to_dict(), "test": test.summary(), "valid": valid.summary()},
        "shipped": SHIPPED,
        "selection_metric": search_settings.metric,
        "models": {name: _rounded(metrics[name]) for name in order},
        "ratios": _ratios(metrics, f"recall@{kmax}"),
        "validation": {name: _rounded(valid_metrics[name]) for name in order},
        "params": {
            "als": found.als,
            "bpr": found.bpr,
            "compare_bpr": {
                "setting": search_settings.compare_bpr,
                "auto_max_members": search_settings.bpr_auto_max_members,
                "members": members,
                "compared": with_bpr,
            },
            SHIPPED: found.blend,
            "interactions": settings.interaction_settings().model_dump(),
            "seed": search_settings.seed,
            "search": {
                "max_members": search_settings.max_members,
                "members": int(valid.train.n_members),
                "sampled_from": valid.sampled_from or int(valid.train.n_members),
            },
        },
        "calibration": cal_info,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return EvalRun(report, models, cal, test, found, curve)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}
