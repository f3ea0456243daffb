"""Simulator difficulty levels: easy is the old program byte for byte; realistic stays inside
the bands documented in docs/simulator.md; the truth files reproduce the outcomes at every
level (known answers on exaggerated mechanics, and the rebuilt response in
training.policy.truth)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.sim.calibrate import sim_stats
from features.sim.simulate import DIFFICULTIES, Program, SimConfig, simulate
from features.sources import schema as S

# sha256 of every file of simulate(1500, seed=5).write() before the levels existed (commit
# 8e0cfe5, pyarrow 25.0.1, numpy 2.4.6): easy must reproduce them.
EASY_1500_SEED5 = {
    "catalog.yaml": "50c250b1333a1fbb82a890e115d95ac36b21004d5f10455258dd3a9e4f6fb839",
    "members.parquet": "a9bf06d4f3371262a78c1b2060e327ba51927dbe883684eaf17763756374ec60",
    "offer_events.parquet": "637c306fe61f660c8895443feeff64108f2f6b017edda14a24828a17c3098142",
    "offers.parquet": "5be398030fe7aac5e7e350327402d0fe8683e978c342bd3dbdc4778115156b51",
    "transactions.parquet": "21f71d96e962571f2971e98d28393e6f5a4f1b3079fb3018589d41d5dd47c6e1",
    "truth/affinity.parquet": "4d60ba30d8d981e88b80e0464ec6f14a832698bff49df0cc71766355b43452d3",
    "truth/assignments.parquet": "35e0000ae5a931d4801f425ba85114b882e7962f0145a2a9a66c95f3a5008153",
    "truth/effects.parquet": "ea593031563f2d7831e6ad6e8eb7c22e35eb74a260d21af8fd1c3534860538c9",
    "truth/members_latent.parquet": "24d782da8882b88f21eafdfbafe67f3d919e58521af0c88519eb3b32e79b72a0",  # noqa: E501
}
N = 12_000


@pytest.fixture(scope="module")
def realistic() -> Program:
    return simulate(N, seed=7, config=SimConfig(difficulty="realistic"))


@pytest.fixture(scope="module")
def stats(realistic: Program) -> dict[str, float]:
    return sim_stats(realistic)


@pytest.mark.parametrize("config", [None, SimConfig(), SimConfig(difficulty="easy")])
def test_easy_reproduces_the_files_from_before_the_levels(tmp_path: Path, config) -> None:
    simulate(n_members=1500, seed=5, config=config).write(tmp_path)
    for name, digest in EASY_1500_SEED5.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest, name
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(EASY_1500_SEED5) | {"truth/difficulty.json"}


def test_unknown_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"difficulty: 'medium' is not one of easy, realistic"):
        SimConfig(difficulty="medium")


def test_levels_are_deterministic_and_recorded(tmp_path: Path) -> None:
    import json

    for level in ("realistic", "hard"):
        a, b = tmp_path / f"{level}-a", tmp_path / f"{level}-b"
        for d in (a, b):
            simulate(1200, seed=4, config=SimConfig(difficulty=level)).write(d)
        for f in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
            assert (a / f).read_bytes() == (b / f).read_bytes(), (level, f)
        rec = json.loads((a / "truth" / "difficulty.json").read_text())
        assert rec["level"] == level and rec["pair_seed"] > 0
        assert rec["effect_scale"] == DIFFICULTIES[level].effect_scale
    hard, real = DIFFICULTIES["hard"], DIFFICULTIES["realistic"]
    assert hard.effect_scale == pytest.approx(real.effect_scale / 2)
    assert hard.harm_scale == pytest.approx(real.harm_scale * 2)


# ---- realistic: the documented bands (docs/simulator.md, "Calibration") ------------------------


def test_persuasion_at_a_low_baseline_is_small(stats: dict[str, float]) -> None:
    assert 0.2 <= stats["tau_conv_low_baseline_pp"] <= 1.0
    assert 0.2 <= stats["converted_share_of_non_buyers_pct"] <= 1.2


def test_some_effects_are_negative(stats: dict[str, float]) -> None:
    assert 0.10 <= stats["negative_effect_share_pairs"] <= 0.30
    assert stats["negative_conversion_share_pairs"] >= 0.05


def test_observables_explain_a_minor_part_of_the_effect(stats: dict[str, float]) -> None:
    assert 0.15 <= stats["observable_r2_tau_conversion"] <= 0.35


def test_effect_is_not_steep_in_recency(stats: dict[str, float]) -> None:
    # Truth for a send at the end, every member x offer, by months since the last purchase.
    bands = [v for k, v in stats.items() if k.startswith("tau_conv_at_end_recency_")]
    assert len(bands) == 4 and min(bands) > 0
    assert max(bands) / min(bands) < 2.5
    assert 0.5 <= bands[-1] / bands[0] <= 2.0  # 10-12 months vs 0-3 months (easy: ~3x)


def test_redemption_mechanics(stats: dict[str, float]) -> None:
    assert stats["redeemed_on_qualifying_basket_share"] == 1.0
    assert 0.15 <= stats["redeemed_without_view_share"] <= 0.35
    assert stats["redemption_rate_receipt_5"] < stats["redemption_rate_receipt_1"]


def test_budgets_bind_in_the_logged_campaigns(realistic: Program, stats) -> None:
    assert stats["budgets_closed_share"] >= 0.2
    assert 0.3 <= stats["budget_use_total"] <= 2.0
    b = realistic.truth["budgets"]
    assert b["closed"].any() and (b["spent"] > 0).mean() > 0.5
    # The catalog written is the one the campaigns used (budgets per million members).
    per_million = np.array([o.budget.amount for o in realistic.catalog.offers if o.budget])
    np.testing.assert_allclose(b["budget"], per_million * N / 1_000_000)


def test_published_segment_is_noisy_and_drives_eligibility(realistic: Program) -> None:
    latent = realistic.truth["members_latent"].set_index(S.MEMBER_ID)
    m = realistic.members.set_index(S.MEMBER_ID)
    same = (m[S.SEGMENT].astype(str) == latent.loc[m.index, "segment"].astype(str)).mean()
    assert 0.55 < same < 0.85  # 60 % kept + the chance draws that land on the true one
    e = realistic.offer_events
    for o in realistic.catalog.offers:
        if o.eligibility and o.eligibility.segments:
            sent = e[(e[S.EVENT] == "sent") & (e[S.OFFER_ID] == o.offer_id)][S.MEMBER_ID]
            assert m.loc[sent, S.SEGMENT].isin(o.eligibility.segments).all(), o.offer_id


# ---- truth reproduces the outcomes, at every level --------------------------------------------


def _outcome_in_window(p: Program, rows: pd.DataFrame, days: int, col: str) -> np.ndarray:
    """Per row: bought (0/1) or spend in [sent_at, sent_at + days)."""
    t = p.transactions[[S.MEMBER_ID, S.TS, S.AMOUNT, S.TRANSACTION_ID]]
    x = rows[[S.CAMPAIGN_ID, S.MEMBER_ID, "sent_at"]].reset_index().merge(t, on=S.MEMBER_ID)
    x = x[(x[S.TS] >= x["sent_at"]) & (x[S.TS] < x["sent_at"] + pd.Timedelta(days=days))]
    if col == "spend":
        per = x.groupby("index")[S.AMOUNT].sum()
    else:
        per = (x.groupby("index").size() > 0).astype(float)
    return per.reindex(rows.index, fill_value=0.0).to_numpy(dtype=float)


def _known_answer(p: Program, days: int, col: str, tau: str) -> tuple[float, float, float]:
    a = p.truth["assignments"]
    y = _outcome_in_window(p, a, days, col)
    tr = a["treated"].to_numpy()
    diff = y[tr].mean() - y[~tr].mean()
    se = np.sqrt(y[tr].var() / tr.sum() + y[~tr].var() / (~tr).sum())
    return diff, float(a.loc[tr, tau].mean()), se


@pytest.mark.parametrize("level", ["realistic", "hard"])
def test_treated_minus_control_matches_the_truth(level: str) -> None:
    p = simulate(10_000, seed=2, config=SimConfig(difficulty=level))
    diff, tau, se = _known_answer(p, 14, "bought", "tau_conversion")
    assert abs(diff - tau) < 4 * se, (diff, tau, se)
    a = p.truth["assignments"]
    a = a[a["treated"]]
    red = p.offer_events[p.offer_events[S.EVENT] == "redeemed"]
    key = pd.MultiIndex.from_frame(a[[S.CAMPAIGN_ID, S.MEMBER_ID]])
    y = key.isin(pd.MultiIndex.from_frame(red[[S.CAMPAIGN_ID, S.MEMBER_ID]]))
    pr = a["affinity"].to_numpy()
    assert abs(y.mean() - pr.mean()) < 4 * np.sqrt((pr * (1 - pr)).sum()) / len(pr)


def test_harm_and_pull_forward_effects_are_what_the_truth_says() -> None:
    """Exaggerated mechanics, so that the known answers are far from zero."""
    d = replace(DIFFICULTIES["realistic"], harm_scale=0.5, effect_scale=0.5, pull_forward=1.0)
    p = simulate(10_000, seed=3, config=SimConfig(difficulty=d))
    diff, tau, se = _known_answer(p, 14, "bought", "tau_conversion")
    assert tau < -3 * se and abs(diff - tau) < 4 * se, (diff, tau, se)  # harm wins
    diff, tau, se = _known_answer(p, 14 + d.pull_forward_days, "spend", "tau_spend")
    assert abs(diff - tau) < 4 * se, (diff, tau, se)
    easy_like = replace(d, pull_forward=0.0)
    q = simulate(10_000, seed=3, config=SimConfig(difficulty=easy_like))
    assert q.truth["assignments"]["tau_spend"].mean() > tau  # pull-forward costs spend


def test_rebuilt_response_reproduces_the_truth_at_every_level(tmp_path: Path) -> None:
    from training.policy.truth import SimulatedTruth

    for level in ("easy", "realistic", "hard"):
        out = tmp_path / level
        simulate(2500, seed=9, config=SimConfig(difficulty=level)).write(out)
        truth = SimulatedTruth.load(out)
        assert truth.difficulty.name == level
        offers = [o.offer_id for o in truth.catalog.offers]
        ids = truth.member_ids[:400]
        p, s = truth.matrix(ids, pd.Timestamp("2026-10-31"))

        def wide(name: str, col: str, ids=ids, out=out, offers=offers) -> np.ndarray:
            df = pd.read_parquet(out / "truth" / f"{name}.parquet")
            df = df.loc[df[S.MEMBER_ID].isin(ids)]
            return df.pivot(index=S.MEMBER_ID, columns=S.OFFER_ID, values=col).loc[ids, offers]

        np.testing.assert_allclose(p, wide("affinity", "affinity"), atol=1e-5)
        np.testing.assert_allclose(s, wide("effects", "tau_spend"), rtol=1e-4, atol=1e-4)
        asg = pd.read_parquet(out / "truth" / "assignments.parquet")
        asg = asg.loc[asg["treated"]]
        pp, ss = truth.pairs(
            truth.rows(asg[S.MEMBER_ID].to_numpy()),
            np.array([offers.index(o) for o in asg[S.OFFER_ID]]),
            asg["sent_at"].to_numpy(),
        )
        np.testing.assert_allclose(pp, asg["affinity"], atol=1e-5)
        np.testing.assert_allclose(ss, asg["tau_spend"], rtol=1e-4, atol=1e-4)
        if level != "easy":
            assert (asg["tau_spend"] < 0).any()  # harm is possible


def test_cli_difficulty_option(tmp_path: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from offers import cmd_simulate

    app = typer.Typer()
    app.callback()(lambda: None)
    cmd_simulate.register(app)
    out = tmp_path / "prog"
    args = ["simulate", "--members", "300", "--seed", "3", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--difficulty", "realistic"])
    assert res.exit_code == 0, res.output
    assert "difficulty realistic" in res.output
    assert json.loads((out / "truth" / "difficulty.json").read_text())["level"] == "realistic"
    bad = CliRunner().invoke(app, [*args, "--difficulty", "medium"])
    assert bad.exit_code == 2
    assert "--difficulty" in bad.output and "'medium' is not one of" in bad.output
