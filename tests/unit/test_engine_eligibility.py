"""Eligibility rules, caps and the lifecycle policy: known answers on a tiny catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.sources.schema import CHANNELS
from serving.engine.context import DecisionContext
from serving.engine.eligibility import RULES, eligibility
from serving.engine.errors import EngineInputError, MissingColumnError
from serving.engine.members import MemberTable
from serving.engine.moments import detect_moments
from serving.engine.offers import OfferTable
from serving.engine.scoring import lifecycle_boosts
from serving.engine.settings import CapSettings, EngineSettings, LifecyclePolicy
from serving.engine.state import MemberOfferState
from tests.support.engine import AS_OF, catalog, col, member, members

OFFERS = OfferTable.from_catalog(catalog())


def run(frame, channel="email", as_of=AS_OF, state=None, budget=None, settings=None, k=None):
    st = settings or EngineSettings()
    mt = MemberTable.from_frame(frame, ["coffee", "bakery"])
    ctx = DecisionContext(channel, as_of, "req", k=k)
    state = state or MemberOfferState.empty(mt.n, OFFERS.n)
    left = OFFERS.budget.copy() if budget is None else budget
    moments = detect_moments(mt, st.moments)
    return eligibility(mt, OFFERS, state, ctx, moments, left, st, keep_rules=True)


def rule(result, name, offer):
    return result.rules[name][:, col(offer)].tolist()


def test_every_rule_is_reported():
    res = run(members(member()))
    assert set(res.rules) == set(RULES)
    assert res.mask.tolist() == np.logical_and.reduce(list(res.rules.values())).tolist()


def test_tier_rule():
    res = run(members(member(tier="silver"), member(tier="gold"), member(tier=None)))
    assert rule(res, "tier", "disc") == [False, True, False]
    assert rule(res, "tier", "pts") == [True, True, True]  # unrestricted: unknown tier is fine


def test_lifecycle_rule():
    res = run(
        members(
            member(lifecycle_stage="onboarding"),
            member(lifecycle_stage="active"),
            member(lifecycle_stage="lapsed"),
        )
    )
    assert rule(res, "lifecycle_stage", "welcome") == [True, False, False]
    assert rule(res, "lifecycle_stage", "winback") == [False, False, True]


def test_segment_and_min_points_rules():
    res = run(
        members(
            member(segment="commuter", points_balance=100.0),
            member(segment="commuter", points_balance=99.0),
            member(segment="family", points_balance=500.0),
            member(segment=None, points_balance=None),
        )
    )
    assert rule(res, "segment", "seg") == [True, True, False, False]
    assert rule(res, "min_points", "seg") == [True, False, True, False]
    assert res.mask[:, col("seg")].tolist() == [True, False, False, False]


def test_channel_rule():
    frame = members(member())
    assert rule(run(frame, "email"), "channel", "till") == [False]
    assert rule(run(frame, "checkout"), "channel", "till") == [True]
    assert rule(run(frame, "checkout"), "channel", "disc") == [False]
    assert rule(run(frame, "web"), "channel", "pts") == [False]
    assert rule(run(frame, "web"), "channel", "summer") == [True]  # no list: every channel


@pytest.mark.parametrize(
    ("day", "ok"),
    [
        ("2026-05-31", False),
        ("2026-06-01", True),
        ("2026-08-31 23:00", True),
        ("2026-09-01", False),
    ],
)
def test_validity_window_is_inclusive(day, ok):
    assert rule(run(members(member()), as_of=pd.Timestamp(day)), "validity", "summer") == [ok]


def test_min_spend_against_the_basket_at_checkout_only():
    frame = members(member(basket_total=29.99), member(basket_total=30.0), member())
    assert rule(run(frame, "checkout"), "min_spend", "till") == [False, True, False]
    assert rule(run(frame, "checkout"), "min_spend", "pts") == [True, True, False]
    assert rule(run(frame, "email"), "min_spend", "pts") == [True, True, True]


def test_per_member_cap_and_active_offers():
    st = MemberOfferState.empty(2, OFFERS.n)
    st.received[0, col("welcome")] = 1
    st.active[1, col("pts")] = True
    res = run(members(member(lifecycle_stage="onboarding"), member()), state=st)
    assert rule(res, "per_member_cap", "welcome") == [False, True]
    assert rule(res, "per_member_cap", "pts") == [True, True]  # no cap
    assert rule(res, "active", "pts") == [True, False]


def test_remaining_budget():
    left = OFFERS.budget.copy()
    left[col("welcome")] = 0.0
    res = run(members(member()), budget=left)
    assert rule(res, "budget", "welcome") == [False]
    assert rule(res, "budget", "winback") == [True]
    assert rule(res, "budget", "pts") == [True]  # no budget at all


def test_channel_frequency_cap_limits_slots():
    st = MemberOfferState.empty(3, OFFERS.n)
    email = CHANNELS.index("email")
    st.channel_recent[:, email] = [0, 3, 4]
    settings = EngineSettings(k=3, caps=CapSettings(per_channel={"email": 4}))
    assert run(
        members(member(), member(), member()), state=st, settings=settings
    ).slots.tolist() == [
        3,
        1,
        0,
    ]
    assert run(members(member()), "app", settings=settings, k=2).slots.tolist() == [2]  # no cap


def test_surprise_needs_its_moment():
    res = run(
        members(member(days_to_birthday=3), member(days_to_anniversary=2), member()),
    )
    assert rule(res, "moment", "bday") == [True, False, False]
    assert rule(res, "moment", "anniv") == [False, True, False]
    assert rule(res, "moment", "any-surprise") == [True, True, False]
    assert rule(res, "moment", "pts") == [True, True, True]  # regular offers: no moment needed


def test_surprise_yearly_cap_and_no_repeat():
    st = MemberOfferState.empty(3, OFFERS.n)
    st.surprises_year[:] = [3, 2, 0]
    st.last_surprise[:] = [-1, col("bday"), col("anniv")]
    res = run(members(*[member(days_to_birthday=1)] * 3), state=st)
    assert rule(res, "surprise_cap", "bday") == [False, True, True]
    assert rule(res, "no_repeat", "bday") == [True, False, True]
    assert rule(res, "no_repeat", "anniv") == [True, True, False]
    assert res.mask[:, col("bday")].tolist() == [False, False, True]


def test_failed_names_the_rules():
    res = run(members(member(tier="bronze", lifecycle_stage="active")))
    assert res.failed(0, col("welcome")) == ["lifecycle_stage"]
    assert set(res.failed(0, col("disc"))) == {"tier"}


def test_lifecycle_boosts_by_tag():
    policy = LifecyclePolicy(
        boosts={"onboarding": {"onboarding": 2.0, "credit": 1.5}, "lapsed": {"win_back": 3.0}}
    )
    table = lifecycle_boosts(OFFERS, policy)  # stages: onboarding, active, lapsing, lapsed
    assert table[0, col("welcome")] == pytest.approx(3.0)  # onboarding x credit
    assert table[0, col("winback")] == pytest.approx(1.5)  # credit only
    assert table[3, col("winback")] == pytest.approx(3.0)
    assert table[1].tolist() == [1.0] * OFFERS.n
    assert "member_only" in OFFERS.tags[col("disc")] and "member_only" in OFFERS.tags[col("seg")]


def test_bad_inputs_name_the_field():
    with pytest.raises(MissingColumnError, match="lifecycle_stage"):
        MemberTable.from_frame(pd.DataFrame({"member_id": ["a"]}))
    with pytest.raises(EngineInputError, match="'dormant'"):
        MemberTable.from_frame(pd.DataFrame({"member_id": ["a"], "lifecycle_stage": ["dormant"]}))
    with pytest.raises(EngineInputError, match="repeated"):
        MemberTable.from_frame(members(member(member_id="a"), member(member_id="a")))
    with pytest.raises(EngineInputError, match="channel"):
        DecisionContext("fax", AS_OF, "r")
    with pytest.raises(ValueError, match="boosts"):
        LifecyclePolicy(boosts={"active": {"experience": 0.0}})


def test_consent_rule_per_channel():
    frame = members(
        member(email_opt_in=True, app_opt_in=False),
        member(email_opt_in=False, app_opt_in=True),
        member(email_opt_in=None, app_opt_in=None),
        member(),  # no consent columns at all for this row: unknown
    )
    email = run(frame, "email")
    assert rule(email, "consent", "pts") == [True, False, True, True]
    assert not email.mask[1].any()  # an e-mail opt-out gets no e-mail offer at all
    app = run(frame, "app")
    assert rule(app, "consent", "pts") == [False, True, True, True]
    checkout = run(frame, "checkout")  # the member is at the till: no opt-in needed
    assert rule(checkout, "consent", "pts") == [True, True, True, True]
    deny = EngineSettings.model_validate({"consent": {"unknown": "deny"}})
    strict = run(frame, "email", settings=deny)
    assert rule(strict, "consent", "pts") == [True, False, False, False]
