"""The program page ``/ui``: budgets, grants and redemptions per day, incrementality against the
holdout, the models (champion / challenger and their gate metrics, the last load) and, for an
``admin`` key, a reload button. Rendered on the server with Jinja2; charts are plotly, whose
JavaScript the service serves itself (``/ui/vendor/plotly.min.js``): nothing from a CDN.

Auth: a key with ``offers:read``, given as the API's ``X-API-Key`` / bearer header, or once in
the login form (``POST /ui/login``), which keeps it in an HttpOnly, SameSite=Strict cookie
scoped to ``/ui`` (Secure over https). No key -> the login form (401); a key without the scope
-> 403. ``POST /ui/reload`` needs ``admin``; SameSite=Strict keeps other sites from posting it
with the cookie.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from serving.api import ui_data
from serving.api.deps import StateDep
from serving.auth import Principal

__all__ = ["COOKIE", "STATIC_DIR", "plotly_js_path", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", include_in_schema=False)
COOKIE = "offers_ui_key"
COOKIE_SECONDS = 8 * 3600
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
_MESSAGES = {
    "reloaded": "models reloaded",
    "refused": "reload refused: the current models keep serving (the reason is under Models)",
}


def plotly_js_path() -> Path:
    """plotly.min.js as the plotly wheel ships it."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def _key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if not key:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    return key or request.cookies.get(COOKIE)


async def _principal(request: Request) -> Principal | None:
    key = _key(request)
    return request.app.state.keyring.authenticate(key) if key else None


PrincipalDep = Annotated[Principal | None, Depends(_principal)]


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _login(request: Request, error: str | None, status: int) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"title": "sign in", "root": _root(request), "error": error, "principal": None},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _forbidden(request: Request, principal: Principal, scope: str) -> HTMLResponse:
    log.info("key %s lacks scope %s (ui)", principal.key_id, scope)
    return _login(request, f"this key lacks the scope {scope!r}; sign in with another key", 403)


def _pp(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def _ci(c: list[float | None] | None) -> str:
    if not c or c[0] is None or c[1] is None:
        return "-"
    return f"[{100 * c[0]:+.2f}, {100 * c[1]:+.2f}]"


def _page_context(state: Any) -> dict[str, Any]:
    """Everything the page shows (runs in a worker thread: store and registry reads)."""
    import pandas as pd

    store = state.store
    if store is not None:
        budgets = ui_data.budgets_frame(store)
        daily = ui_data.daily_frame(store)
        incr, incr_error = ui_data.incrementality_rows(state)
    else:
        budgets = pd.DataFrame(columns=["offer_id", "budget", "spent", "unit", "used"])
        daily = pd.DataFrame(columns=["day", "decisions", "grants", "redemptions"])
        incr, incr_error = [], "the store is not open"
    versions, registry_error = ui_data.registry_versions(state)
    figures = ui_data.page_figures(budgets, daily, incr)
    has_incr_chart = any(
        r["dimension"] == "offer" and r["ci_conversion"][0] is not None for r in incr
    )
    shown = {
        "budgets": not budgets.empty,
        "daily": not daily.empty,
        "incrementality": has_incr_chart,
    }
    return {
        "loaded": ui_data.last_load(state),
        "last_reload": ui_data.last_reload(state),
        "problems": [f"{k}: {v}"[:300] for k, v in state.problems.items()],
        "versions": versions,
        "registry_error": registry_error,
        "has_budgets": shown["budgets"],
        "has_daily": shown["daily"],
        "has_incr_chart": has_incr_chart,
        "incr": incr,
        "incr_error": incr_error,
        # JSON inside <script>: "</" must not close the element (offer names are user text).
        "figures": {k: v.replace("</", "<\\/") for k, v in figures.items() if shown[k]},
    }


@router.get("", response_class=HTMLResponse)
async def ui_page(
    request: Request, state: StateDep, principal: PrincipalDep, msg: str | None = None
) -> Response:
    """The program page (the login form without a key)."""
    if principal is None:
        error = "unknown API key" if _key(request) else None
        return _login(request, error, 401)
    if "offers:read" not in principal.scopes:
        return _forbidden(request, principal, "offers:read")
    context = await to_thread.run_sync(_page_context, state)
    context.update(
        title="program",
        root=_root(request),
        principal=principal,
        is_admin="admin" in principal.scopes,
        message=_MESSAGES.get(msg or ""),
        pp=_pp,
        pct=_pct,
        ci=_ci,
    )
    return templates.TemplateResponse(
        request, "ui.html", context, headers={"Cache-Control": "no-store"}
    )


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


@router.post("/login", response_class=HTMLResponse)
async def ui_login(request: Request) -> Response:
    """Check the key from the form; keep it in an HttpOnly cookie for ``/ui``."""
    key = (await _form(request)).get("key", "").strip()
    principal = request.app.state.keyring.authenticate(key) if key else None
    if principal is None:
        return _login(request, "unknown API key" if key else "give an API key", 401)
    if "offers:read" not in principal.scopes:
        return _forbidden(request, principal, "offers:read")
    response = RedirectResponse(f"{_root(request)}/ui", status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_SECONDS,
        path=f"{_root(request)}/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def ui_logout(request: Request) -> Response:
    response = RedirectResponse(f"{_root(request)}/ui", status_code=303)
    response.delete_cookie(COOKIE, path=f"{_root(request)}/ui")
    return response


@router.post("/reload", response_class=HTMLResponse)
async def ui_reload(request: Request, state: StateDep, principal: PrincipalDep) -> Response:
    """The admin's reload button: the same load sequence as ``POST /v1/admin/reload``."""
    from serving.api.startup import RELOAD_CHECKS, ServingLoadError, load_serving

    if principal is None:
        return _login(request, None, 401)
    if "admin" not in principal.scopes:
        return _forbidden(request, principal, "admin")
    outcome, reason = "reloaded", ""
    try:
        await to_thread.run_sync(load_serving, state)
        for check in RELOAD_CHECKS:
            state.problems.pop(check, None)  # a start-up problem a good reload has fixed
    except ServingLoadError as exc:
        log.warning("reload refused (%s): %s", exc.check, exc)
        outcome, reason = "refused", str(exc)[:500]
    ui_data.clear_cache(state)
    ui_data.record_reload(state, outcome, reason, principal.key_id)
    return RedirectResponse(f"{_root(request)}/ui?msg={outcome}", status_code=303)


@router.get("/vendor/plotly.min.js")
async def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly package (no CDN)."""
    return FileResponse(
        plotly_js_path(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )
