"""The two sections of the settings tree the features layer reads: ``data`` and ``features``.

The root :class:`serving.settings.Settings` holds every section (data, features, registry,
training, serving, store, engine); it lives in ``serving`` because the engine's section does, and
``features`` may not import ``serving``. Code in ``features`` and ``models`` therefore builds
the section it needs (``DataSettings()``, ``FeaturesSettings()``), which reads the same
environment variables the tree does. The README's environment table is tested against the tree
(tests/unit/test_settings_env.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DataSettings", "FeaturesSettings"]

_REPO = Path(__file__).resolve().parents[1]


class DataSettings(BaseSettings):
    """Where data lives (prefix ``OFFERS_``).

    OFFERS_HOME          the data home: simulated data, features, the local MLflow store, the
                         SQLite store, last-known-good model copies (default ``.offers``)
    OFFERS_SHARED_DATA   the real data sets, read in place (default ``../shared/data`` beside
                         the repository)
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    home: Path = Path(".offers")
    shared_data: Path = _REPO.parent / "shared" / "data"

    @property
    def demo_data_dir(self) -> Path:
        return self.home / "data" / "demo"


class FeaturesSettings(BaseSettings):
    """The feature pipeline's engines. ``SPARK_MASTER`` is Spark's own name for it (read with
    ``OFFERS_SPARK_MASTER`` as an alias)."""

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    spark_master: str = Field(
        default="local[*]", validation_alias=AliasChoices("SPARK_MASTER", "OFFERS_SPARK_MASTER")
    )
