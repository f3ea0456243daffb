"""App factory: ``create_app(settings)`` builds the FastAPI app; the lifespan opens the store,
starts the decision-log writer and loads the models once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from serving.api.bundle import BundleConfig, BundleHolder, lkg_loader, seed_budgets
from serving.api.checkout import InFlight, start_sweeper, stop_sweeper
from serving.api.deps import AppState
from serving.api.errors import install_error_handlers
from serving.api.grants import GrantService
from serving.api.limits import LimitsMiddleware, uvicorn_options
from serving.api.history import MemberHistory
from serving.api.metrics import ApiMetrics, MetricsMiddleware
from serving.api.modelset import Loader, ModelHolder, ModelLoadError
from serving.api.routes import checkout, decisions, events, health, models
from serving.auth import ApiKeyRing
from serving.settings import ServingSettings, get_settings
from serving.store import DecisionLogWriter, open_store

__all__ = ["create_app", "prepare_shared_state", "run_server"]

log = logging.getLogger(__name__)


def create_app(
    settings: ServingSettings | None = None,
    *,
    model_loader: Loader | None = None,
    bundle_config: BundleConfig | None = None,
) -> FastAPI:
    """The serving app for ``settings`` (default: from the environment).

    ``model_loader`` replaces the MLflow loader with its last-known-good copies (tests).
    When the models include ``affinity`` and ``uplift``, the decision bundle (catalog and
    member snapshot from ``bundle_config``, default: the environment) is built with them.
    """
    settings = settings or get_settings()
    bundle_config = bundle_config or BundleConfig(home=settings.home)
    loader = model_loader or lkg_loader(settings.mlflow_tracking_uri, bundle_config.lkg_path())
    state = AppState(
        settings=settings,
        keyring=ApiKeyRing.from_settings(settings),
        metrics=ApiMetrics(),
        models=ModelHolder(settings.models, loader),
    )
    if {"affinity", "uplift"} <= set(settings.models):
        state.bundle = BundleHolder(bundle_config)
    if not len(state.keyring):
        log.warning("no API keys configured: every /v1 endpoint will answer 401")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.store = await to_thread.run_sync(
            lambda: open_store(
                settings.resolved_database_url(),
                migrate_schema=settings.migrate_on_start,
                sqlite_synchronous=settings.sqlite_synchronous,
                lock_wait_seconds=settings.store_lock_wait_seconds,
            )
        )
        state.decision_log = DecisionLogWriter(
            state.store,
            flush_seconds=settings.decision_log_flush_seconds,
            max_batch=settings.decision_log_max_batch,
        )
        state.grants = GrantService(
            state.store,
            on_exhausted=state.bundle.mark_exhausted if state.bundle is not None else None,
        )
        state.history = MemberHistory(
            state.store.member_grants,
            max_members=settings.history_max_members,
            ttl_seconds=settings.history_ttl_seconds,
        )
        state.checkouts = InFlight()
        if settings.models:
            try:
                loaded = await to_thread.run_sync(state.models.reload)
                state.metrics.set_models(loaded.versions())
                if state.bundle is not None:
                    bundle = await to_thread.run_sync(state.bundle.build, loaded)
                    counters, spent = await to_thread.run_sync(
                        seed_budgets, state.store, bundle.engine.offers
                    )
                    state.budget_counters = counters
                    state.bundle.mark_exhausted(spent)
            except ModelLoadError as exc:
                log.error("models not loaded at startup (not ready): %s", exc)
            except Exception as exc:
                log.error("decision bundle not built (not ready): %s: %s", type(exc).__name__, exc)
        sweeping = start_sweeper(
            state, settings.checkout_sweep_seconds, settings.checkout_open_seconds
        )
        try:
            yield
        finally:
            await stop_sweeper(sweeping)
            await to_thread.run_sync(state.grants.close)
            await to_thread.run_sync(state.decision_log.close)
            state.store.close()

    app = FastAPI(
        title="loyalty-offers",
        version="1",
        summary="Personalised loyalty offers, checkout rewards and feedback",
        lifespan=lifespan,
    )
    app.state.offers = state
    app.state.keyring = state.keyring  # read by serving.auth.require_scope
    install_error_handlers(app)
    app.add_middleware(
        LimitsMiddleware,
        keyring=state.keyring,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout=settings.body_read_timeout_seconds,
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts refusals
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(models.router)
    app.include_router(decisions.router)
    app.include_router(checkout.router)
    return app


def run_server(
    settings: ServingSettings | None = None,
    bundle_config: BundleConfig | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
) -> None:
    """Build the app (models, bundle, store in its lifespan) and serve it with uvicorn until
    interrupted. No access log: request paths carry member ids."""
    import uvicorn

    settings = settings or get_settings()
    app = create_app(settings, bundle_config=bundle_config)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level=log_level,
        access_log=False,
        **uvicorn_options(settings),
    )


def prepare_shared_state(
    settings: ServingSettings | None = None, bundle_config: BundleConfig | None = None
) -> None:
    """Before starting several workers on one store: migrate the store, fetch the models'
    last-known-good copies and create the budget counters, once (workers racing on them
    would fail or duplicate work). Failures are logged; each worker still reports readiness.
    """
    from features.catalog import load_catalog
    from serving.engine import DecisionEngine

    settings = settings or get_settings()
    bundle_config = bundle_config or BundleConfig(home=settings.home)
    store = open_store(settings.resolved_database_url(), migrate_schema=settings.migrate_on_start)
    try:
        loader = lkg_loader(settings.mlflow_tracking_uri, bundle_config.lkg_path())
        for name, uri in settings.models.items():
            try:
                loader(name, uri)
            except Exception as exc:
                log.error("model %s not prepared: %s: %s", name, type(exc).__name__, exc)
        catalog = bundle_config.catalog_path()
        if catalog.exists():
            engine = DecisionEngine(load_catalog(catalog), bundle_config.engine)
            seed_budgets(store, engine.offers)
    finally:
        store.close()
