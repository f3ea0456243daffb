"""One ``OFFERS_HOME``: ``offers train affinity``, ``offers train uplift``, then ``offers score``
finds the registered champions (issue 12: scoring looked in MLflow's default store and failed
with "Registered Model with name=offers-affinity not found")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _offers(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OFFERS_HOME": str(home), "OPENBLAS_NUM_THREADS": "1"}
    for var in ("MLFLOW_TRACKING_URI", "OFFERS_DATABASE_URL", "OFFERS_LKG_DIR"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "offers", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"offers {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done


def test_train_affinity_train_uplift_then_score_in_one_home(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "home" / "data"
    _offers(home, "simulate", "--out", str(data), "--members", "800")
    _offers(
        home, "train", "affinity", "--data", str(data), "--als-trials", "1", "--bpr-trials", "1"
    )
    _offers(home, "train", "uplift", "--data", str(data))
    send = pd.read_parquet(data / "transactions.parquet")["ts"].max().normalize() + pd.Timedelta(
        days=1
    )
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(
        f"campaign_id: one-home\nchannel: email\nsend_date: {send.date()}\noffers_per_member: 2\n"
    )
    out = tmp_path / "send.parquet"
    _offers(
        home, "score", "--campaign", str(campaign), "--data", str(data), "--out", str(out),
        "--no-store",
    )  # fmt: skip
    decisions = pd.read_parquet(out)
    assert decisions["member_id"].nunique() == 800
    versions = decisions["model_versions"].iloc[0]
    assert "offers-affinity/1" in versions and "offers-uplift/1" in versions
