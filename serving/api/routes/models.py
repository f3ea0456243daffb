"""Loaded model versions and the admin reload (atomic swap; a broken version is refused)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from anyio import to_thread
from fastapi import APIRouter, HTTPException

from serving.api.deps import Admin, OffersReader, StateDep
from serving.api.modelset import ModelLoadError, ModelSet
from serving.api.schemas import ErrorResponse, ModelInfo, ModelsResponse, ReloadResponse

router = APIRouter(prefix="/v1", tags=["models"])
log = logging.getLogger(__name__)


def _aware(t: datetime) -> datetime:
    """UTC with its offset: RFC 3339 ``date-time`` as the schema promises."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _infos(models: ModelSet | None) -> list[ModelInfo]:
    if models is None:
        return []
    return [
        ModelInfo(name=m.name, uri=m.uri, version=m.version, loaded_at=_aware(m.loaded_at))
        for m in models.models.values()
    ]


@router.get("/models", response_model=ModelsResponse, responses={401: {"model": ErrorResponse}})
async def get_models(state: StateDep, _: OffersReader) -> ModelsResponse:
    """The models serving now, with their versions."""
    return ModelsResponse(
        models=_infos(state.models.current), configured=sorted(state.models.configured)
    )


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={409: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)
async def reload_models(state: StateDep, _: Admin) -> ReloadResponse:
    """Load the configured models again; on failure the current ones keep serving (409)."""
    previous = state.models.current
    try:
        loaded = await to_thread.run_sync(state.models.reload)
    except ModelLoadError as exc:
        log.warning("reload refused: %s", exc)
        raise HTTPException(status_code=409, detail=f"reload refused: {exc}") from None
    if state.bundle is not None:
        try:
            await to_thread.run_sync(state.bundle.build, loaded)
        except Exception as exc:  # the new models do not make a bundle: keep the old ones
            state.models.current = previous
            log.warning("reload refused (bundle): %s: %s", type(exc).__name__, exc)
            raise HTTPException(
                status_code=409, detail=f"reload refused: {type(exc).__name__}: {exc}"
            ) from None
    state.metrics.set_models(loaded.versions())
    return ReloadResponse(reloaded=True, models=_infos(loaded))
