"""Policy value on a randomised multi-arm test (Hillstrom, Starbucks), over seeded splits.

Per split (``StratifiedShuffleSplit`` by arm, seeded) and outcome:

1. the project's uplift learners (``models.uplift``; the engine's is what ``offers train
   uplift`` ships by default: ``training.uplift.fit``'s S-learner over LightGBM with its level
   calibration, ``training.uplift.calibration``) and every installed peer learner
   (:mod:`training.policy.peers`) are fitted on the training rows, all arms at once;
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
from training.policy.peers import PeerFit, available_peers, missing_peer_libraries
from training.policy.policies import fixed_arm, send_policy, send_share, uniform
from training.policy.randomized import PolicyInputError, ips, ips_contrast, snips

__all__ = ["ArmData", "ArmsConfig", "evaluate_arms"]

log = logging.getLogger(__name__)
ENGINE = "engine"


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


@dataclass(frozen=True)
class ArmsConfig:
    """Splits, learners and costs of one evaluation (see the module docstring)."""

    n_splits: int = 5
    test_size: float = 0.3
    seed: int = 0
    outcomes: tuple[str, ...] | None = None
    send_cost: dict[str, float] = field(default_factory=dict)  # outcome -> cost of one send
    engine_learner: str = "S"  # offers train uplift's default (UpliftTrainSettings.learner)
    calibrate_level: bool = True  # as offers train uplift (UpliftTrainSettings.calibrate_level)
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


def _ours(name: str, config: ArmsConfig, seed: int, calibrate: bool = False) -> PeerFit:
    """Our learner ``name``; with ``calibrate``, level-calibrated on its training rows as
    ``offers train uplift`` does (``training.uplift.calibration``: each arm's mean effect set
    to its regression-adjusted ATT)."""

    def fit_predict(X_tr, y_tr, arm_tr, X_te, n_arms):
        model = LEARNERS[name](base_params=config.base_params, control=0, random_state=seed)
        model.fit(X_tr, y_tr, arm_tr)
        if calibrate:
            from training.uplift.calibration import apply_shifts, level_shifts

            apply_shifts(model, level_shifts(model, X_tr, y_tr, arm_tr))
        eff = np.zeros((len(X_te), n_arms - 1))
        pred = model.predict(X_te)
        for j, k in enumerate(model.treatments_):
            eff[:, int(k) - 1] = pred[:, j]
        return eff

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
    models: dict[str, PeerFit],
    cost: float,
) -> dict[str, Any]:
    X, arm, y = data.X, data.arm, data.outcomes[outcome]
    n_arms = len(data.arms)
    p = data.arm_probability[arm[test]]
    n = test.size
    policies: dict[str, NDArray] = {}
    seconds: dict[str, float] = {}
    for name, fit_predict in models.items():
        start = time.perf_counter()
        effects = fit_predict(X[train], y[train], arm[train], X[test], n_arms)
        seconds[name] = round(time.perf_counter() - start, 2)
        policies[name] = send_policy(effects, cost)
    for k in range(1, n_arms):
        policies[f"all:{data.arms[k]}"] = fixed_arm(n, n_arms, k)
    policies["random"] = uniform(n, n_arms)
    policies["nobody"] = fixed_arm(n, n_arms, 0)
    none = policies["nobody"]
    values = {name: _value(arm[test], y[test], p, pi, none, cost) for name, pi in policies.items()}
    for name, s in seconds.items():
        values[name]["fit_seconds"] = s
    return {"values": values, "policies": policies}


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
        )  # fmt: skip
    splits = _splits(data.arm, config)
    runs: list[dict[str, Any]] = []
    for outcome in outcomes:
        y = data.outcomes[outcome]
        binary = bool(np.isin(y, (0, 1)).all())
        cost = float(config.send_cost.get(outcome, 0.0))
        for i, (train, test) in enumerate(splits):
            seed = config.seed + i
            engine = _ours(config.engine_learner, config, seed, config.calibrate_level)
            models: dict[str, PeerFit] = {ENGINE: engine}
            for name in config.learners:
                if not (binary or LEARNERS[name].supports_continuous):
                    continue
                if name != config.engine_learner:
                    models[f"ours:{name}"] = _ours(name, config, seed)
                elif config.calibrate_level:  # the engine's learner without the calibration
                    models[f"ours:{name}-uncalibrated"] = _ours(name, config, seed)
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
    for label, other in chosen.items():
        if other is None:
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
