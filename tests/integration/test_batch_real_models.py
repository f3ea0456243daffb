"""``offers score`` end to end with REAL registered models (no fakes).

A small simulated program is written; an affinity model (ALS + BPR blend, calibrated) and an
uplift model (few LightGBM trees, exported to ONNX) are trained by the project's training code
(``offers.demo_pipeline.train_and_promote``) and registered as ``@champion`` in a local MLflow
tracking store (SQLite under tmp_path). The CLI then scores the send with a binding budget
into a Parquet file and a SQLite decision store. Checked: the send file's columns, model
versions, holdout share, budgets never exceeded, one decision per member in the store, and
that features were computed with the feature configuration stored with the uplift model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tests.support.api import build_program

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from offers.demo_pipeline import train_and_promote

    home = tmp_path_factory.mktemp("batch-real")
    program = build_program(home / "data", n_members=1500, seed=5)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    # the project's training code (search of one ALS and one BPR configuration, calibrated;
    # uplift S-learner with few trees), registered and made champion
    trained = train_and_promote(program["dir"], home, tracking, seed=0)
    versions = {k: v.version for k, v in trained.items()}
    return {"home": home, "program": program, "tracking": tracking, "versions": versions}


def _score(world, name: str, campaign: dict) -> tuple[pd.DataFrame, Path, str]:
    import typer

    from offers.cmd_score import register

    home: Path = world["home"]
    path = home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(campaign))
    out = home / f"{name}.parquet"
    store = f"sqlite:///{home / f'{name}.db'}"
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--campaign", str(path),
            "--data", str(world["program"]["dir"]),
            "--out", str(out),
            "--store", store,
            "--tracking-uri", world["tracking"],
            "--chunk-size", "400",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "uplift model's configuration" in res.output
    return pd.read_parquet(out), out, store


def test_score_with_registered_models(world):
    from sqlalchemy import func, select

    from features.catalog.model import load_catalog
    from serving.batch import OUTPUT_COLUMNS
    from serving.store import open_store
    from serving.store.tables import decisions

    catalog = load_catalog(world["program"]["catalog"])
    offer_ids = [o.offer_id for o in catalog.offers]
    capped = offer_ids[0]
    campaign = {
        "campaign_id": "real-models",
        "channel": "email",
        "send_date": str(world["program"]["end"].date()),
        "offers_per_member": 2,
        "budgets": {capped: 3.0},
        "price_sample": None,
        "engine": {"holdout": {"share": 0.1}},
    }
    frame, _out, store_url = _score(world, "send", campaign)
    assert list(frame.columns) == list(OUTPUT_COLUMNS)
    members = frame["member_id"].nunique()
    assert members > 500
    # model versions of the registered champions on every row
    versions = frame["model_versions"].iloc[0]
    assert f"offers-affinity/{world['versions']['affinity']}" in versions
    assert f"offers-uplift/{world['versions']['uplift']}" in versions
    assert frame["model_versions"].nunique() == 1
    # holdout: about 10% of the members, one row each, no offer
    held = frame.loc[frame["holdout"]]
    share = held["member_id"].nunique() / members
    assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / members)
    assert held["offer_id"].isna().all() and (held["rank"] == 0).all()
    assert held.groupby("member_id").size().max() == 1
    # offers: real scores, at most 2 per member, ranks 1..
    shown = frame.loc[frame["status"] == "offers"]
    assert len(shown) > 0 and shown["p_redeem"].between(0, 1).all()
    assert shown.groupby("member_id").size().max() <= 2
    assert shown["explanation"].str.len().gt(0).all()
    # the binding budget (count of expected redemptions) is never exceeded
    spent = shown.loc[shown["offer_id"] == capped, "p_redeem"].sum()
    assert spent <= 3.0 + 1e-9
    # every member's decision is in the store, once
    store = open_store(store_url, migrate_schema=False)
    try:
        with store.engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(decisions)).scalar_one()
            ids = set(conn.execute(select(decisions.c.decision_id)).scalars())
    finally:
        store.close()
    assert n == members
    assert ids == set(frame["decision_id"])


def test_features_use_the_uplift_models_configuration(world):
    import mlflow

    from features.pipeline.config import FeatureConfig
    from serving.batch import load_scorer, scorer_feature_config

    mlflow.set_tracking_uri(world["tracking"])
    scorer = load_scorer(
        {
            "affinity": "models:/offers-affinity@champion",
            "uplift": "models:/offers-uplift@champion",
        },
        world["tracking"],
    )
    config = scorer_feature_config(scorer)
    assert isinstance(config, FeatureConfig)
    assert config.categories  # resolved at training: an explicit category list
    feats = pd.read_parquet(world["home"] / "send.parquet.parts" / "features.parquet")
    for cat in config.categories:
        assert f"share_{cat}" in feats.columns
