"""Settings shared by every command, from the environment (prefix ``OFFERS_``).

Every environment variable the code reads goes through a settings class; the two named by
their tools' convention (``MLFLOW_TRACKING_URI``, ``SPARK_MASTER``) are fields here too. The
README's environment table is tested against these classes (tests/unit/test_settings_env.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OffersSettings", "default_tracking_uri", "offers_settings"]

_REPO = Path(__file__).resolve().parents[1]


class OffersSettings(BaseSettings):
    """``OFFERS_HOME`` is the data home: simulated data, features, local MLflow store, SQLite."""

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    home: Path = Path(".offers")
    # the real data sets (read in place): ``../shared/data`` beside the repository
    shared_data: Path = _REPO.parent / "shared" / "data"
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "OFFERS_MLFLOW_TRACKING_URI"),
    )
    spark_master: str = Field(
        default="local[*]", validation_alias=AliasChoices("SPARK_MASTER", "OFFERS_SPARK_MASTER")
    )

    @property
    def demo_data_dir(self) -> Path:
        return self.home / "data" / "demo"


@lru_cache(maxsize=1)
def offers_settings() -> OffersSettings:
    """The process-wide settings (cached; tests build their own ``OffersSettings``)."""
    return OffersSettings()


def default_tracking_uri(home: Path | None = None) -> str:
    """The MLflow tracking (and registry) store every command uses: ``MLFLOW_TRACKING_URI`` if
    set, else the local SQLite file ``sqlite:///<OFFERS_HOME>/mlflow.db`` (created on demand).

    The one definition for training, serving and batch scoring, so that one ``OFFERS_HOME``
    registers and loads from the same store."""
    settings = OffersSettings()  # read now: the environment may change between calls (tests)
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    home = (home or settings.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"
