"""The synthetic program: determinism, ground truth, randomisation, known answers, validity."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.sim.simulate import Program, SimConfig, simulate
from features.sources import schema as S
from features.sources.io import to_canonical_frame

N = 12_000


@pytest.fixture(scope="module")
def program() -> Program:
    return simulate(n_members=N, seed=11)


def _end(p: Program) -> pd.Timestamp:
    return pd.Timestamp(p.config.end)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    simulate(n_members=1500, seed=5).write(a)
    simulate(n_members=1500, seed=5).write(b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {
        "members.parquet",
        "offers.parquet",
        "transactions.parquet",
        "offer_events.parquet",
        "catalog.yaml",
        "truth/affinity.parquet",
        "truth/effects.parquet",
        "truth/members_latent.parquet",
    }
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = tmp_path / "c"
    simulate(n_members=1500, seed=6).write(c)
    assert (c / "transactions.parquet").read_bytes() != (a / "transactions.parquet").read_bytes()


def test_tables_are_canonical(program: Program) -> None:
    for name, df in program.tables().items():
        assert list(df.columns) == S.TABLES[name].column_names, name
        pd.testing.assert_frame_equal(to_canonical_frame(df, name), df, obj=name)
    assert program.offers[S.OFFER_ID].tolist() == program.catalog.offer_ids


def test_values_are_valid(program: Program) -> None:
    end = _end(program)
    m, t, e = program.members, program.transactions, program.offer_events
    assert m[S.MEMBER_ID].is_unique and len(m) == N
    assert e[S.EVENT_ID].is_unique
    for df, col in ((m, S.JOINED_AT), (m, S.BIRTH_DATE), (t, S.TS), (e, S.TS)):
        assert df[col].notna().all() and (df[col] < end).all(), col
    assert (t[S.AMOUNT] > 0).all() and (t[S.QUANTITY] >= 1).all()
    assert set(t[S.MEMBER_ID]) <= set(m[S.MEMBER_ID])
    assert set(e[S.MEMBER_ID]) <= set(m[S.MEMBER_ID])
    assert set(e[S.OFFER_ID].dropna()) <= set(program.offers[S.OFFER_ID])
    held = e[S.EVENT] == "held_out"
    assert e.loc[held, S.OFFER_ID].isna().all() and e.loc[~held, S.OFFER_ID].notna().all()
    joined = t[S.MEMBER_ID].map(m.set_index(S.MEMBER_ID)[S.JOINED_AT])
    assert (t[S.TS] >= joined).all()
    assert (m[S.POINTS_BALANCE] >= 0).all()
    assert set(e[S.EVENT]) == set(S.EVENTS)


def test_written_program_validates_clean(program: Program, tmp_path: Path) -> None:
    validate = pytest.importorskip("features.sources.validate")
    program.write(tmp_path)
    result = validate.validate_dir(tmp_path, now=_end(program))
    assert result.ok, [p.message for p in result.problems]
    assert not result.problems
    assert result.counts["transactions"].kept == len(program.transactions)


def test_truth_files_shape(program: Program) -> None:
    n_off = len(program.offers)
    aff, eff = program.truth["affinity"], program.truth["effects"]
    assert list(aff.columns) == [S.MEMBER_ID, S.OFFER_ID, "affinity"]
    assert list(eff.columns) == [S.MEMBER_ID, S.OFFER_ID, "tau_conversion", "tau_spend"]
    assert len(aff) == len(eff) == N * n_off
    assert not aff.duplicated([S.MEMBER_ID, S.OFFER_ID]).any()
    for col in ("tau_conversion", "tau_spend"):
        assert eff[col].dtype == np.float32
    assert aff["affinity"].between(0, 1).all() and eff["tau_conversion"].between(0, 1).all()
    assert (eff["tau_spend"] >= 0).all()
    info = aff.merge(program.offers[[S.OFFER_ID, S.KIND]], on=S.OFFER_ID)
    assert (info.loc[info[S.KIND] == "informational", "affinity"] == 0).all()
    latent = program.truth["members_latent"]
    assert len(latent) == N and latent[S.MEMBER_ID].is_unique
    assert {"price_sensitivity", "purchase_rate", "pref_coffee", "resp_experience"} <= set(
        latent.columns
    )
    prefs = latent[[c for c in latent.columns if c.startswith("pref_")]].sum(axis=1)
    np.testing.assert_allclose(prefs, 1.0, rtol=1e-5)


def test_assignment_is_randomised_with_correct_propensities(program: Program) -> None:
    e, c = program.offer_events, program.config.control_share
    arm = e[e[S.EVENT].isin(["sent", "held_out"])]
    assert arm[S.PROPENSITY].notna().all() and arm[S.PROPENSITY].between(0, 1).all()
    assert not arm.duplicated([S.CAMPAIGN_ID, S.MEMBER_ID]).any()  # one arm per campaign
    assert (arm.loc[arm[S.EVENT] == "held_out", S.PROPENSITY] == c).all()
    sent = arm[arm[S.EVENT] == "sent"]
    k = (1 - c) / sent[S.PROPENSITY]
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)  # (1 - c) / number of eligible
    assert e.loc[~e[S.EVENT].isin(["sent", "held_out"]), S.PROPENSITY].isna().all()

    # Control share per campaign matches its propensity (binomial, 4 sd).
    for _, g in arm.groupby(S.CAMPAIGN_ID):
        n = len(g)
        share = (g[S.EVENT] == "held_out").mean()
        assert abs(share - c) < 4 * np.sqrt(c * (1 - c) / n), share

    # Horvitz-Thompson: for an offer open to everyone, sum(1 / propensity) over the members who
    # were sent it estimates the number randomised in that campaign.
    open_ids = [o.offer_id for o in program.catalog.offers if not o.eligibility and not o.moment]
    first = sent[sent[S.OFFER_ID].isin(open_ids)].groupby(S.OFFER_ID)[S.CAMPAIGN_ID].min()
    est = var = total = 0.0
    for oid, cid in first.items():
        rows = sent[(sent[S.OFFER_ID] == oid) & (sent[S.CAMPAIGN_ID] == cid)]
        p = rows[S.PROPENSITY].to_numpy()
        est += (1 / p).sum()
        var += ((1 - p) / p**2).sum()
        total += (arm[S.CAMPAIGN_ID] == cid).sum()
    assert len(first) >= 5
    assert abs(est - total) < 4 * np.sqrt(var), (est, total)


def _bought_in_window(p: Program, rows: pd.DataFrame, days: int = 14) -> np.ndarray:
    t = p.transactions[[S.MEMBER_ID, S.TS]]
    x = rows[[S.CAMPAIGN_ID, S.MEMBER_ID, "sent_at"]].merge(t, on=S.MEMBER_ID)
    inside = (x[S.TS] >= x["sent_at"]) & (x[S.TS] < x["sent_at"] + pd.Timedelta(days=days))
    hit = x[inside][[S.CAMPAIGN_ID, S.MEMBER_ID]].drop_duplicates()
    key = pd.MultiIndex.from_frame(rows[[S.CAMPAIGN_ID, S.MEMBER_ID]])
    return key.isin(pd.MultiIndex.from_frame(hit))


def test_treated_conversion_exceeds_control_by_the_true_effect(program: Program) -> None:
    a = program.truth["assignments"]
    treated, control = a[a["treated"]], a[~a["treated"]]
    yt = _bought_in_window(program, treated).mean()
    yc = _bought_in_window(program, control).mean()
    se = np.sqrt(yt * (1 - yt) / len(treated) + yc * (1 - yc) / len(control))
    tau = treated["tau_conversion"].mean()
    assert tau > 0.02
    assert yt - yc > 3 * se
    assert abs((yt - yc) - tau) < 4 * se, (yt - yc, tau, se)
    # Control members' conversion is their baseline probability.
    assert abs(yc - control["p_baseline"].mean()) < 4 * np.sqrt(yc * (1 - yc) / len(control))


def test_redemption_follows_true_affinity(program: Program) -> None:
    a = program.truth["assignments"]
    a = a[a["treated"]]
    red = program.offer_events[program.offer_events[S.EVENT] == "redeemed"]
    key = pd.MultiIndex.from_frame(a[[S.CAMPAIGN_ID, S.MEMBER_ID]])
    y = key.isin(pd.MultiIndex.from_frame(red[[S.CAMPAIGN_ID, S.MEMBER_ID]]))
    p = a["affinity"].to_numpy()
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / len(p)
    hi, lo = p >= np.quantile(p, 0.75), p <= np.quantile(p, 0.25)
    assert y[hi].mean() > 2 * y[lo].mean()


def test_lifecycle_stages_and_tiers_all_occur(program: Program) -> None:
    m, t, cfg = program.members, program.transactions, program.config
    end = _end(program)
    assert set(m[S.TIER]) == set(S.TIERS)
    last = m[S.MEMBER_ID].map(t.groupby(S.MEMBER_ID)[S.TS].max())
    since = (end - last).dt.days.fillna(10**6)
    tenure = (end - m[S.JOINED_AT]).dt.days
    stage = np.select(
        [
            tenure < cfg.onboarding_days,
            since <= cfg.lapsing_after_days,
            since <= cfg.lapsed_after_days,
        ],
        ["onboarding", "active", "lapsing"],
        "lapsed",
    )
    shares = pd.Series(stage).value_counts(normalize=True)
    assert set(shares.index) == set(S.LIFECYCLE_STAGES)
    assert (shares > 0.03).all(), shares
    assert (tenure > 3 * 365).mean() > 0.1  # many long-standing members
    # Tier follows the points rule on trailing-12-month spend.
    spend = m[S.MEMBER_ID].map(t.groupby(S.MEMBER_ID)[S.AMOUNT].sum()).fillna(0)
    tier = np.searchsorted(cfg.tier_thresholds, np.floor(spend), side="right") - 1
    assert (np.asarray(S.TIERS)[tier] == m[S.TIER].to_numpy()).all()


def test_weekly_seasonality_and_basket_shape(program: Program) -> None:
    t = program.transactions
    baskets = t.drop_duplicates(S.TRANSACTION_ID)
    share = baskets[S.TS].dt.day_of_week.value_counts(normalize=True)
    assert share[5] > 1.4 * share[1]  # Saturday busier than Tuesday
    per_member_year = len(baskets) / N * 365 / program.config.history_days
    assert 15 <= per_member_year <= 25
    lines = t.groupby(S.TRANSACTION_ID).size()
    assert lines.min() >= 1 and lines.max() <= 3
    assert baskets[S.TS].dt.hour.between(0, 5).mean() < 0.01


def test_config_end_is_respected() -> None:
    end = datetime(2025, 3, 15)
    p = simulate(n_members=800, seed=1, config=SimConfig(end=end))
    for df, col in ((p.transactions, S.TS), (p.offer_events, S.TS), (p.members, S.JOINED_AT)):
        assert df[col].max() < pd.Timestamp(end)
    assert p.transactions[S.TS].min() >= pd.Timestamp(end) - pd.Timedelta(days=365)


def test_cli_simulate_writes_a_program(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from offers import cmd_simulate

    app = typer.Typer()
    app.callback()(lambda: None)  # keep `simulate` a subcommand, as in the real CLI
    cmd_simulate.register(app)
    out = tmp_path / "prog"
    res = CliRunner().invoke(
        app, ["simulate", "--members", "300", "--seed", "3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "300 members" in res.output and "transaction lines" in res.output
    assert (out / "truth" / "effects.parquet").exists() and (out / "catalog.yaml").exists()


def test_campaigns_cover_every_sendable_offer(program: Program) -> None:
    e = program.offer_events
    assert 6 <= e[S.CAMPAIGN_ID].nunique() <= 8
    assert set(e[S.CHANNEL]) == {"email", "app"}
    sendable = {
        o.offer_id
        for o in program.catalog.offers
        if o.channels is None or {"email", "app"} & set(o.channels)
    }
    sent = set(e.loc[e[S.EVENT] == "sent", S.OFFER_ID])
    assert sent == sendable
    # Eligibility is respected: onboarding offers go only to members in their first 60 days.
    onboarding = [
        o.offer_id
        for o in program.catalog.offers
        if o.eligibility and o.eligibility.lifecycle_stages == ["onboarding"]
    ]
    rows = e[(e[S.EVENT] == "sent") & e[S.OFFER_ID].isin(onboarding)]
    joined = rows[S.MEMBER_ID].map(program.members.set_index(S.MEMBER_ID)[S.JOINED_AT])
    tenure = rows[S.TS] - joined
    assert len(rows) > 20
    assert (tenure < pd.Timedelta(days=program.config.onboarding_days, hours=1)).all()
