"""The models the service serves, swapped atomically on reload.

A ``ModelSet`` is immutable; ``ModelHolder.current`` is replaced in one assignment, so a
request that already took the old set finishes on it. A failed load leaves the old set serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from serving.store import utcnow

__all__ = ["LoadedModel", "ModelHolder", "ModelLoadError", "ModelSet", "mlflow_loader"]

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded (names the model and the URI)."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    uri: str
    version: str | None
    loaded_at: datetime
    model: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class ModelSet:
    models: Mapping[str, LoadedModel]

    def versions(self) -> dict[str, str]:
        return {name: m.version or "unknown" for name, m in self.models.items()}


Loader = Callable[[str, str], tuple[Any, str | None]]  # (name, uri) -> (model, version)


def mlflow_loader(tracking_uri: str | None) -> Loader:
    """Load ``uri`` as an MLflow pyfunc; the version comes from the registry alias, if any."""

    def load(name: str, uri: str) -> tuple[Any, str | None]:
        import mlflow  # heavy: imported only when models are configured

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(uri)
        version = None
        if uri.startswith("models:/") and "@" in uri:
            registered, alias = uri.removeprefix("models:/").split("@", 1)
            client = mlflow.MlflowClient()
            version = str(client.get_model_version_by_alias(registered, alias).version)
        return model, version

    return load


class ModelHolder:
    """Holds the current ``ModelSet``; ``reload`` builds a new one and swaps it in."""

    def __init__(self, configured: Mapping[str, str], loader: Loader) -> None:
        self.configured = dict(configured)
        self.loader = loader
        self.current: ModelSet | None = ModelSet({}) if not configured else None
        self._reload_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def reload(self) -> ModelSet:
        """Load every configured model; on any failure raise and keep the old set."""
        with self._reload_lock:
            loaded: dict[str, LoadedModel] = {}
            for name, uri in self.configured.items():
                try:
                    model, version = self.loader(name, uri)
                except Exception as exc:
                    raise ModelLoadError(
                        f"model {name!r} from {uri!r} failed to load: {type(exc).__name__}: {exc}"
                    ) from exc
                loaded[name] = LoadedModel(name, uri, version, utcnow(), model)
            new = ModelSet(loaded)
            self.current = new
            log.info("models loaded: %s", new.versions())
            return new
