"""The uplift level measured campaign by campaign (training.uplift.calibration.campaign_att)."""

from __future__ import annotations

import numpy as np
import pytest

from training.uplift.calibration import campaign_att, level_fit


def test_known_answer_on_two_campaigns() -> None:
    # campaign c1: control residuals 0, 2 (mean 1); treated a: 3, 5 (mean 4) -> d = 3
    # campaign c2: control 10, 10, 10, 14 (mean 11); treated a: 13, 13 (mean 13) -> d = 2
    r = np.array([0, 2, 3, 5, 10, 10, 10, 14, 13, 13], dtype=float)
    lab = np.array(["c", "c", "a", "a", "c", "c", "c", "c", "a", "a"], dtype=object)
    strata = ["c1"] * 4 + ["c2"] * 6
    att, se, mean_eff, info = campaign_att(r, np.ones(10), lab, ["a"], "c", strata)
    # variances of the means (residual variance / n): c1: 1/2 + 1/2 = 1; c2: 3/4 + 0/2
    v = np.array([1.0, 0.75])
    d = np.array([3.0, 2.0])
    # Q = sum (d - fe)^2 / v with fe the inverse-variance mean; one treatment, df = 1
    fe = np.sum(d / v) / np.sum(1 / v)
    q = float(np.sum((d - fe) ** 2 / v))
    s1, s2 = np.sum(1 / v), np.sum(1 / v**2)
    tau2 = max(0.0, (q - 1) / (s1 - s2 / s1))
    w = 1 / (v + tau2)
    assert info["q_campaign"] == pytest.approx(q)
    assert info["tau2_campaign"] == pytest.approx(tau2)
    assert att[0] == pytest.approx(np.sum(w * d) / np.sum(w))
    assert se[0] == pytest.approx(np.sqrt(1 / np.sum(w)))
    assert mean_eff[0] == pytest.approx(0.0)
    assert info["cells_campaign"] == 2


def test_a_campaign_that_spent_more_is_not_an_effect() -> None:
    # every member of campaign 2 spent 5 more than the baseline predicts (a season); offer a
    # ran only in campaign 2, with no effect at all
    rng = np.random.default_rng(0)
    n = 4000
    camp = np.where(np.arange(n) < n // 2, "c1", "c2").astype(object)
    lab = np.where(rng.random(n) < 0.5, "control", "b").astype(object)
    in_c2 = camp == "c2"
    lab[in_c2 & (rng.random(n) < 0.5)] = "a"
    lab[in_c2 & (lab == "b")] = "control"
    r = rng.normal(0, 1, n) + np.where(in_c2, 5.0, 0.0)
    r -= r[lab == "control"].mean()  # the baseline's in-sample residuals average 0
    att, se, _, _ = campaign_att(r, np.ones(n), lab, ["a", "b"], "control", camp)
    assert abs(att[0]) < 3 * se[0] < 0.5
    assert abs(att[1]) < 3 * se[1] < 0.5
    # against the pooled control alone, offer a reads as an effect of about +2.5
    assert r[lab == "a"].mean() > 2.0


def test_the_standard_error_covers_a_campaign_to_campaign_effect() -> None:
    # 30 offers, each sent in 1-3 of 7 campaigns; an offer's effect in a campaign is its mean
    # effect plus a campaign deviation (sd 1): the standard errors must cover the mean effect
    rng = np.random.default_rng(3)
    z = []
    for _rep in range(4):
        r_parts, lab_parts, camp_parts = [], [], []
        truth = rng.normal(0, 1, 30)
        for c in range(7):
            n_c = 400
            r_parts.append(rng.normal(0, 3, n_c))
            lab_parts.append(np.full(n_c, "control", dtype=object))
            camp_parts.append(np.full(n_c, f"c{c}", dtype=object))
        for j in range(30):
            for c in rng.choice(7, size=rng.integers(1, 4), replace=False):
                n_t = 300
                r_parts.append(truth[j] + rng.normal(0, 1.0) + rng.normal(0, 3, n_t))
                lab_parts.append(np.full(n_t, f"o{j}", dtype=object))
                camp_parts.append(np.full(n_t, f"c{c}", dtype=object))
        r, lab, camp = (
            np.concatenate(r_parts),
            np.concatenate(lab_parts),
            np.concatenate(camp_parts),
        )
        att, se, _, info = campaign_att(
            r, np.ones(len(r)), lab, [f"o{j}" for j in range(30)], "control", camp
        )
        assert 0.4 < info["tau2_campaign"] < 2.0  # the campaign variance (1) is found
        z.append((att - truth) / se)
        # the treated rows' noise alone claims far more precision than there is
        naive = np.array([3 / np.sqrt((lab == f"o{j}").sum()) for j in range(30)])
        assert np.median(se / naive) > 3
    rms = float(np.sqrt(np.mean(np.concatenate(z) ** 2)))
    assert 0.7 < rms < 1.35


def test_campaigns_without_their_own_control_use_every_control_row() -> None:
    r = np.array([1.0, 3.0, 6.0, 8.0, 5.0, 7.0])
    lab = np.array(["c", "c", "a", "a", "a", "a"], dtype=object)
    strata = np.array(["c1", "c1", "c1", "c1", None, np.nan], dtype=object)
    att, _se, _, info = campaign_att(r, np.ones(6), lab, ["a"], "c", strata)
    # cell c1: 7 - 2 = 5; cell "" (no campaign): 6 - 2 = 4, against all control rows
    assert info["cells_campaign"] == 2
    assert 4.0 <= att[0] <= 5.0


@pytest.mark.parametrize(
    ("labels", "strata", "message"),
    [
        (["c", "c", "a"], ["x", "x"], "one length"),
        (["c", "a", "a"], ["x", "x", "x"], "fewer than 2 rows of the control 'c'"),
        (["c", "c", "c"], ["x", "x", "x"], "no rows of treatment 'a'"),
    ],
)
def test_bad_input_is_named(labels: list[str], strata: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        campaign_att(np.zeros(3), np.ones(3), np.array(labels, dtype=object), ["a"], "c", strata)


def test_level_fit_with_campaigns_sets_the_learners_mean_effect_to_the_level() -> None:
    from models.uplift import SLearner

    rng = np.random.default_rng(7)
    n = 6000
    X = rng.normal(size=(n, 3))
    camp = rng.choice(["c1", "c2", "c3"], size=n).astype(object)
    arm = np.where(rng.random(n) < 0.5, "a", "control").astype(object)
    season = np.select([camp == "c2", camp == "c3"], [2.0, -1.0], 0.0)
    y = X[:, 1] + season + np.where(arm == "a", 0.7, 0.0) + rng.normal(0, 1.0, n)
    params = {"n_estimators": 40, "learning_rate": 0.1, "min_child_samples": 30}
    model = SLearner(base_params=params, control="control", outcome="continuous")
    model.fit(X, y, arm)
    fit = level_fit(model, X, y, arm, strata=camp)
    assert fit.att[0] == pytest.approx(0.7, abs=3 * fit.se[0] + 0.02)
    assert "tau2_campaign" in fit.info
    # the shift moves the learner's mean effect to the level: the mean over the campaigns,
    # weighted as the level weights them (here within 0.01 of the plain mean over the rows)
    from training.uplift.calibration import apply_shifts

    apply_shifts(model, fit.shifts)
    treated = arm == "a"
    assert model.predict(X[treated])[:, 0].mean() == pytest.approx(fit.shrunk[0], abs=0.01)
    with pytest.raises(ValueError, match="strata has 3 entries for 6000 rows"):
        level_fit(model, X, y, arm, strata=camp[:3])
