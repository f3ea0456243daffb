"""Starbucks rewards-app offers as an 11-arm randomised policy test, with a balance test.

Arms: 0 = no offer at the first send (hour 0), 1..10 = the portfolio's offers (in
``portfolio.json`` order) received at hour 0. Outcomes in the 7 days [0, 168) before the next
send: ``purchase`` (any transaction), ``spend`` (sum of the amounts) and ``spend_net`` (spend
minus the rewards paid for offers completed in the window). Features from the profile only
(as the uplift benchmark's :func:`training.uplift.datasets.load_starbucks`): age, income,
tenure in days, one-hot gender and a flag for the members without demographics.

The simulator publishes no propensities, so before any value is estimated
:func:`balance_test` checks that the arm does not depend on member attributes (chi-square of
arm x attribute bins for age, income, gender and tenure, and of the arm frequencies against
equal shares for the 10 offers); the propensities are then the empirical arm frequencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.policy.arms import ArmData
from training.uplift.datasets import STARBUCKS_SEND_HOUR, STARBUCKS_WINDOW_HOURS, default_data_dir

__all__ = ["DEFAULT_SEND_COST", "balance_test", "load_arms"]

# Cost of one offer message in each outcome's unit (a setting: --set cost.spend=0.5).
DEFAULT_SEND_COST = {"purchase": 0.0, "spend": 0.10, "spend_net": 0.10}
BALANCE_ALPHA = 0.01


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    for name in ("profile.json.gz", "transcript.json.gz", "portfolio.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"Starbucks file not found: {folder / name}")
    profile = pd.read_json(folder / "profile.json.gz", orient="records", lines=True)
    transcript = pd.read_json(folder / "transcript.json.gz", orient="records", lines=True)
    portfolio = pd.read_json(folder / "portfolio.json", orient="records", lines=True)
    return profile, transcript, portfolio


def _features(members: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    missing = members["gender"].isna() | (members["age"] == 118)
    joined = pd.to_datetime(members["became_member_on"].astype(str), format="%Y%m%d")
    X = pd.DataFrame(
        {
            "age": members["age"].where(~missing, -1).astype(np.float64),
            "income": members["income"].where(~missing, -1).astype(np.float64),
            "tenure_days": (joined.max() - joined).dt.days.astype(np.float64),
            "gender_F": (members["gender"] == "F").astype(np.float64),
            "gender_M": (members["gender"] == "M").astype(np.float64),
            "gender_O": (members["gender"] == "O").astype(np.float64),
            "demographics_missing": missing.astype(np.float64),
        }
    )
    return X, missing


def _bins(values: pd.Series, missing: pd.Series, q: int = 4) -> pd.Series:
    """Quartile bins of ``values`` with the members without demographics as their own bin."""
    out = pd.Series("missing", index=values.index, dtype=object)
    known = ~missing
    out[known] = pd.qcut(values[known], q, duplicates="drop").astype(str)
    return out


def balance_test(arm: np.ndarray, attributes: dict[str, pd.Series]) -> dict[str, Any]:
    """Chi-square tests of independence of arm and each attribute, and of equal offer shares.

    Returns per attribute the statistic, degrees of freedom and p-value, and ``balanced``:
    every p-value above ``BALANCE_ALPHA / number of tests`` (Bonferroni).
    """
    from scipy import stats

    tests: dict[str, dict[str, float]] = {}
    for name, values in attributes.items():
        table = pd.crosstab(pd.Series(arm, index=values.index), values)
        chi2, p, dof, _ = stats.chi2_contingency(table.to_numpy())
        tests[name] = {"chi2": float(chi2), "dof": int(dof), "p_value": float(p)}
    counts = np.bincount(arm[arm > 0], minlength=int(arm.max()) + 1)[1:]
    chi2, p = stats.chisquare(counts)
    tests["offer_shares_equal"] = {
        "chi2": float(chi2),
        "dof": int(counts.size - 1),
        "p_value": float(p),
    }
    threshold = BALANCE_ALPHA / len(tests)
    return {
        "tests": tests,
        "alpha": BALANCE_ALPHA,
        "bonferroni_threshold": threshold,
        "balanced": bool(all(t["p_value"] > threshold for t in tests.values())),
    }


def load_arms(data_dir: Path | None = None) -> ArmData:
    """The first send as an 11-arm test, its outcomes, balance test and empirical propensities."""
    folder = (data_dir or default_data_dir()) / "starbucks"
    profile, transcript, portfolio = _read(folder)
    members = profile.set_index("id")
    offer_ids = portfolio["id"].tolist()
    names = [
        f"{t}-{d}-{r}-{int(u)}d"
        for t, d, r, u in portfolio[["offer_type", "difficulty", "reward", "duration"]].itertuples(
            index=False
        )
    ]
    received = transcript[
        (transcript["event"] == "offer received") & (transcript["time"] == STARBUCKS_SEND_HOUR)
    ]
    offer_of = received["value"].map(lambda v: v["offer id"])
    if received["person"].duplicated().any():
        raise ValueError(f"{folder}: a member received two offers at hour {STARBUCKS_SEND_HOUR}")
    code = pd.Series(
        pd.Index(offer_ids).get_indexer(offer_of) + 1, index=received["person"].to_numpy()
    )
    if (code == 0).any():
        raise ValueError(f"{folder}: offers at hour 0 not in portfolio.json: {offer_of[code == 0]}")
    arm = code.reindex(members.index, fill_value=0).to_numpy(np.int64)

    end = STARBUCKS_SEND_HOUR + STARBUCKS_WINDOW_HOURS
    window = transcript[(transcript["time"] >= STARBUCKS_SEND_HOUR) & (transcript["time"] < end)]
    tx = window[window["event"] == "transaction"]
    amount = tx["value"].map(lambda v: float(v["amount"]))
    spend = amount.groupby(tx["person"].to_numpy()).sum()
    done = window[window["event"] == "offer completed"]
    reward = done["value"].map(lambda v: float(v["reward"]))
    paid = reward.groupby(done["person"].to_numpy()).sum()
    spend_m = spend.reindex(members.index, fill_value=0.0).to_numpy(np.float64)
    paid_m = paid.reindex(members.index, fill_value=0.0).to_numpy(np.float64)
    n_tx = tx.groupby("person").size().reindex(members.index, fill_value=0).to_numpy()

    X, missing = _features(members)
    balance = balance_test(
        arm,
        {
            "age": _bins(members["age"].astype(float), missing),
            "income": _bins(members["income"].astype(float), missing),
            "gender": members["gender"].fillna("missing").astype(str),
            "tenure": _bins(X["tenure_days"], pd.Series(False, index=members.index)),
        },
    )
    freq = np.bincount(arm, minlength=len(offer_ids) + 1) / arm.size
    return ArmData(
        name="starbucks",
        X=X.to_numpy(np.float64),
        arm=arm,
        arms=("none", *names),
        arm_probability=freq,
        outcomes={
            "purchase": (n_tx >= 1).astype(np.float64),
            "spend": spend_m,
            "spend_net": spend_m - paid_m,
        },
        propensity_source="empirical arm frequencies at hour 0 (the balance test found no "
        "dependence on member attributes)"
        if balance["balanced"]
        else "empirical arm frequencies at hour 0 (WARNING: the balance test rejected "
        "independence; IPS values may be biased)",
        notes={
            "balance": balance,
            "arm_counts": np.bincount(arm, minlength=len(offer_ids) + 1).tolist(),
            "offer_ids": offer_ids,
            "window_hours": [STARBUCKS_SEND_HOUR, end],
        },
        # the engine shrinks each offer's level toward its kind's (bogo, discount,
        # informational), as offers train uplift does with offer -> kind
        arm_groups=("none", *portfolio["offer_type"].astype(str).tolist()),
    )
