"""Policy value on a randomised multi-arm test (Hillstrom, Starbucks), over seeded splits.

Per split (``StratifiedShuffleSplit`` by arm, seeded) and outcome:

1. the project's uplift learners (``models.uplift``) and every installed peer learner
   (:mod:`training.policy.peers`) are fitted on the training rows, all arms at once. The
   engine's effects are built by the pieces ``offers train uplift`` and the serving adapter ship
   (:mod:`training.policy.engine_effects`: level fit with empirical-Bayes shrinkage,
   heterogeneity damping by a held-out slope, effects at the engine's lower confidence bound),
   with the variants that drop one piece at a time, and ``engine (previous)``: the learner
   fitted on all training rows with the unshrunk level calibration only (the engine before
   the shrinkage, damping and LCB);
2. each gives the engine's send rule on the test rows (:func:`send_policy`: the arm with the
   highest predicted effect net of its cost, or none);
3. every policy (plus each arm to all, nobody and random over the arms) is valued on the test
   rows by IPS with the logged propensities: ``value`` (outcome per member), ``incremental``
   (value minus the value of sending nothing, paired interval) and ``net_incremental``
   (incremental minus the known expected send cost), each with its 95% interval; SNIPS next to
   IPS; and the engine against the best fixed arm and the best peer on the same rows
   (paired IPS contrast).

The best fixed arm and best peer are chosen by their mean net incremental value over the
splits on the test rows, which favours them (the engine's policy gets no such choice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.uplift import LEARNERS
from training.policy.engine_effects import (
    ENGINE,
    NO_LCB,
    REFIT,
    SHIPPED,
    default_uncertainty_z,
    engine_fit,
)
from training.policy.peers import available_peers, missing_peer_libraries
from training.policy.policies import fixed_arm, send_policy, send_share, uniform
from training.policy.randomized import PolicyInputError, ips, ips_contrast, snips

__all__ = ["ArmData", "ArmsConfig", "evaluate_arms"]

log = logging.getLogger(__name__)
PREVIOUS = "engine (previous)"
UNCALIBRATED = "ours:S-uncalibrated"


@dataclass(frozen=True)
class ArmData:
    """A randomised test: features, the arm each row got (0 = none), outcomes, propensities."""

    name: str
    X: NDArray[np.float64]
    arm: NDArray[np.int64]
    arms: tuple[str, ...]  # arm names; arms[0] is "none"
    arm_probability: NDArray[np.float64]  # (n_arms,) probability of each arm in the design
    outcomes: dict[str, NDArray[np.float64]]
    propensity_source: str
    notes: dict[str, Any] = field(default_factory=dict)
    # group of each arm for the engine's shrinkage (e.g. the offer's kind; arm 0 ignored);
    # None: every arm in one group
    arm_groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = self.X.shape[0]
        if self.arm.shape != (n,):
            raise PolicyInputError(f"{self.name}: arm has shape {self.arm.shape}, X has {n} rows")
        if self.arm_probability.shape != (len(self.arms),):
            raise PolicyInputError(
                f"{self.name}: arm_probability has {self.arm_probability.shape[0]} entries "
                f"for {len(self.arms)} arms"
            )
        for name, y in self.outcomes.items():
            if y.shape != (n,):
                raise PolicyInputError(f"{self.name}: outcome {name} has shape {y.shape}")
        if self.arm_groups is not None and len(self.arm_groups) != len(self.arms):
            raise PolicyInputError(
                f"{self.name}: arm_groups has {len(self.arm_groups)} entries for "
                f"{len(self.arms)} arms"
            )


@dataclass(frozen=True)
class ArmsConfig:
    """Splits, learners and costs of one evaluation (see the module docstring)."""

    n_splits: int = 5
    test_size: float = 0.3
    seed: int = 0
    outcomes: tuple[str, ...] | None = None
    send_cost: dict[str, float] = field(default_factory=dict)  # outcome -> cost of one send
    engine_learner: str = SHIPPED.learner  # offers train uplift's default
    # off: the engine is the raw learner (offers train uplift with calibrate_level=False ships
    # no level, no damping and no standard errors, so no lower bound either)
    calibrate_level: bool = SHIPPED.calibrate_level
    uncertainty_z: float | None = None  # None: the engine's default (ScoringSettings)
    slope_share: float = SHIPPED.test_share  # training rows held out for the slope
    learners: tuple[str, ...] = ("S", "T", "X", "CT")
    base_params: dict[str, Any] | None = None
    peers: bool = True
    forest_trees: int = 50
    sample: int | None = None  # evaluate on a seeded subsample of this many rows (tests)

    def __post_init__(self) -> None:
        if self.n_splits < 1:
            raise PolicyInputError(f"n_splits must be >= 1; got {self.n_splits}")
        if not 0.0 < self.test_size < 1.0:
            raise PolicyInputError(f"test_size must be in (0, 1); got {self.test_size}")
        for name in (self.engine_learner, *self.learners):
            if name not in LEARNERS:
                raise PolicyInputError(f"learner {name!r} is not one of {sorted(LEARNERS)}")
        for outcome, cost in self.send_cost.items():
            if not np.isfinite(cost) or cost < 0:
                raise PolicyInputError(f"send_cost[{outcome!r}] must be >= 0; got {cost}")
        if self.sample is not None and self.sample < 100:
            raise PolicyInputError(f"sample must be >= 100 rows; got {self.sample}")
        if self.uncertainty_z is not None and not (
            np.isfinite(self.uncertainty_z) and 0 <= self.uncertainty_z <= 5
        ):
            raise PolicyInputError(f"uncertainty_z must lie in [0, 5]; got {self.uncertainty_z}")
        if not 0.0 < self.slope_share < 1.0:
            raise PolicyInputError(f"slope_share must be in (0, 1); got {self.slope_share}")


def _ours(name: str, config: ArmsConfig, seed: int, previous: bool = False) -> Any:
    """Our learner ``name`` fitted on all training rows. With ``previous``: both the raw
    learner (``ours:<name>-uncalibrated``) and the engine before this session's pieces
    (``engine (previous)``: level-calibrated to each arm's unshrunk regression-adjusted ATT,
    ``training.uplift.calibration.level_fit`` with ``shrink=False``), from one fit."""

    def effects_of(model, X_te, n_arms):
        eff = np.zeros((len(X_te), n_arms - 1))
        pred = model.predict(X_te)
        for j, k in enumerate(model.treatments_):
            eff[:, int(k) - 1] = pred[:, j]
        return eff

    def fit_predict(X_tr, y_tr, arm_tr, X_te, n_arms):
        model = LEARNERS[name](base_params=config.base_params, control=0, random_state=seed)
        model.fit(X_tr, y_tr, arm_tr)
        if not previous:
            return effects_of(model, X_te, n_arms)
        from training.uplift.calibration import apply_shifts, level_fit

        raw = effects_of(model, X_te, n_arms)
        apply_shifts(model, level_fit(model, X_tr, y_tr, arm_tr, shrink=False).shifts)
        return {PREVIOUS: effects_of(model, X_te, n_arms), f"ours:{name}-uncalibrated": raw}, None

    return fit_predict


def _splits(arm: NDArray, config: ArmsConfig):
    from sklearn.model_selection import StratifiedShuffleSplit

    splitter = StratifiedShuffleSplit(
        n_splits=config.n_splits, test_size=config.test_size, random_state=config.seed
    )
    return list(splitter.split(np.zeros(arm.size), arm))


def _value(
    arm: NDArray, y: NDArray, p: NDArray, pi: NDArray, none: NDArray, cost: float
) -> dict[str, Any]:
    inc = ips_contrast(arm, y, p, pi, none)
    share = send_share(pi)
    try:
        sn = snips(arm, y, p, pi).to_dict()
    except PolicyInputError:
        sn = None
    return {
        "value": ips(arm, y, p, pi).to_dict(),
        "value_snips": sn,
        "incremental": inc.to_dict(),
        "net_incremental": inc.shifted(-cost * share).to_dict(),
        "send_share": share,
        "arm_shares": pi.mean(axis=0).round(6).tolist(),
    }


def _split_run(
    data: ArmData,
    outcome: str,
    train: NDArray,
    test: NDArray,
    models: dict[str, Any],
    cost: float,
) -> dict[str, Any]:
    X, arm, y = data.X, data.arm, data.outcomes[outcome]
    n_arms = len(data.arms)
    p = data.arm_probability[arm[test]]
    n = test.size
    policies: dict[str, NDArray] = {}
    seconds: dict[str, float] = {}
    fit_info: dict[str, Any] = {}
    for name, fit_predict in models.items():
        start = time.perf_counter()
        out = fit_predict(X[train], y[train], arm[train], X[test], n_arms)
        # a peer returns one effect matrix; ours may return ({variant: effects}, info)
        variants, info = out if isinstance(out, tuple) else ({name: out}, None)
        if info is not None:
            fit_info[name] = info
        for variant, effects in variants.items():
            seconds[variant] = round(time.perf_counter() - start, 2)
            policies[variant] = send_policy(effects, cost)
    for k in range(1, n_arms):
        policies[f"all:{data.arms[k]}"] = fixed_arm(n, n_arms, k)
    policies["random"] = uniform(n, n_arms)
    policies["nobody"] = fixed_arm(n, n_arms, 0)
    none = policies["nobody"]
    values = {name: _value(arm[test], y[test], p, pi, none, cost) for name, pi in policies.items()}
    for name, s in seconds.items():
        values[name]["fit_seconds"] = s
    return {"values": values, "policies": policies, "fit_info": fit_info}


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key]["value"] for r in rows]))


def evaluate_arms(
    data: ArmData,
    config: ArmsConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every policy's value on every split and outcome (see the module docstring)."""
    config = config or ArmsConfig()
    outcomes = config.outcomes or tuple(data.outcomes)
    unknown = set(outcomes) - set(data.outcomes)
    if unknown:
        raise PolicyInputError(
            f"outcomes {sorted(unknown)} not in {data.name}; choose from {sorted(data.outcomes)}"
        )
    if config.sample is not None and config.sample < data.X.shape[0]:
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(data.X.shape[0], config.sample, replace=False))
        data = ArmData(
            data.name, data.X[rows], data.arm[rows], data.arms, data.arm_probability,
            {k: v[rows] for k, v in data.outcomes.items()}, data.propensity_source, data.notes,
            data.arm_groups,
        )  # fmt: skip
    splits = _splits(data.arm, config)
    groups = (
        None
        if data.arm_groups is None
        else {k: data.arm_groups[k] for k in range(1, len(data.arms))}
    )
    runs: list[dict[str, Any]] = []
    for outcome in outcomes:
        y = data.outcomes[outcome]
        binary = bool(np.isin(y, (0, 1)).all())
        cost = float(config.send_cost.get(outcome, 0.0))
        for i, (train, test) in enumerate(splits):
            seed = config.seed + i
            models: dict[str, Any] = {}
            if config.calibrate_level:
                models[ENGINE] = engine_fit(
                    seed,
                    learner=config.engine_learner,
                    base_params=config.base_params,
                    groups=groups,
                    uncertainty_z=config.uncertainty_z,
                    slope_share=config.slope_share,
                )
                models[PREVIOUS] = _ours(config.engine_learner, config, seed, previous=True)
            else:
                models[ENGINE] = _ours(config.engine_learner, config, seed)
            for name in config.learners:
                if not (binary or LEARNERS[name].supports_continuous):
                    continue
                if name != config.engine_learner:
                    models[f"ours:{name}"] = _ours(name, config, seed)
            if config.peers:
                peers = available_peers(binary, config.base_params, seed, config.forest_trees)
                models.update(peers)
            run = _split_run(data, outcome, train, test, models, cost)
            runs.append(
                {
                    "outcome": outcome,
                    "split": i,
                    "n_train": int(train.size),
                    "n_test": int(test.size),
                    "send_cost": cost,
                    "policies": run["values"],
                    "engine_fit": run["fit_info"].get(ENGINE),
                    "_pi": run["policies"],
                    "_test": test,
                }
            )
            if progress:
                progress(f"{data.name} / {outcome} / split {i + 1} of {config.n_splits}")
            log.info("%s: %s split %d done", data.name, outcome, i)
    summary = {o: _summarise(data, [r for r in runs if r["outcome"] == o]) for o in outcomes}
    for r in runs:
        r.pop("_pi")
        r.pop("_test")
    return {
        "dataset": data.name,
        "rows": int(data.X.shape[0]),
        "arms": list(data.arms),
        "arm_probability": data.arm_probability.tolist(),
        "propensity_source": data.propensity_source,
        "notes": data.notes,
        "setup": {
            "n_splits": config.n_splits,
            "test_size": config.test_size,
            "seed": config.seed,
            "engine_learner": config.engine_learner,
            "engine_level_calibration": config.calibrate_level,
            "engine_pieces": {
                "shrinkage": config.calibrate_level and SHIPPED.shrink_level,
                "shrinkage_groups": list(data.arm_groups) if data.arm_groups else None,
                "damping": config.calibrate_level and SHIPPED.damp_heterogeneity,
                "heterogeneity_floor": SHIPPED.heterogeneity_floor,
                "slope_share": config.slope_share,
                "uncertainty_z": (
                    (
                        default_uncertainty_z()
                        if config.uncertainty_z is None
                        else config.uncertainty_z
                    )
                    if config.calibrate_level
                    else 0.0
                ),
            },
            "learners": list(config.learners),
            "send_cost": {o: float(config.send_cost.get(o, 0.0)) for o in outcomes},
            "peers_missing": missing_peer_libraries() if config.peers else "not requested",
            "sample": config.sample,
        },
        "splits": runs,
        "summary": summary,
    }


def _summarise(data: ArmData, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over splits per policy, and the engine against the best fixed arm and peer."""
    names = list(runs[0]["policies"])
    per_policy: dict[str, dict[str, Any]] = {
        name: {
            "value_mean": _mean([r["policies"][name] for r in runs], "value"),
            "net_incremental_mean": _mean([r["policies"][name] for r in runs], "net_incremental"),
            "net_incremental_per_split": [
                r["policies"][name]["net_incremental"]["value"] for r in runs
            ],
        }
        for name in names
    }

    def best(candidates: list[str]) -> str | None:
        if not candidates:
            return None
        return max(candidates, key=lambda c: float(per_policy[c]["net_incremental_mean"]))

    fixed = [n for n in names if n.startswith("all:")]
    peers = [n for n in names if ":" in n and n.split(":")[0] in ("causalml", "sklift")]
    chosen = {"best_fixed": best(fixed), "best_peer": best(peers)}
    for lib in ("causalml", "sklift"):
        chosen[f"best_{lib}"] = best([n for n in peers if n.startswith(lib + ":")])
    contrasts: dict[str, list[dict[str, Any]]] = {}
    # the shipped engine against the variants without one of its pieces (what each one changes)
    variants = {"no_lcb": NO_LCB, "previous": PREVIOUS, "refit": REFIT}
    for label, other in [*chosen.items(), *variants.items()]:
        if other is None or other not in names:
            continue
        rows = []
        for r in runs:
            test = r["_test"]
            arm, y = data.arm[test], data.outcomes[r["outcome"]][test]
            p = data.arm_probability[arm]
            pe, po = r["_pi"][ENGINE], r["_pi"][other]
            diff = ips_contrast(arm, y, p, pe, po)
            extra = r["send_cost"] * (send_share(pe) - send_share(po))
            rows.append(diff.shifted(-extra).to_dict())
        contrasts[f"engine_minus_{label}"] = rows
    return {"policies": per_policy, "chosen": chosen, "engine_contrasts": contrasts}
