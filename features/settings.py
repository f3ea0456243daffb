"""Settings shared by every command, from the environment (prefix ``OFFERS_``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OffersSettings", "default_tracking_uri", "get_settings"]


class OffersSettings(BaseSettings):
    """``OFFERS_HOME`` is the data home: simulated data, features, local MLflow store, SQLite."""

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    home: Path = Path(".offers")

    @property
    def demo_data_dir(self) -> Path:
        return self.home / "data" / "demo"


@lru_cache(maxsize=1)
def get_settings() -> OffersSettings:
    """The process-wide settings (cached; tests build their own ``OffersSettings``)."""
    return OffersSettings()


def default_tracking_uri(home: Path | None = None) -> str:
    """The MLflow tracking (and registry) store every command uses: ``MLFLOW_TRACKING_URI`` if
    set, else the local SQLite file ``sqlite:///<OFFERS_HOME>/mlflow.db`` (created on demand).

    The one definition for training, serving and batch scoring, so that one ``OFFERS_HOME``
    registers and loads from the same store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = (home or get_settings().home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"
