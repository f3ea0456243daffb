"""Hillstrom e-mail test as a three-arm randomised policy test.

Arms: 0 = ``No E-Mail``, 1 = ``Mens E-Mail``, 2 = ``Womens E-Mail``, each assigned with
probability 1/3 by design (the propensities used by IPS). Features: those of the uplift
benchmark (:func:`training.uplift.datasets.load_hillstrom`: 18 numeric columns). Outcomes over
the two weeks after the send: ``visit``, ``conversion`` (0/1) and ``spend`` (dollars).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.policy.arms import ArmData
from training.uplift.datasets import HILLSTROM_FILE, default_data_dir, load_hillstrom

__all__ = ["ARMS", "DEFAULT_SEND_COST", "load_arms"]

ARMS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
# Cost of one e-mail in each outcome's unit (a setting: --set cost.spend=0.25).
DEFAULT_SEND_COST = {"visit": 0.0, "conversion": 0.0, "spend": 0.10}


def load_arms(data_dir: Path | None = None) -> ArmData:
    """The Hillstrom test with arm codes, design propensities and three outcomes."""
    bench = load_hillstrom(data_dir)
    path = (data_dir or default_data_dir()) / "hillstrom" / HILLSTROM_FILE
    spend = pd.read_csv(path, usecols=["spend"])["spend"].to_numpy(np.float64)
    codes = {name: i for i, name in enumerate(ARMS)}
    labels = pd.Series(bench.treatment)
    unknown = sorted(set(labels) - set(codes))
    if unknown:
        raise ValueError(f"{path}: column segment has unknown values {unknown}")
    arm = labels.map(codes).to_numpy(np.int64)
    return ArmData(
        name="hillstrom",
        X=bench.X.to_numpy(np.float64),
        arm=arm,
        arms=ARMS,
        arm_probability=np.full(3, 1.0 / 3.0),
        outcomes={
            "visit": bench.outcomes["visit"].astype(np.float64),
            "conversion": bench.outcomes["conversion"].astype(np.float64),
            "spend": spend,
        },
        propensity_source="design: each arm with probability 1/3 (Hillstrom's random split)",
        notes={"arm_counts": np.bincount(arm, minlength=3).tolist()},
    )
