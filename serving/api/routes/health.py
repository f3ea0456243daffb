"""Open endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import StateDep
from serving.api.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is up."""
    return HealthResponse()


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready when the store answers and every configured model is loaded."""
    checks: dict[str, str] = {}
    try:
        if state.store is None:
            raise RuntimeError("store not open")
        await to_thread.run_sync(state.store.ping)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable ({type(exc).__name__})"
    checks["models"] = "ok" if state.models.ready else "not loaded"
    if state.bundle is not None:
        checks["bundle"] = "ok" if state.bundle.current is not None else "not loaded"
    # what start-up (or the last reload) found wrong, by input (file, field and value)
    checks.update({check: problem[:1000] for check, problem in state.problems.items()})
    ready = all(v == "ok" for v in checks.values())
    body = ReadyResponse(ready=ready, checks=checks)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
