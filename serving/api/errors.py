"""Error responses: 422 names each field and reason (never echoes the input); no stack traces.

An integer of more than 4,300 digits makes the JSON parser fail before validation (FastAPI
answers 400 "error parsing the body"); the handler turns that into a 422 naming the field.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api.limits import huge_integer_fields

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    503: "unavailable",
}


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "reason": err.get("msg", "")}
        for err in exc.errors()[:50]
    ]
    return JSONResponse(status_code=422, content={"error": "validation_error", "detail": detail})


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and "integer string conversion" in str(exc.__cause__ or ""):
        fields = huge_integer_fields(request.scope)
        if fields:
            return JSONResponse(
                status_code=422, content={"error": "validation_error", "detail": fields}
            )
    code = _CODES.get(exc.status_code, "error")
    return JSONResponse(
        status_code=exc.status_code,
        content={"error": code, "detail": exc.detail},
        headers=getattr(exc, "headers", None),
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    route = getattr(request.scope.get("route"), "path", "unmatched")
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, route)
    return JSONResponse(status_code=500, content={"error": "internal_error", "detail": None})


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The answer the app's handlers give for a validation or HTTP error (the lean path,
    :mod:`serving.api.lean`, answers the errors its service functions raise with it)."""
    if isinstance(exc, RequestValidationError):
        return await _validation(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return await _http(request, exc)
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    # starlette's stub wants a handler of Exception; one of the registered subclass is the use
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
