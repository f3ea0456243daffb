"""Campaign files and the score command's input errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from serving.batch import CampaignError, SendPlan, load_campaign, parse_campaign
from serving.batch.output import OutputFormatError, output_format
from serving.batch.synthetic import synthetic_catalog

BASE = {"campaign_id": "nov-1", "channel": "email", "send_date": "2026-11-01"}


def test_defaults_and_dates():
    c = parse_campaign({**BASE, "send_date": "2026-11-01T08:00:00+01:00"})
    assert str(c.send_date) == "2026-11-01 07:00:00"
    assert c.offers_per_member == 1 and c.budgets == {} and c.models is None


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"send_date": "someday"}, "send_date"),
        ({"offers_per_member": 0}, "offers_per_member"),
        ({"budgets": {"o001": -5}}, "budgets"),
        ({"campaign_id": "has space"}, "campaign_id"),
        ({"models": {"ranker": "x"}}, "models"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_errors_name_the_field(over, field):
    with pytest.raises(CampaignError, match=rf"campaign: {field}"):
        parse_campaign({**BASE, **over})


def test_unknown_offers_are_named():
    cat = synthetic_catalog(6, 100)
    with pytest.raises(CampaignError, match=r"budgets: offer\(s\) \['nope'\]"):
        SendPlan.create(parse_campaign({**BASE, "budgets": {"nope": 1}}), cat)
    with pytest.raises(CampaignError, match=r"offers: offer\(s\) \['gone'\]"):
        SendPlan.create(parse_campaign({**BASE, "offers": ["o001", "gone"]}), cat)


def test_offers_allowed_and_budget_overrides():
    cat = synthetic_catalog(6, 100)
    plan = SendPlan.create(
        parse_campaign({**BASE, "offers": ["o000", "o001", "o002"], "budgets": {"o002": 7}}), cat
    )
    assert plan.budget_left[3:].tolist() == [0.0, 0.0, 0.0]
    assert plan.budget_left[2] == 7
    assert plan.budget_left[0] == 2.0  # the catalog's count budget (0.02 x 100)


def test_load_campaign_resolves_catalog_and_reports_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("campaign_id: a\nchannel: email\nsend_date: 2026-11-01\ncatalog: cat.yaml\n")
    assert load_campaign(path).catalog == tmp_path / "cat.yaml"
    path.write_text("campaign_id: a\nchannel: pigeon\nsend_date: 2026-11-01\n")
    with pytest.raises(CampaignError, match=r"c\.yaml: channel: 'pigeon'"):
        load_campaign(path)


def test_output_format_from_suffix(tmp_path):
    assert output_format(tmp_path / "a.parquet") == "parquet"
    assert output_format(tmp_path / "a.CSV") == "csv"
    with pytest.raises(OutputFormatError, match=r"a\.json"):
        output_format(tmp_path / "a.json")


def test_cli_reports_a_bad_campaign(tmp_path):
    import typer

    from offers.cmd_score import register

    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    path = tmp_path / "c.yaml"
    path.write_text("campaign_id: a\nchannel: pigeon\nsend_date: 2026-11-01\n")
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--campaign",
            str(path),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o.parquet"),
            "--no-store",
        ],
    )
    assert res.exit_code == 2
    assert "channel" in res.output and "pigeon" in res.output
