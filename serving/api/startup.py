"""Loading what the service serves, at start-up and at reload, and saying clearly what is wrong.

``load_serving(state)`` is the one sequence both use:

1. load the configured models (:mod:`serving.loader`: registry, else the last-known-good copy);
2. build the decision bundle from them, the catalog and the member snapshot (its checks);
3. make the store's budget counters follow the catalog (:mod:`serving.api.budgets`);
4. only then serve them: swap the bundle and the models in, and move each model's
   last-known-good pointer (``current.json``) to the copy just checked.

A failure at any step raises :class:`ServingLoadError` with ``check`` (``catalog``,
``member_features``, ``models``, ``budgets``, ``bundle``) and a message naming the file, the
field and the value; nothing is swapped and no pointer moves. The lifespan records it for
``/readyz``; the reload route answers 409 with it.

``open_store_clearly`` opens the store with an error naming the URL (password hidden).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from serving.api.budgets import BudgetSyncError, sync_budgets
from serving.api.bundle import build_bundle
from serving.api.modelset import ModelLoadError, ModelSet
from serving.settings import Settings

__all__ = [
    "RELOAD_CHECKS",
    "ServingLoadError",
    "StoreOpenError",
    "explain_catalog",
    "explain_features",
    "load_serving",
    "open_store_clearly",
]

log = logging.getLogger(__name__)


RELOAD_CHECKS = ("catalog", "member_features", "models", "budgets", "bundle")


class ServingLoadError(RuntimeError):
    """What is served could not be (re)loaded; ``check`` names the failing input."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class StoreOpenError(RuntimeError):
    """The store cannot be opened (names the database URL, password hidden)."""


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say it as given, minus any credentials
        return url.split("@", 1)[-1]


def open_store_clearly(url: str, **kwargs: Any) -> Any:
    """``serving.store.open_store(url, ...)``; any failure as :class:`StoreOpenError` naming
    ``OFFERS_DATABASE_URL`` and the URL (e.g. a SQLite path that cannot be opened)."""
    from serving.store import open_store

    try:
        return open_store(url, **kwargs)
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        raise StoreOpenError(
            f"OFFERS_DATABASE_URL: cannot open the store {_safe_url(url)}: "
            f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}"
        ) from None


def explain_catalog(path: Path) -> str | None:
    """Why the catalog at ``path`` cannot be used (file, field and value), or None."""
    from features.catalog.model import CatalogError, load_catalog

    where = f"OFFERS_CATALOG: catalog {path}"
    if not path.is_file():
        return f"{where} does not exist"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return f"{where} cannot be read ({exc.strerror or exc})"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return (
            f"{where} invalid: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
            f"offset {exc.start})"
        )
    try:
        load_catalog(path)
    except CatalogError as exc:
        return f"{where} invalid: {exc}"
    except Exception as exc:  # anything else the parser raises: still name the file
        return f"{where} invalid: {type(exc).__name__}: {exc}"
    return None


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    """Columns the engine reads as numbers (its float columns and ``share_*``)."""
    from serving.engine import members

    floats = set(getattr(members, "_FLOAT_COLUMNS", ()))
    return [c for c in frame.columns if c in floats or str(c).startswith("share_")]


def explain_features(path: Path) -> str | None:
    """Why the member feature snapshot at ``path`` cannot be used (file, column, value), or
    None: not a Parquet file, no ``member_id``, or a numeric column holding a non-number."""
    where = f"OFFERS_MEMBER_FEATURES: member features {path}"
    if not path.is_file():
        return f"{where} does not exist"
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        return f"{where} is not a readable Parquet file ({type(exc).__name__}: {str(exc)[:160]})"
    if "member_id" not in frame.columns:
        return f"{where} has no member_id column (have {list(frame.columns)[:12]})"
    for column in _numeric_columns(frame):
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            return (
                f"{where}: column {column!r} must be numeric; value {values.iloc[i]!r} "
                f"(member {frame['member_id'].iloc[i]!r}, row {i}) is not a number"
            )
    return None


def _bundle_error(exc: Exception, settings: Settings) -> ServingLoadError:
    """The bundle build failed: name the input at fault when it is the catalog or snapshot."""
    catalog = explain_catalog(settings.catalog_path())
    if catalog is not None:
        return ServingLoadError("catalog", catalog)
    features = explain_features(settings.features_path())
    if features is not None:
        return ServingLoadError("member_features", features)
    return ServingLoadError("bundle", f"decision bundle not built: {type(exc).__name__}: {exc}")


_ONE_AT_A_TIME = threading.Lock()  # two reloads must not interleave build, sync and swap


def load_serving(state: Any, *, at_start: bool = False) -> ModelSet:
    """Load models, build the bundle, sync budget counters, then swap all in and move the
    last-known-good pointers (see module doc). ``state``: the app's ``AppState``.

    ``at_start``: when the registry's models fail the bundle's checks and the catalog and the
    snapshot are fine, serve the last-known-good copies instead (source ``local_copy``, the
    reason naming the refused versions): a restart after a bad registration stays up. A reload
    keeps what is serving instead."""
    with _ONE_AT_A_TIME:
        return _load_serving(state, at_start)


def _load_serving(state: Any, at_start: bool) -> ModelSet:
    try:
        models = state.models.load()
    except ModelLoadError as exc:
        raise ServingLoadError("models", str(exc)) from exc
    holder = state.bundle
    if holder is None:
        state.models.accept(models)
        state.metrics.set_models(models.versions())
        return models
    try:
        bundle = build_bundle(models, holder.settings)
    except Exception as exc:
        error = _bundle_error(exc, holder.settings)
        local = None
        if at_start and error.check == "bundle":
            refused = ", ".join(f"{k} v{v}" for k, v in models.versions().items())
            local = state.models.load_local(models, f"registry models ({refused}) refused: {error}")
        if local is None:
            raise error from exc
        log.warning("%s; serving the last-known-good copies %s", error, local.versions())
        try:
            bundle = build_bundle(local, holder.settings)
        except Exception:
            raise error from exc
        models = local
    if state.store is None:
        raise ServingLoadError("budgets", "store not open: budget counters cannot be synced")
    try:
        sync = sync_budgets(state.store, bundle.engine.offers)
    except BudgetSyncError as exc:
        raise ServingLoadError("budgets", str(exc)) from exc
    # counters before the bundle: a request on the new bundle must find its offers' counters
    state.budget_counters = state.budget_counters | sync.counters
    holder.swap(bundle, sync.exhausted)
    state.budget_counters = sync.counters
    state.models.accept(models)
    state.metrics.set_models(models.versions())
    return models
