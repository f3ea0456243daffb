"""Loaded model versions and the admin reload (atomic swap; a broken version is refused)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from anyio import to_thread
from fastapi import APIRouter, HTTPException

from serving.api.deps import Admin, OffersReader, StateDep
from serving.api.modelset import ModelSet
from serving.api.schemas import ErrorResponse, ModelInfo, ModelsResponse, ReloadResponse
from serving.api.startup import RELOAD_CHECKS, ServingLoadError, load_serving

router = APIRouter(prefix="/v1", tags=["models"])
log = logging.getLogger(__name__)


def _aware(t: datetime) -> datetime:
    """UTC with its offset: RFC 3339 ``date-time`` as the schema promises."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _infos(models: ModelSet | None) -> list[ModelInfo]:
    if models is None:
        return []
    return [
        ModelInfo(
            name=m.name,
            uri=m.uri,
            version=m.version,
            loaded_at=_aware(m.loaded_at),
            source=m.source,
            reason=None if m.reason is None else m.reason[:1000],
        )
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
    """Load the configured models, the catalog and the snapshot again and make the budget
    counters follow the catalog; swap them in only when all of it passed (else 409 naming the
    input, and the current ones keep serving). Each model says its source: ``registry`` or
    ``local_copy`` with the reason."""
    try:
        loaded = await to_thread.run_sync(load_serving, state)
    except ServingLoadError as exc:
        log.warning("reload refused (%s): %s", exc.check, exc)
        raise HTTPException(status_code=409, detail=f"reload refused: {exc}"[:1000]) from None
    for check in RELOAD_CHECKS:
        state.problems.pop(check, None)  # a start-up problem a good reload has fixed
    return ReloadResponse(reloaded=True, models=_infos(loaded))
