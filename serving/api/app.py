"""App factory: ``create_app(settings)`` builds the FastAPI app; the lifespan opens the store,
starts the decision-log writer and loads the models once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from serving.api.admission import AdmissionLimits, CheckoutAdmission
from serving.api.bundle import BundleHolder
from serving.api.checkout import InFlight, start_sweeper, stop_sweeper
from serving.api.deps import AppState
from serving.api.errors import install_error_handlers
from serving.api.grants import GrantService
from serving.api.history import MemberHistory
from serving.api.lean import LeanRoutes
from serving.api.limits import LimitsMiddleware, uvicorn_options
from serving.api.metrics import ApiMetrics, MetricsMiddleware
from serving.api.modelset import Loader, ModelHolder
from serving.api.routes import checkout, decisions, events, health, models, ui
from serving.api.startup import (
    ServingLoadError,
    StoreOpenError,
    load_serving,
    open_store_clearly,
)
from serving.auth import ApiKeyRing, document_api_keys
from serving.loader import fetch_copy, lkg_loader
from serving.settings import Settings, get_settings
from serving.store import DecisionLogWriter

__all__ = ["create_app", "prepare_shared_state", "run_server"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, model_loader: Loader | None = None) -> FastAPI:
    """The serving app for ``settings`` (default: the environment's, :func:`get_settings`).

    ``model_loader`` replaces the MLflow loader with its last-known-good copies (tests).
    When the models include ``affinity`` and ``uplift``, the decision bundle (catalog and
    member snapshot of ``settings.serving``, engine ``settings.engine``) is built with them.
    """
    settings = settings or get_settings()
    serving, store = settings.serving, settings.store
    loader = model_loader or lkg_loader(settings.tracking_uri(), settings.lkg_path())
    state = AppState(
        settings=settings,
        keyring=ApiKeyRing.from_settings(serving),
        metrics=ApiMetrics(),
        models=ModelHolder(serving.models, loader),
    )
    if {"affinity", "uplift"} <= set(serving.models):
        state.bundle = BundleHolder(settings)
    if not len(state.keyring):
        log.warning("no API keys configured: every /v1 endpoint will answer 401")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Expected start-up failures (store, catalog, snapshot, models) are logged in one line
        # naming the file, field and value, and kept for /readyz: the process stays up, not
        # ready, the same way with any number of workers.
        try:
            state.store = await to_thread.run_sync(
                lambda: open_store_clearly(
                    settings.database_url(),
                    migrate_schema=store.migrate_on_start,
                    sqlite_synchronous=store.sqlite_synchronous,
                    lock_wait_seconds=store.store_lock_wait_seconds,
                )
            )
        except StoreOpenError as exc:
            state.problems["store"] = str(exc)
            log.error("not ready: %s", exc)
        if state.store is not None:
            state.decision_log = DecisionLogWriter(
                state.store,
                flush_seconds=store.decision_log_flush_seconds,
                max_batch=store.decision_log_max_batch,
            )
            state.grants = GrantService(
                state.store,
                on_exhausted=state.bundle.mark_exhausted if state.bundle is not None else None,
            )
            state.history = MemberHistory(
                state.store.member_grants,
                max_members=serving.history_max_members,
                ttl_seconds=serving.history_ttl_seconds,
                read_roster=state.store.members_with_grants,
                read_live=state.store.live_grants,  # all members' grants in one query
            )
            state.checkouts = InFlight()
            state.admission = CheckoutAdmission(
                state.grants,
                AdmissionLimits.from_settings(serving),
                state.metrics.checkout_shed,
            )
            grants = state.grants  # read by /metrics at scrape time
            state.metrics.grant_queue.set_function(lambda: grants.backlog().queued)
            state.metrics.grant_wait.set_function(lambda: grants.backlog().oldest_wait)
            if serving.models:
                try:
                    await to_thread.run_sync(lambda: load_serving(state, at_start=True))
                except ServingLoadError as exc:
                    state.problems[exc.check] = str(exc)
                    log.error("not ready: %s", exc)
                except Exception as exc:  # unexpected: keep the traceback for the operator
                    state.problems["bundle"] = f"{type(exc).__name__}: {exc}"
                    log.exception("not ready: decision bundle not built")
        sweeping = start_sweeper(
            state,
            serving.checkout_sweep_seconds,
            serving.checkout_open_seconds,
            batch=serving.checkout_sweep_batch,
            pause=serving.checkout_sweep_pause_seconds,
        )
        try:
            yield
        finally:
            await stop_sweeper(sweeping)
            if state.grants is not None:
                await to_thread.run_sync(state.grants.close)
            if state.decision_log is not None:
                await to_thread.run_sync(state.decision_log.close)
            if state.store is not None:
                state.store.close()

    # /docs and /redoc with their JS and CSS served by the app (fastapi-offline), no CDN.
    app: FastAPI = FastAPIOffline(
        title="loyalty-offers",
        version="1",
        summary="Personalised loyalty offers, checkout rewards and feedback",
        lifespan=lifespan,
    )
    app.state.offers = state
    app.state.keyring = state.keyring  # read by serving.auth.require_scope
    install_error_handlers(app)
    document_api_keys(app)
    if serving.lean_routes:  # innermost: inside the limits and the metrics
        app.add_middleware(LeanRoutes, state=state, routes=app.routes)
    app.add_middleware(
        LimitsMiddleware,
        keyring=state.keyring,
        max_body_bytes=serving.max_body_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts refusals
    app.include_router(health.router)
    # Routes are matched in order: the real-time ones (checkout, member offers) first.
    app.include_router(checkout.router)
    app.include_router(decisions.router)
    app.include_router(events.router)
    app.include_router(models.router)
    app.include_router(ui.router)
    app.mount("/ui/static", StaticFiles(directory=ui.STATIC_DIR), name="ui-static")
    return app


def run_server(
    settings: Settings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
) -> None:
    """Build the app (models, bundle, store in its lifespan) and serve it with uvicorn until
    interrupted. No access log: request paths carry member ids."""
    import uvicorn

    settings = settings or get_settings()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host or settings.serving.host,
        port=port or settings.serving.port,
        log_level=log_level,
        access_log=False,
        **uvicorn_options(settings),
    )


def prepare_shared_state(settings: Settings | None = None) -> None:
    """Before starting several workers on one store: migrate the store, download the models'
    copies and make the budget counters follow the catalog, once (workers racing on them
    would fail or duplicate work). Failures are logged in one line naming the file, field and
    value, never raised: each worker then reports the same problem on /readyz. No
    last-known-good pointer moves here (a worker moves it once its bundle passed its checks).
    """
    from pathlib import Path

    from features.catalog.model import load_catalog
    from serving.api.budgets import BudgetSyncError, sync_budgets
    from serving.api.startup import explain_catalog
    from serving.engine import DecisionEngine

    settings = settings or get_settings()
    try:
        store = open_store_clearly(
            settings.database_url(), migrate_schema=settings.store.migrate_on_start
        )
    except StoreOpenError as exc:
        log.error("not ready: %s", exc)
        return
    try:
        tracking = settings.tracking_uri()
        timeout = settings.registry.registry_timeout
        for name, uri in settings.serving.models.items():
            if Path(uri).is_dir():
                continue  # a local model directory: nothing to download
            try:
                fetch_copy(name, uri, tracking, settings.lkg_path(), timeout)
            except Exception as exc:
                log.warning(
                    "model %s not downloaded (%s: %s); each worker loads it or its local copy",
                    name,
                    type(exc).__name__,
                    str(exc)[:200],
                )
        problem = explain_catalog(settings.catalog_path())
        if problem is not None:
            log.error("not ready: %s", problem)
            return
        try:
            catalog = load_catalog(settings.catalog_path())
            engine = DecisionEngine(catalog, settings.engine)
        except Exception as exc:  # e.g. engine settings naming offers the catalog lacks
            log.error(
                "not ready: OFFERS_CATALOG: catalog %s not usable: %s: %s",
                settings.catalog_path(),
                type(exc).__name__,
                exc,
            )
            return
        try:
            sync_budgets(store, engine.offers)
        except BudgetSyncError as exc:
            log.error("not ready: %s", exc)
    finally:
        store.close()
