"""The offer catalog: the shipped example, every class of error, and the offers table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.catalog.model import (
    CatalogError,
    default_catalog_path,
    dump_catalog,
    load_catalog,
    parse_catalog,
)
from features.sources import schema as S


def _offer(**kw: object) -> dict:
    base = {"offer_id": "o1", "name": "Offer one", "kind": "credit", "reward_value": 5, "cost": 5}
    base.update(kw)
    return base


def _errors(raw: object) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(raw, "catalog.yaml")
    return info.value.errors


def test_example_catalog_spans_every_kind_with_about_30_offers() -> None:
    cat = load_catalog(default_catalog_path())
    kinds = {o.kind for o in cat.offers}
    assert kinds == set(S.OFFER_KINDS)
    assert 25 <= len(cat.offers) <= 40
    assert sum(o.surprise for o in cat.offers) >= 4
    moments = {o.moment for o in cat.offers if o.surprise}
    assert {"birthday", "anniversary", "tier_nudge", "win_back"} <= moments
    onboarding = [
        o for o in cat.offers if o.eligibility and o.eligibility.lifecycle_stages == ["onboarding"]
    ]
    assert len(onboarding) >= 2
    for o in cat.offers:
        if o.kind in ("experience", "early_access"):
            assert o.eligibility is not None and o.eligibility.tiers is not None
            assert "bronze" not in o.eligibility.tiers, o.offer_id


def test_unknown_kind_names_offer_field_and_allowed_values() -> None:
    offers = [_offer(offer_id=f"o{i}") for i in range(3)] + [
        _offer(offer_id="bday-coffee", kind="discount")
    ]
    (msg,) = _errors({"offers": offers})
    assert msg.startswith("catalog.yaml: offer 'bday-coffee' (offers[3]) field 'kind': ")
    assert "'discount' is not one of discount_pct, credit" in msg


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"channels": ["email", "fax"]}, "channels", "'fax' is not one of"),
        ({"reward_value": -1}, "reward_value", "greater than or equal to 0"),
        ({"eligibility": {"tiers": ["diamond"]}}, "eligibility.tiers", "'diamond' is not one of"),
        ({"eligibility": {"stage": ["x"]}}, "eligibility.stage", "unknown field"),
        ({"budget": {"count": 5, "money": 3}}, "budget", "exactly one of 'count' or 'money'"),
        ({"budget": {}}, "budget", "exactly one of 'count' or 'money'"),
        ({"valid_from": "2026-05-01", "valid_to": "2026-04-01"}, "valid_to", "before valid_from"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"per_member_cap": 0}, "per_member_cap", "greater than or equal to 1"),
        ({"surprise": "sometimes"}, "surprise", "'sometimes'"),
    ],
)
def test_each_error_names_offer_and_field(change: dict, field: str, words: str) -> None:
    msgs = _errors({"offers": [_offer(offer_id="ok"), _offer(offer_id="bad", **change)]})
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"catalog.yaml: offer 'bad' (offers[1]) field '{field}': "), msgs
    assert words in msgs[0]


def test_missing_required_field_and_all_errors_reported_together() -> None:
    bad = _offer(offer_id="x", kind="nope")
    del bad["cost"]
    msgs = _errors({"offers": [bad]})
    assert "catalog.yaml: offer 'x' (offers[0]) field 'cost': is required" in msgs
    assert any("field 'kind'" in m for m in msgs)


def test_duplicate_offer_id() -> None:
    (msg,) = _errors({"offers": [_offer(offer_id="a"), _offer(offer_id="b"), _offer(offer_id="a")]})
    assert msg == "catalog.yaml: offer 'a' (offers[2]) field 'offer_id': duplicate of offers[0]"


def test_bad_top_level_and_yaml_syntax(tmp_path: Path) -> None:
    assert _errors({"offers": [_offer()], "progam": "x"}) == [
        "catalog.yaml: field 'progam': unknown field (check the spelling; see "
        "features/catalog/model.py for the format)"
    ]
    assert "expected a mapping" in _errors(["a"])[0]
    f = tmp_path / "broken.yaml"
    f.write_text("offers:\n  - offer_id: a\n    name: [unclosed\n")
    with pytest.raises(CatalogError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_catalog(f)


def test_offers_frame_is_canonical_and_round_trips(tmp_path: Path) -> None:
    cat = load_catalog(default_catalog_path())
    frame = cat.to_offers_frame()
    assert list(frame.columns) == S.OFFERS.column_names
    assert frame[S.OFFER_ID].tolist() == cat.offer_ids
    row = frame.set_index(S.OFFER_ID).loc["early-access-tech"]
    assert row[S.CHANNELS_COL] == "email|app"
    assert json.loads(row[S.ELIGIBILITY]) == {"min_points": 1500.0, "tiers": ["platinum"]}
    assert row[S.ELIGIBILITY].index("min_points") < row[S.ELIGIBILITY].index("tiers")
    money = frame.set_index(S.OFFER_ID).loc["grocery-15pct"]
    assert (money[S.BUDGET], money[S.BUDGET_UNIT]) == (250000.0, "money")
    sports = frame.set_index(S.OFFER_ID).loc["sports-15pct"]
    assert sports[S.VALID_FROM] == pd.Timestamp("2026-03-01")
    assert pd.isna(frame.set_index(S.OFFER_ID).loc["coffee-20pct", S.ELIGIBILITY])
    assert str(frame[S.VALID_TO].dtype) == "datetime64[us]"

    again = load_catalog(dump_catalog(cat, tmp_path / "c.yaml"))
    assert again == cat
    pd.testing.assert_frame_equal(again.to_offers_frame(), frame)


def test_numeric_offer_id_becomes_a_string() -> None:
    raw = yaml.safe_load(
        "offers:\n  - {offer_id: 17, name: n, kind: bogo, reward_value: 1, cost: 1}"
    )
    assert parse_catalog(raw).offers[0].offer_id == "17"


def test_cli_catalog_check(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from offers import cmd_catalog

    app = typer.Typer()
    cmd_catalog.register(app)
    ok = CliRunner().invoke(app, ["catalog", "check", str(default_catalog_path())])
    assert ok.exit_code == 0, ok.output
    assert "experience" in ok.output and "coffee-tasting-event" in ok.output
    bad = tmp_path / "bad.yaml"
    text = default_catalog_path().read_text().replace("kind: bogo", "kind: bogus", 1)
    bad.write_text(text)
    res = CliRunner().invoke(app, ["catalog", "check", str(bad)])
    assert res.exit_code == 1
    flat = " ".join(res.output.split())
    assert "offer 'bogo-bakery' (offers[14]) field 'kind': 'bogus' is not one of" in flat
