"""The settings tree: one root :class:`Settings`, one section per part of the system.

    Settings
      data      DataSettings      OFFERS_HOME, OFFERS_SHARED_DATA           (features/settings.py)
      features  FeaturesSettings  SPARK_MASTER                              (features/settings.py)
      registry  RegistrySettings  MLFLOW_TRACKING_URI, OFFERS_REGISTRY_TIMEOUT, OFFERS_LKG_DIR
      training  TrainingSettings  OFFERS_ADMIN_KEY (``offers retrain`` reloads the service with it)
      serving   ServingSettings   API keys, models, bind address, the bundle's files, HTTP limits,
                                  checkout sessions, member history cache, event time window
      store     StoreSettings     OFFERS_DATABASE_URL, SQLite pragmas, migrations, decision log
      engine    EngineSettings    OFFERS_ENGINE_<FIELD>, OFFERS_ENGINE_<GROUP>__<FIELD>
                                  (serving/engine/settings.py)

Every section is a pydantic-settings class reading its own variables with its own prefix, so the
variable names are flat and stable (``OFFERS_PORT``, not ``OFFERS_SERVING__PORT``); the root
reads no variable itself. ``get_settings()`` is the process's tree (cached; the FastAPI app's
settings dependency); tests build their own, e.g.
``Settings(data={"home": tmp}, serving={"api_keys": keys})`` (a section given as a dict is
built as its class, so its other fields still come from the environment).

Values that default to a place under the data home are resolved by the root
(``database_url()``, ``tracking_uri()``, ``lkg_path()``, ``catalog_path()``, ...), or by the
section given the home (``RegistrySettings().tracking_uri(home)``) where only one section is at
hand. The README's environment table is tested against this tree
(tests/unit/test_settings_env.py); the HTTP limits are described in docs/serving.md ("Limits,
timeouts and metrics").
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from features.settings import DataSettings, FeaturesSettings
from features.sources.io import find_table_file
from serving.engine.settings import EngineSettings

__all__ = [
    "SCOPES",
    "DataSettings",
    "EngineSettings",
    "FeaturesSettings",
    "RegistrySettings",
    "ServingSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "TrainingSettings",
    "get_settings",
]

SCOPES: tuple[str, ...] = ("offers:read", "checkout:write", "events:write", "admin")


class SettingsError(ValueError):
    """A setting is present but unusable (names the setting and the reason)."""


class RegistrySettings(BaseSettings):
    """The MLflow tracking and registry store, and the local copies of the models loaded from it.

    MLFLOW_TRACKING_URI      tracking and registry store (also read by mlflow itself; alias
                             ``OFFERS_MLFLOW_TRACKING_URI``); unset: ``sqlite:///$OFFERS_HOME/mlflow.db``
    OFFERS_REGISTRY_TIMEOUT  seconds to connect to AND read from an http(s) tracking server
                             (default 3); past it the last-known-good copy is served
    OFFERS_LKG_DIR           last-known-good model copies (default ``$OFFERS_HOME/serving/models``)
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "OFFERS_MLFLOW_TRACKING_URI"),
    )
    registry_timeout: float = Field(default=3.0, gt=0, le=600)
    lkg_dir: Path | None = None

    def tracking_uri(self, home: Path) -> str:
        """``MLFLOW_TRACKING_URI``, else the SQLite file ``sqlite:///<home>/mlflow.db`` (the
        home is created): the one store training registers into and serving loads from."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        home = home.resolve()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'mlflow.db'}"

    def lkg_path(self, home: Path) -> Path:
        return self.lkg_dir or home / "serving" / "models"


class TrainingSettings(BaseSettings):
    """The training jobs.

    OFFERS_ADMIN_KEY   an API key with the admin scope: ``offers retrain --serve-url`` reloads
                       the service with it (``--api-key-env`` may name another variable)
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    admin_key: SecretStr | None = None


class StoreSettings(BaseSettings):
    """The serving store (SQLAlchemy) and the decision log written into it.

    OFFERS_DATABASE_URL                SQLAlchemy URL; default ``sqlite:///$OFFERS_HOME/offers.db``;
                                       PostgreSQL as ``postgresql+psycopg://user:pw@host/db``
    OFFERS_SQLITE_SYNCHRONOUS          SQLite ``synchronous`` pragma (``FULL``)
    OFFERS_MIGRATE_ON_START            apply migrations at start-up (true)
    OFFERS_STORE_LOCK_WAIT_SECONDS     SQLite busy timeout of the serving process (0.25)
    OFFERS_DECISION_LOG_FLUSH_SECONDS / OFFERS_DECISION_LOG_MAX_BATCH
                                       decision log flush interval (0.2 s) and batch (500)
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    database_url: str | None = None
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    migrate_on_start: bool = True
    store_lock_wait_seconds: float = Field(default=0.25, gt=0, le=60)
    decision_log_flush_seconds: float = Field(default=0.2, gt=0, le=60)
    decision_log_max_batch: int = Field(default=500, ge=1, le=100_000)

    def url(self, home: Path) -> str:
        """``OFFERS_DATABASE_URL`` or the embedded SQLite file under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(home / 'offers.db').resolve()}"


class ServingSettings(BaseSettings):
    """The API process: who may call it, what it serves, and its HTTP surface.

    OFFERS_API_KEYS        JSON object: key -> list of scopes
    OFFERS_API_KEYS_FILE   JSON file of the same shape; a key may be given as ``sha256:<hex>``
                           so the file never holds the key itself
    OFFERS_MODELS          JSON object: model name -> model URI loaded at startup and on reload
    OFFERS_HOST / OFFERS_PORT
    OFFERS_CATALOG         catalog YAML (default ``$OFFERS_HOME/data/demo/catalog.yaml``)
    OFFERS_MEMBER_FEATURES member feature snapshot, Parquet from ``offers features``
                           (default ``$OFFERS_HOME/features/member_features.parquet``)
    OFFERS_OFFER_EVENTS    canonical ``offer_events`` (Parquet/CSV) the snapshot's members'
                           history comes from (default: the ``offer_events`` table next to the
                           catalog; none there: no history before the service's grants)
    OFFERS_DECISION_TIME   member offers and the batch endpoint decide as of this UTC time
    OFFERS_HISTORY_TTL_SECONDS / OFFERS_HISTORY_MAX_MEMBERS
                           member grant history cache per process (30 s, 100,000 members)
    OFFERS_CHECKOUT_SWEEP_SECONDS   interval of the background checkout sweep (60; 0: off)
    OFFERS_CHECKOUT_OPEN_SECONDS    a session still open (not closed by the till) this long
                                    after checkout is cancelled by the sweep (900)
    OFFERS_CHECKOUT_SWEEP_BATCH     grants or sessions per sweep write transaction (200)
    OFFERS_CHECKOUT_SWEEP_PAUSE_SECONDS   pause between two sweep transactions (0.05)
    OFFERS_CHECKOUT_MAX_QUEUE       checkout sheds (503, nothing reserved) while this many
                                    reservations wait for the grant writer (256)
    OFFERS_CHECKOUT_QUEUE_WAIT_MS   ... or while the oldest reservation not yet committed has
                                    waited longer than this (2,000 ms; serving/api/admission.py)
    OFFERS_MAX_BODY_BYTES                request body limit, any transfer encoding (4,000,000)
    OFFERS_HEADER_READ_TIMEOUT_SECONDS   time to send a request's headers (10)
    OFFERS_BODY_READ_TIMEOUT_SECONDS     time to send a declared body after the headers (10)
    OFFERS_KEEP_ALIVE_TIMEOUT_SECONDS    idle keep-alive connection lifetime (5)
    OFFERS_MAX_CONNECTIONS               concurrent connections per process, then 503 (1,000)
    OFFERS_METRICS_EXPOSURE              ``admin`` (key with the admin scope), ``open``, ``off``
    OFFERS_LEAN_ROUTES                   checkout and member offers by the lean ASGI path (true)
    OFFERS_EVENT_MAX_AGE_DAYS / OFFERS_EVENT_MAX_AHEAD_SECONDS
                                         accepted feedback event times: now - 400 days to
                                         now + 1 day
    """

    model_config = SettingsConfigDict(env_prefix="OFFERS_", extra="ignore")

    api_keys: dict[str, list[str]] = Field(default_factory=dict)
    api_keys_file: Path | None = None
    models: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # The decision bundle's files (serving.api.bundle).
    catalog: Path | None = None
    member_features: Path | None = None
    offer_events: Path | None = None
    # Member offers and the batch endpoint decide as of this UTC time instead of the clock
    # (replays of a past day and cross-path tests); checkout always decides at server time.
    decision_time: datetime | None = None
    # Checkout sessions and member history (docs/serving.md "Checkout sessions").
    history_ttl_seconds: float = Field(default=30.0, ge=0, le=86_400)
    history_max_members: int = Field(default=100_000, ge=1, le=10_000_000)
    checkout_sweep_seconds: float = Field(default=60.0, ge=0, le=86_400)  # 0: no sweeper
    checkout_open_seconds: float = Field(default=900.0, gt=0, le=30 * 86_400)
    checkout_sweep_batch: int = Field(default=200, ge=1, le=1_000)  # sessions.MAX_BATCH
    checkout_sweep_pause_seconds: float = Field(default=0.05, ge=0, le=1)
    # Admission control of checkout (serving/api/admission.py): shed before deciding.
    checkout_max_queue: int = Field(default=256, ge=1, le=100_000)
    checkout_queue_wait_ms: float = Field(default=2000.0, gt=0, le=60_000)
    # HTTP surface: limits, timeouts, metrics exposure, event time window.
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

    def all_api_keys(self) -> dict[str, list[str]]:
        """Keys from ``OFFERS_API_KEYS`` merged with ``OFFERS_API_KEYS_FILE`` (file wins)."""
        keys = dict(self.api_keys)
        if self.api_keys_file is not None:
            keys.update(_read_keys_file(self.api_keys_file))
        return keys

    def catalog_path(self, home: Path) -> Path:
        return self.catalog or home / "data" / "demo" / "catalog.yaml"

    def features_path(self, home: Path) -> Path:
        return self.member_features or home / "features" / "member_features.parquet"

    def offer_events_path(self, home: Path) -> Path | None:
        if self.offer_events is not None:
            return self.offer_events
        return find_table_file(self.catalog_path(home).parent, "offer_events")


class Settings(BaseSettings):
    """The root of the settings tree (see the module docstring). Each section reads its own
    environment variables when it is built; the root reads none itself."""

    model_config = SettingsConfigDict(extra="forbid")

    data: DataSettings = Field(default_factory=DataSettings)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: a variable named DATA or ENGINE must not replace a section.
        return (init_settings,)

    @field_validator("*", mode="before")
    @classmethod
    def _build_section(cls, value: Any, info: ValidationInfo) -> Any:
        """A section given as a dict is built by its class, so that the fields it does not
        name still come from the environment (plain validation would take the defaults)."""
        if isinstance(value, dict) and info.field_name is not None:
            section = cls.model_fields[info.field_name].annotation
            if isinstance(section, type) and issubclass(section, BaseSettings):
                return section(**value)
        return value

    @property
    def home(self) -> Path:
        return self.data.home

    def database_url(self) -> str:
        """The store's URL: ``OFFERS_DATABASE_URL`` or ``sqlite:///$OFFERS_HOME/offers.db``."""
        return self.store.url(self.data.home)

    def tracking_uri(self) -> str:
        """The MLflow store: ``MLFLOW_TRACKING_URI`` or ``sqlite:///$OFFERS_HOME/mlflow.db``."""
        return self.registry.tracking_uri(self.data.home)

    def lkg_path(self) -> Path:
        return self.registry.lkg_path(self.data.home)

    def catalog_path(self) -> Path:
        return self.serving.catalog_path(self.data.home)

    def features_path(self) -> Path:
        return self.serving.features_path(self.data.home)

    def offer_events_path(self) -> Path | None:
        return self.serving.offer_events_path(self.data.home)


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
def get_settings() -> Settings:
    """The process-wide settings tree (cached; tests build their own :class:`Settings`)."""
    return Settings()
