"""The settings tree from the environment: sections, derived defaults, what the root reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import ServingSettings, Settings


def test_defaults_put_sqlite_under_offers_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path))
    monkeypatch.delenv("OFFERS_DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.database_url() == f"sqlite:///{tmp_path.resolve()}/offers.db"
    assert (settings.serving.host, settings.serving.port) == ("127.0.0.1", 8000)


def test_environment_values_land_in_their_sections(monkeypatch):
    monkeypatch.setenv("OFFERS_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/db")
    monkeypatch.setenv("OFFERS_API_KEYS", '{"k": ["admin", "events:write"]}')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("OFFERS_PORT", "9001")
    monkeypatch.setenv("SPARK_MASTER", "local[1]")
    monkeypatch.setenv("OFFERS_ADMIN_KEY", "s3cret")
    monkeypatch.setenv("OFFERS_ENGINE_HOLDOUT__SHARE", "0.2")
    settings = Settings()
    assert settings.database_url().startswith("postgresql+psycopg://")
    assert settings.serving.all_api_keys() == {"k": ["admin", "events:write"]}
    assert settings.tracking_uri() == "http://127.0.0.1:5000"
    assert settings.serving.port == 9001
    assert settings.features.spark_master == "local[1]"
    assert settings.training.admin_key is not None
    assert settings.training.admin_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)  # a secret never shows in logs
    assert settings.engine.holdout.share == pytest.approx(0.2)


def test_a_section_given_as_a_dict_still_reads_the_rest_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFERS_PORT", "9002")
    settings = Settings(data={"home": tmp_path}, serving={"host": "0.0.0.0"})
    assert settings.home == tmp_path
    assert (settings.serving.host, settings.serving.port) == ("0.0.0.0", 9002)


def test_paths_default_under_the_home(monkeypatch, tmp_path):
    for name in ("OFFERS_CATALOG", "OFFERS_MEMBER_FEATURES", "OFFERS_LKG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OFFERS_MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    settings = Settings(data={"home": home})
    assert settings.catalog_path() == home / "data" / "demo" / "catalog.yaml"
    assert settings.features_path() == home / "features" / "member_features.parquet"
    assert settings.lkg_path() == home / "serving" / "models"
    assert settings.tracking_uri() == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert home.is_dir()  # the local MLflow store's directory is created


def test_the_root_reads_no_variable_itself(monkeypatch):
    monkeypatch.setenv("SERVING", '{"port": 1}')
    monkeypatch.setenv("ENGINE", '{"k": 9}')
    settings = Settings()
    assert settings.serving.port != 1 and settings.engine.k != 9


def test_unknown_section_is_refused():
    with pytest.raises(ValidationError, match="api"):
        Settings(api={"port": 1})


def test_unknown_scope_names_the_setting(monkeypatch):
    monkeypatch.setenv("OFFERS_API_KEYS", '{"k": ["everything"]}')
    with pytest.raises(ValidationError, match=r"OFFERS_API_KEYS.*everything"):
        ServingSettings()
