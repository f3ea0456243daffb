"""Settings of the serving process, from the environment (prefix ``OFFERS_``).

One object for the API, the store and the CLI. ``get_settings()`` is cached and is used as a
FastAPI dependency, so tests either pass their own ``ServingSettings`` to ``create_app`` or
override the dependency.

Environment:
    OFFERS_HOME            data home (default ``./.offers``); the SQLite file lives under it
    OFFERS_DATABASE_URL    SQLAlchemy URL; default ``sqlite:///$OFFERS_HOME/offers.db``;
                           PostgreSQL as ``postgresql+psycopg://user:pw@host/db``
    OFFERS_API_KEYS        JSON object: key -> list of scopes
    OFFERS_API_KEYS_FILE   JSON file of the same shape; a key may be given as ``sha256:<hex>``
                           so the file never holds the key itself
    MLFLOW_TRACKING_URI    MLflow tracking server (also read by mlflow itself)
    OFFERS_MODELS          JSON object: model name -> model URI loaded at startup and on reload
    OFFERS_HOST / OFFERS_PORT
    OFFERS_HISTORY_TTL_SECONDS / OFFERS_HISTORY_MAX_MEMBERS
                           member grant history cache per process (30 s, 100,000 members)
    OFFERS_CHECKOUT_SWEEP_SECONDS   interval of the background checkout sweep (60; 0: off)
    OFFERS_CHECKOUT_OPEN_SECONDS    a session still open (not closed by the till) this long
                                    after checkout is cancelled by the sweep (900)

Limits and timeouts of the HTTP surface (docs/serving.md "Limits, timeouts and metrics"):
    OFFERS_STORE_LOCK_WAIT_SECONDS       SQLite busy timeout of the serving process (0.25)
    OFFERS_MAX_BODY_BYTES                request body limit, any transfer encoding (4,000,000)
    OFFERS_HEADER_READ_TIMEOUT_SECONDS   time to send a request's headers (10)
    OFFERS_BODY_READ_TIMEOUT_SECONDS     time to send a declared body after the headers (10)
    OFFERS_KEEP_ALIVE_TIMEOUT_SECONDS    idle keep-alive connection lifetime (5)
    OFFERS_MAX_CONNECTIONS               concurrent connections per process, then 503 (1,000)
    OFFERS_METRICS_EXPOSURE              ``admin`` (key with the admin scope), ``open``, ``off``
    OFFERS_EVENT_MAX_AGE_DAYS / OFFERS_EVENT_MAX_AHEAD_SECONDS
                                         accepted feedback event times: now - 400 days to
                                         now + 1 day

The decision bundle's files and the engine (``BundleSettings``):
    OFFERS_CATALOG / OFFERS_MEMBER_FEATURES / OFFERS_OFFER_EVENTS / OFFERS_LKG_DIR
    OFFERS_ENGINE_*                      the decision engine (``EngineSettings``)
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from features.settings import OffersSettings
from features.sources.io import find_table_file
from serving.engine.settings import EngineSettings

__all__ = ["SCOPES", "BundleSettings", "ServingSettings", "SettingsError", "get_settings"]

SCOPES: tuple[str, ...] = ("offers:read", "checkout:write", "events:write", "admin")


class SettingsError(ValueError):
    """A setting is present but unusable (names the setting and the reason)."""


class ServingSettings(OffersSettings):
    """Everything the API process needs; ``home`` comes from :class:`OffersSettings`."""

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    database_url: str | None = None
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    migrate_on_start: bool = True
    api_keys: dict[str, list[str]] = Field(default_factory=dict)
    api_keys_file: Path | None = None
    # mlflow_tracking_uri (MLFLOW_TRACKING_URI): from OffersSettings
    models: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    decision_log_flush_seconds: float = Field(default=0.2, gt=0, le=60)
    decision_log_max_batch: int = Field(default=500, ge=1, le=100_000)
    # Member offers and the batch endpoint decide as of this UTC time instead of the clock
    # (replays of a past day and cross-path tests); checkout always decides at server time.
    decision_time: datetime | None = None
    # Checkout sessions and member history (docs/serving.md "Checkout sessions").
    history_ttl_seconds: float = Field(default=30.0, ge=0, le=86_400)
    history_max_members: int = Field(default=100_000, ge=1, le=10_000_000)
    checkout_sweep_seconds: float = Field(default=60.0, ge=0, le=86_400)  # 0: no sweeper
    checkout_open_seconds: float = Field(default=900.0, gt=0, le=30 * 86_400)
    # HTTP surface: limits, timeouts, metrics exposure, event time window.
    store_lock_wait_seconds: float = Field(default=0.25, gt=0, le=60)
    max_body_bytes: int = Field(default=4_000_000, ge=1_000, le=1_000_000_000)
    header_read_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    body_read_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    max_connections: int = Field(default=1_000, ge=1, le=1_000_000)
    metrics_exposure: Literal["admin", "open", "off"] = "admin"
    lean_routes: bool = True  # checkout and member offers without FastAPI's machinery (lean.py)
    event_max_age_days: float = Field(default=400.0, gt=0, le=36_500)
    event_max_ahead_seconds: float = Field(default=86_400.0, ge=0, le=31_536_000)

    @field_validator("api_keys")
    @classmethod
    def _known_scopes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for scopes in value.values():
            _check_scopes(scopes, "OFFERS_API_KEYS")
        return value

    @property
    def sqlite_path(self) -> Path:
        return self.home / "offers.db"

    def resolved_database_url(self) -> str:
        """``OFFERS_DATABASE_URL`` or the embedded SQLite file under ``OFFERS_HOME``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.sqlite_path.resolve()}"

    def all_api_keys(self) -> dict[str, list[str]]:
        """Keys from ``OFFERS_API_KEYS`` merged with ``OFFERS_API_KEYS_FILE`` (file wins)."""
        keys = dict(self.api_keys)
        if self.api_keys_file is not None:
            keys.update(_read_keys_file(self.api_keys_file))
        return keys


class BundleSettings(OffersSettings):
    """Where the decision bundle's files are (environment prefix ``OFFERS_``), and the engine.

    OFFERS_CATALOG           catalog YAML (default ``$OFFERS_HOME/data/demo/catalog.yaml``)
    OFFERS_MEMBER_FEATURES   member feature snapshot, Parquet from ``offers features``
                             (default ``$OFFERS_HOME/features/member_features.parquet``)
    OFFERS_LKG_DIR           last-known-good model copies (default ``$OFFERS_HOME/serving/models``)
    OFFERS_OFFER_EVENTS      canonical ``offer_events`` (Parquet/CSV) the snapshot's members'
                             history comes from (default: the ``offer_events`` table next to
                             the catalog; none there: no history before the service's grants)
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    catalog: Path | None = None
    member_features: Path | None = None
    lkg_dir: Path | None = None
    offer_events: Path | None = None
    engine: EngineSettings = Field(default_factory=EngineSettings)

    def catalog_path(self) -> Path:
        return self.catalog or self.home / "data" / "demo" / "catalog.yaml"

    def features_path(self) -> Path:
        return self.member_features or self.home / "features" / "member_features.parquet"

    def lkg_path(self) -> Path:
        return self.lkg_dir or self.home / "serving" / "models"

    def offer_events_path(self) -> Path | None:
        if self.offer_events is not None:
            return self.offer_events
        return find_table_file(self.catalog_path().parent, "offer_events")


def _check_scopes(scopes: list[str], where: str) -> None:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise SettingsError(f"{where}: unknown scope(s) {unknown}; allowed: {list(SCOPES)}")


def _read_keys_file(path: Path) -> dict[str, list[str]]:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"OFFERS_API_KEYS_FILE: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"OFFERS_API_KEYS_FILE: {path} is not JSON ({exc.msg})") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in raw.values()
    ):
        raise SettingsError(
            f"OFFERS_API_KEYS_FILE: {path} must hold a JSON object key -> list of scopes"
        )
    for scopes in raw.values():
        _check_scopes(scopes, f"OFFERS_API_KEYS_FILE {path}")
    return {str(k): list(v) for k, v in raw.items()}


@lru_cache(maxsize=1)
def get_settings() -> ServingSettings:
    """The process-wide serving settings (cached; tests build their own)."""
    return ServingSettings()
