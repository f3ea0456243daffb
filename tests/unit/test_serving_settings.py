"""Serving settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import ServingSettings


def test_defaults_put_sqlite_under_offers_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path))
    monkeypatch.delenv("OFFERS_DATABASE_URL", raising=False)
    settings = ServingSettings()
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path.resolve()}/offers.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_environment_values(monkeypatch):
    monkeypatch.setenv("OFFERS_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/db")
    monkeypatch.setenv("OFFERS_API_KEYS", '{"k": ["admin", "events:write"]}')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("OFFERS_PORT", "9001")
    settings = ServingSettings()
    assert settings.resolved_database_url().startswith("postgresql+psycopg://")
    assert settings.all_api_keys() == {"k": ["admin", "events:write"]}
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert settings.port == 9001


def test_unknown_scope_names_the_setting(monkeypatch):
    monkeypatch.setenv("OFFERS_API_KEYS", '{"k": ["everything"]}')
    with pytest.raises(ValidationError, match=r"OFFERS_API_KEYS.*everything"):
        ServingSettings()
