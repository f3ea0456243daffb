"""Settings shared by every command, from the environment (prefix ``OFFERS_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OffersSettings", "get_settings"]


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
