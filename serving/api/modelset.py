"""The models the service serves, swapped atomically on reload.

A ``ModelSet`` is immutable; ``ModelHolder.current`` is replaced in one assignment, so a
request that already took the old set finishes on it. A failed load leaves the old set serving.
Models come from the one loader, :mod:`serving.loader` (each says its source).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from serving.loader import REGISTRY, ModelCopy
from serving.store import utcnow

__all__ = [
    "AFFINITY",
    "DEFAULT_MODELS",
    "UPLIFT",
    "LoadedModel",
    "Loader",
    "ModelHolder",
    "ModelLoadError",
    "ModelSet",
]

log = logging.getLogger(__name__)

# The two models a decision needs (the bundle is built when both are configured), and the URIs
# the service loads unless ``OFFERS_MODELS`` says otherwise: the registry's champions.
AFFINITY = "affinity"
UPLIFT = "uplift"
DEFAULT_MODELS = {
    AFFINITY: "models:/offers-affinity@champion",
    UPLIFT: "models:/offers-uplift@champion",
}


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded (names the model and the URI)."""


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model: ``source`` is ``registry``, ``local_copy`` (``reason`` says why) or
    ``local_dir`` (:mod:`serving.loader`); a test loader's models say ``loader``."""

    name: str
    uri: str
    version: str | None
    loaded_at: datetime
    model: Any = field(repr=False, compare=False)
    source: str = "loader"
    reason: str | None = None
    copy: ModelCopy | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ModelSet:
    models: Mapping[str, LoadedModel]

    def versions(self) -> dict[str, str]:
        return {name: m.version or "unknown" for name, m in self.models.items()}

    def sources(self) -> dict[str, str]:
        """Model name -> where it came from (``local_copy (<reason>)`` when not the registry)."""
        return {
            name: m.source if m.reason is None else f"{m.source} ({m.reason})"
            for name, m in self.models.items()
        }


# (name, uri) -> a ModelCopy (serving.loader) or a (model, version) pair (tests)
Loader = Callable[[str, str], "ModelCopy | tuple[Any, str | None]"]


class ModelHolder:
    """Holds the current ``ModelSet``.

    ``load()`` builds a new set without serving it; ``accept(set)`` swaps it in and records
    its registry copies as last-known-good (call it once the set passed its checks: the API
    builds the decision bundle first). ``reload()`` does both."""

    def __init__(self, configured: Mapping[str, str], loader: Loader) -> None:
        self.configured = dict(configured)
        self.loader = loader
        self.current: ModelSet | None = ModelSet({}) if not configured else None
        self.error: str | None = None  # why the last load failed (readiness says it)
        self._reload_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def load(self) -> ModelSet:
        """Load every configured model; on any failure raise :class:`ModelLoadError`."""
        with self._reload_lock:
            loaded: dict[str, LoadedModel] = {}
            for name, uri in self.configured.items():
                try:
                    got = self.loader(name, uri)
                except Exception as exc:
                    self.error = f"model {name!r} from {uri!r}: {type(exc).__name__}: {exc}"
                    raise ModelLoadError(
                        f"model {name!r} from {uri!r} failed to load: {type(exc).__name__}: {exc}"
                    ) from exc
                loaded[name] = _loaded(name, uri, got)
            return ModelSet(loaded)

    def load_local(self, models: ModelSet, reason: str) -> ModelSet | None:
        """The last-known-good copies in place of the registry models of ``models`` (their
        ``reason``: ``reason``), or None when the loader keeps none or one is missing."""
        local = getattr(self.loader, "local", None)
        if local is None or not any(m.source == REGISTRY for m in models.models.values()):
            return None
        loaded: dict[str, LoadedModel] = {}
        changed = False
        for name, m in models.models.items():
            if m.source != REGISTRY:
                loaded[name] = m
                continue
            try:
                copy = local(name, m.uri, reason)
            except Exception as exc:
                log.warning("model %s: no local copy to fall back to (%s)", name, exc)
                return None
            changed = changed or m.copy is None or copy.path != m.copy.path
            loaded[name] = _loaded(name, m.uri, copy)
        return ModelSet(loaded) if changed else None  # same copies: nothing else to try

    def accept(self, models: ModelSet) -> None:
        """Serve ``models`` and move each registry copy's last-known-good pointer to it."""
        commit = getattr(self.loader, "commit", None)
        if commit is not None:
            for m in models.models.values():
                if m.copy is not None:
                    commit(m.copy)
        self.current = models
        self.error = None
        log.info("models serving: %s from %s", models.versions(), models.sources())

    def reload(self) -> ModelSet:
        """``load()`` then ``accept()``: on any failure raise and keep the old set."""
        new = self.load()
        self.accept(new)
        return new


def _loaded(name: str, uri: str, got: Any) -> LoadedModel:
    if isinstance(got, ModelCopy):
        return LoadedModel(name, uri, got.version, utcnow(), got.model, got.source, got.reason, got)
    model, version = got
    return LoadedModel(name, uri, version, utcnow(), model)
