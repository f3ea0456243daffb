"""Prometheus metrics of one app (own registry) and the ASGI middleware that records them.

The middleware also turns an unhandled exception into a generic 500 (no stack trace in the
response, only the exception type and the route template in the log: no member ids). Body size,
key-before-body and read timeouts are :mod:`serving.api.limits`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiMetrics", "MetricsMiddleware"]

log = logging.getLogger(__name__)

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ApiMetrics:
    """Every metric the API exports, registered on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "offers_http_request_duration_seconds",
            "Request latency by route template",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "offers_http_requests",
            "Requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "offers_feedback_events",
            "Feedback events by kind and result (stored, duplicate or conflict)",
            ["event", "result"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "offers_decisions",
            "Offers decided, by offer and fallback",
            ["offer_id", "fallback"],
            registry=self.registry,
        )
        self.lean = Counter(
            "offers_lean_path_requests",
            "Checkout and member-offers requests by who answered them: the lean path, or "
            "FastAPI when the lean path handed them over (refusals, unusual input)",
            ["route", "answered_by"],
            registry=self.registry,
        )
        self.checkout_shed = Counter(
            "offers_checkout_shed",
            "Checkouts refused with 503 before deciding (nothing reserved), by reason: "
            "queue_full or queue_wait (serving/api/admission.py)",
            ["reason"],
            registry=self.registry,
        )
        self.grant_queue = Gauge(
            "offers_checkout_grant_queue",
            "Checkout reservations queued for the grant writer, not yet taken (at scrape time)",
            registry=self.registry,
        )
        self.grant_wait = Gauge(
            "offers_checkout_grant_oldest_wait_seconds",
            "Seconds the oldest checkout reservation not yet committed has waited (at scrape "
            "time; 0 when none)",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "offers_model_info",
            "Loaded model versions (value 1)",
            ["model", "version"],
            registry=self.registry,
        )

        self._decision_children: dict[tuple[str, str], Any] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        """One request's latency and status (label children cached per route and status)."""
        key = (method, route, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.latency.labels(method, route),
                self.requests.labels(method, route, str(code)),
            )
        children[0].observe(seconds)
        children[1].inc()

    def count_decision(self, offer_id: str, fallback: str) -> None:
        """One decided offer (children cached: ``labels()`` costs tens of microseconds)."""
        key = (offer_id, fallback)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(offer_id, fallback)
        child.inc()

    def set_models(self, versions: dict[str, str]) -> None:
        self.model_info.clear()
        for model, version in versions.items():
            self.model_info.labels(model=model, version=version).set(1)


class MetricsMiddleware:
    """Pure ASGI middleware: latency and status per route template, 500 guard."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], _route(scope))
            if not status["started"]:
                await _send_json(send, 500, {"error": "internal_error", "detail": None})
            status["code"] = 500
        finally:
            route = _route(scope)
            method = scope["method"]
            self.metrics.observe(method, route, status["code"], time.perf_counter() - start)


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
