"""Open Bandit Dataset (campaign ``all``): Bernoulli Thompson sampling valued from random logs.

The behaviour policy is the uniform-random logger (``random/all``: every item at every position
with the logged propensity 1/80). The evaluation policy is the Bernoulli Thompson sampling
(BTS) policy that ran over the same week (``bts/all``); its on-policy value, the ground truth,
is the mean click of the BTS logs.

BTS's action probabilities are not published per context: the BTS logs carry only the
propensity of the chosen (item, position), and it changes over the week (232 of the 239
observed pairs have more than one value; SOURCE.md: "BTS propensities vary widely"). BTS is
context-free (the same distribution for every user at a given time), so its distribution at a
position is estimated by the empirical (item | position) frequencies of the BTS logs, in time
buckets (``buckets="day"``, default: the BTS logs of the same UTC day as the random row, so the
estimate follows the policy as it moved during the week; ``"week"``: the whole week pooled).
Both are reported.

Estimators (:mod:`training.policy.randomized`): IPS, SNIPS and DR, and the direct method (DM,
the reward model alone) for reference. The reward model of DR and DM is cross-fitted (2 folds)
on the random logs: the click rate of the position times an item multiplier shrunk toward 1,
``(clicks_item + alpha) / (expected_clicks_item + alpha)`` with ``alpha = 10``.

Relative error = ``|estimate - on-policy value| / on-policy value``, on the full random logs and
as the mean over bootstrap resamples of the random logs (as Open Bandit Pipeline reports it;
its published relative errors on this campaign are the anchors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.policy.randomized import Estimate, PolicyInputError, dr, ips, snips
from training.uplift.datasets import default_data_dir

__all__ = ["ANCHORS", "GOAL", "load_logs", "run_open_bandit"]

ANCHORS = {"dm": 0.157, "dros": 0.160, "dr": 0.292, "ipw": 0.311}  # OBP, BTS from random, all
GOAL = 0.10
ALPHA = 10.0
BUCKETS = ("day", "week")


def load_logs(data_dir: Path | None = None, policy: str = "random") -> pd.DataFrame:
    """One behaviour policy's log of campaign ``all``: item, position (0-based), click, etc."""
    path = (data_dir or default_data_dir()) / "open-bandit-dataset" / policy / "all" / "all.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"Open Bandit log not found: {path}")
    raw = pd.read_csv(
        path, index_col=0, usecols=[0, 1, 2, 3, 4, 5]
    )  # index, timestamp, item_id, position, click, propensity_score
    expected = {"timestamp", "item_id", "position", "click", "propensity_score"}
    missing = expected - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} missing")
    bad = raw.loc[~raw["position"].isin((1, 2, 3)), "position"]
    if len(bad):
        raise ValueError(f"{path}: column position has values {sorted(set(bad))[:5]} not in 1..3")
    ts = pd.to_datetime(raw["timestamp"], utc=True)
    return pd.DataFrame(
        {
            "item": raw["item_id"].to_numpy(np.int64),
            "position": raw["position"].to_numpy(np.int64) - 1,
            "click": raw["click"].to_numpy(np.float64),
            "propensity": raw["propensity_score"].to_numpy(np.float64),
            "day": ts.dt.floor("D").dt.strftime("%Y-%m-%d").to_numpy(),
        }
    )


def _bts_distribution(
    bts: pd.DataFrame, n_items: int, buckets: str
) -> dict[str, NDArray[np.float64]]:
    """Bucket -> (3 positions, n_items) empirical item frequencies of the BTS logs."""
    if buckets not in BUCKETS:
        raise PolicyInputError(f"buckets must be one of {BUCKETS}; got {buckets!r}")
    groups = {"week": bts} if buckets == "week" else dict(iter(bts.groupby("day")))
    out = {}
    for key, g in groups.items():
        counts = np.zeros((3, n_items))
        np.add.at(counts, (g["position"].to_numpy(), g["item"].to_numpy()), 1.0)
        totals = counts.sum(axis=1, keepdims=True)
        if (totals == 0).any():
            raise PolicyInputError(f"BTS logs of {key}: a position has no impressions")
        out[str(key)] = counts / totals
    return out


def _policy_matrix(
    rand: pd.DataFrame, dist: dict[str, NDArray[np.float64]], buckets: str
) -> NDArray[np.float64]:
    keys = np.full(len(rand), "week", dtype=object) if buckets == "week" else rand["day"]
    missing = sorted(set(keys) - set(dist))
    if missing:
        raise PolicyInputError(f"random logs have days {missing} with no BTS logs")
    pos = rand["position"].to_numpy()
    return np.stack([dist[k][p] for k, p in zip(keys, pos, strict=True)])


def _reward_model(rand: pd.DataFrame, n_items: int, folds: int = 2, seed: int = 0) -> NDArray:
    """Cross-fitted q(row, item): position click rate x shrunk item multiplier."""
    n = len(rand)
    fold = np.random.default_rng(seed).permutation(n) % folds
    pos, item = rand["position"].to_numpy(), rand["item"].to_numpy()
    click = rand["click"].to_numpy()
    q = np.zeros((n, n_items))
    for k in range(folds):
        tr = fold != k
        ctr = np.array([click[tr & (pos == j)].mean() for j in range(3)])
        clicks = np.bincount(item[tr], weights=click[tr], minlength=n_items)
        expected = np.bincount(item[tr], weights=ctr[pos[tr]], minlength=n_items)
        mult = (clicks + ALPHA) / (expected + ALPHA)
        te = ~tr
        q[te] = ctr[pos[te]][:, None] * mult[None, :]
    return q


def _estimates(rand: pd.DataFrame, pi: NDArray, q: NDArray) -> dict[str, Estimate]:
    a, r, p = rand["item"].to_numpy(), rand["click"].to_numpy(), rand["propensity"].to_numpy()
    dm_terms = (pi * q).sum(axis=1)
    dm_se = dm_terms.std(ddof=1) / np.sqrt(len(dm_terms))
    return {
        "ips": ips(a, r, p, pi),
        "snips": snips(a, r, p, pi),
        "dr": dr(a, r, p, pi, q),
        "dm": Estimate.from_mean(float(dm_terms.mean()), float(dm_se), len(dm_terms)),
    }


def _bootstrap(
    rand: pd.DataFrame, pi: NDArray, q: NDArray, truth: float, n_boot: int, seed: int
) -> dict[str, dict[str, float]]:
    """Relative error of each estimator over bootstrap resamples of the random logs."""
    rng = np.random.default_rng(seed)
    a, r, p = rand["item"].to_numpy(), rand["click"].to_numpy(), rand["propensity"].to_numpy()
    rows = np.arange(len(a))
    w = pi[rows, a] / p
    dm_terms = (pi * q).sum(axis=1)
    dr_terms = dm_terms + w * (r - q[rows, a])
    errors: dict[str, list[float]] = {"ips": [], "snips": [], "dr": [], "dm": []}
    for _ in range(n_boot):
        b = rng.integers(0, len(a), len(a))
        values = {
            "ips": (w[b] * r[b]).mean(),
            "snips": (w[b] * r[b]).sum() / w[b].sum(),
            "dr": dr_terms[b].mean(),
            "dm": dm_terms[b].mean(),
        }
        for name, v in values.items():
            errors[name].append(abs(v - truth) / truth)
    return {
        name: {
            "relative_error_mean": float(np.mean(e)),
            "relative_error_std": float(np.std(e, ddof=1)),
        }
        for name, e in errors.items()
    }


def run_open_bandit(
    data_dir: Path | None = None, buckets: str = "day", n_boot: int = 200, seed: int = 0
) -> dict[str, Any]:
    """The report: on-policy value, estimates with intervals and relative errors (module doc)."""
    if n_boot < 0:
        raise PolicyInputError(f"n_boot must be >= 0; got {n_boot}")
    if buckets not in BUCKETS:
        raise PolicyInputError(f"buckets must be one of {BUCKETS}; got {buckets!r}")
    rand, bts = load_logs(data_dir, "random"), load_logs(data_dir, "bts")
    n_items = int(max(rand["item"].max(), bts["item"].max()) + 1)
    truth = Estimate.from_mean(
        float(bts["click"].mean()), float(bts["click"].std(ddof=1) / np.sqrt(len(bts))), len(bts)
    )
    q = _reward_model(rand, n_items, seed=seed)
    by_bucket: dict[str, dict[str, Any]] = {}
    for b in BUCKETS:
        pi = _policy_matrix(rand, _bts_distribution(bts, n_items, b), b)
        est = _estimates(rand, pi, q)
        by_bucket[b] = {
            "estimates": {
                name: e.to_dict() | {"relative_error": abs(e.value - truth.value) / truth.value}
                for name, e in est.items()
            },
            "mean_weight": float(
                (pi[np.arange(len(rand)), rand["item"]] / rand["propensity"]).mean()
            ),
            "bootstrap": _bootstrap(rand, pi, q, truth.value, n_boot, seed) if n_boot else {},
        }
    chosen = by_bucket[buckets]
    return {
        "dataset": "open-bandit",
        "campaign": "all",
        "rows": {"random": len(rand), "bts": len(bts)},
        "clicks": {"random": int(rand["click"].sum()), "bts": int(bts["click"].sum())},
        "on_policy": truth.to_dict(),
        "evaluation_policy": {
            "buckets": buckets,
            "source": "BTS logs' empirical (item | position) frequencies"
            + (" per UTC day, matched to the random row's day" if buckets == "day" else ""),
        },
        "estimates": chosen["estimates"],
        "bootstrap": {"n": n_boot, "seed": seed, **chosen["bootstrap"]},
        "mean_weight": chosen["mean_weight"],
        "by_buckets": by_bucket,
        # the logger's own mean click, which ignores the evaluation policy: the error any
        # estimator must beat to have learnt something about BTS from the logs
        "null_reference": {
            "value": float(rand["click"].mean()),
            "relative_error": abs(float(rand["click"].mean()) - truth.value) / truth.value,
        },
        "anchors_obp": ANCHORS,
        "goal_relative_error": GOAL,
        "reward_model": f"cross-fitted (2 folds): position click rate x item multiplier "
        f"(clicks + {ALPHA:g}) / (expected clicks + {ALPHA:g})",
    }
