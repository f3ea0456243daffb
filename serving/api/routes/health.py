"""Liveness, readiness and Prometheus metrics.

``/healthz`` and ``/readyz`` are open (probes). ``/metrics`` shows offer ids, decision counts
and model versions, so by default it needs a key with the ``admin`` scope (Prometheus sends it
as ``authorization: {credentials: <key>}``, a bearer token); ``OFFERS_METRICS_EXPOSURE=open``
serves it to anyone (a port only the scraper reaches), ``off`` not at all (404).
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import StateDep
from serving.api.limits import request_key
from serving.api.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is up."""
    return HealthResponse()


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready when the store takes a write (a probe row inserted and rolled back, within the
    store lock wait) and every configured model is loaded."""
    checks: dict[str, str] = {}
    try:
        if state.store is None:
            raise RuntimeError("store not open")
        await to_thread.run_sync(state.store.check_writable)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable: cannot write ({type(exc).__name__})"
    checks["models"] = "ok" if state.models.ready else "not loaded"
    if state.bundle is not None:
        checks["bundle"] = "ok" if state.bundle.current is not None else "not loaded"
    # what start-up (or the last reload) found wrong, by input (file, field and value)
    checks.update({check: problem[:1000] for check, problem in state.problems.items()})
    ready = all(v == "ok" for v in checks.values())
    body = ReadyResponse(ready=ready, checks=checks)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse, "description": "OFFERS_METRICS_EXPOSURE=off"},
    },
)
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus text exposition (who may read it: ``OFFERS_METRICS_EXPOSURE``)."""
    exposure = state.settings.serving.metrics_exposure
    if exposure == "off":
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Not Found")
    if exposure == "admin":
        _require_admin(request, state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _require_admin(request: Request, state: StateDep) -> None:
    """The same rules as ``serving.auth.require_scope("admin")``: 401 without a known key,
    403 with a key that lacks the scope."""
    key = request_key(request.scope)
    principal = state.keyring.authenticate(key) if key else None
    if principal is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing API key" if not key else "unknown API key",
            headers={"WWW-Authenticate": 'ApiKey header="X-API-Key", Bearer'},
        )
    if "admin" not in principal.scopes:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail="API key lacks scope 'admin'"
        )
