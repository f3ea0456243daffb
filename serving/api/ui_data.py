"""What the program page (``/ui``) shows, read live from the store, the models being served and
the registry. Plain functions of the app state; the router only renders them.

Slow parts are cached for ``CACHE_SECONDS``: the incrementality table (it reads the last 90
days of decisions) and the registry's versions (a tracking server may be slow or down: then
the page says so and shows the rest).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from serving.loader import probe

__all__ = [
    "CACHE_SECONDS",
    "budgets_frame",
    "daily_frame",
    "incrementality_rows",
    "last_load",
    "last_reload",
    "page_figures",
    "record_reload",
    "registry_versions",
]

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
# The registry gates' metrics (training.affinity.train.DEFAULT_GATE: ndcg@10;
# training.uplift.evaluate.GATE_METRIC: qini) first, then a few that explain them.
GATE_METRICS: tuple[str, ...] = ("ndcg@10", "qini", "recall@10", "map@10", "catalog_coverage@10")
DAYS_SHOWN = 60
INCREMENTALITY_DAYS = 90  # decisions the page's incrementality table reads
_lock = threading.Lock()


def _page_state(state: Any) -> dict[str, Any]:
    """The page's own cache and last reload, kept on the app's state (one per app)."""
    with _lock:
        return state.__dict__.setdefault("_ui", {"cache": {}, "reload": None})


def _cached(state: Any, key: str, compute: Callable[[], Any]) -> Any:
    cache = _page_state(state)["cache"]
    now = time.monotonic()
    with _lock:
        hit = cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = compute()
    with _lock:
        cache[key] = (now, value)
    return value


def clear_cache(state: Any) -> None:
    """Forget the cached figures of ``state``'s page (after a reload: the versions changed)."""
    cache = _page_state(state)["cache"]
    with _lock:
        cache.clear()


def budgets_frame(store: Any) -> pd.DataFrame:
    """offer_id, budget, spent, unit, used (spent / budget) per offer with a budget."""
    rows = [{"offer_id": k, **v} for k, v in store.budgets().items()]
    df = pd.DataFrame(rows, columns=["offer_id", "budget", "spent", "unit"])
    if df.empty:
        return df.assign(used=[])
    df["used"] = df["spent"] / df["budget"].where(df["budget"] > 0)
    return df.sort_values("used", ascending=False, na_position="last").reset_index(drop=True)


def daily_frame(store: Any, days: int = DAYS_SHOWN) -> pd.DataFrame:
    """day, decisions, grants, redemptions for the last ``days`` days with any activity."""
    from serving.store.tables import decisions, feedback_events, grants

    def per_day(connection: Any, column: Any, where: Any = None) -> pd.Series:
        day = func.date(column)
        q = select(day, func.count()).group_by(day)
        if where is not None:
            q = q.where(where)
        got = connection.execute(q).all()
        return pd.Series({str(d): int(n) for d, n in got if d is not None}, dtype="int64")

    with store.engine.connect() as c:
        made = per_day(c, decisions.c.created_at)
        granted = per_day(c, grants.c.granted_at)
        redeemed = per_day(c, grants.c.redeemed_at, grants.c.redeemed_at.is_not(None))
        fed = per_day(c, feedback_events.c.ts, feedback_events.c.event == "redeemed")
    df = pd.DataFrame(
        {"decisions": made, "grants": granted, "redemptions": redeemed.add(fed, fill_value=0)}
    ).fillna(0)
    df = df.astype("int64").sort_index().tail(days)
    return df.rename_axis("day").reset_index()


def incrementality_rows(state: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The store's incrementality per offer and moment (cached), or why it is not available."""

    def compute() -> tuple[list[dict[str, Any]], str | None]:
        from serving.reports import incrementality, report_json
        from serving.reports.sources import from_store

        if state.bundle is None:
            return [], "the service decides nothing (no models configured): no catalog"
        try:
            inputs = from_store(
                state.store,
                state.settings.catalog_path(),
                since=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=INCREMENTALITY_DAYS),
            )
            table = incrementality(inputs, dimensions=("all", "offer", "moment"))
        except Exception as exc:  # the page shows the rest
            log.warning("incrementality not computed: %s: %s", type(exc).__name__, exc)
            return [], f"not computed: {type(exc).__name__}: {str(exc)[:300]}"
        return report_json(table, {})["groups"], None

    return _cached(state, "incrementality", compute)


def registry_versions(state: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Champion and challenger of every served model with its gate metrics (cached), or why
    the registry could not answer."""

    def compute() -> tuple[list[dict[str, Any]], str | None]:
        uri = state.settings.tracking_uri()
        timeout = state.settings.registry.registry_timeout
        try:
            probe(uri, timeout)
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            out = []
            for name in sorted(
                {_registered_name(u) for u in state.settings.serving.models.values()}
            ):
                for alias in ("champion", "challenger"):
                    try:
                        mv = client.get_model_version_by_alias(name, alias)
                    except MlflowException:
                        continue
                    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
                    out.append(
                        {
                            "model": name,
                            "alias": alias,
                            "version": str(mv.version),
                            "metrics": _gate_metrics(metrics),
                            "reason": "; ".join(
                                (mv.tags or {}).get(t, "")
                                for t in ("promoted_reason", "policy_gate")
                                if (mv.tags or {}).get(t)
                            ),
                            "test_window": (mv.tags or {}).get("test_window", ""),
                        }
                    )
        except Exception as exc:
            return [], f"registry {uri.split('://', 1)[0]} not available: {type(exc).__name__}"
        return out, None

    return _cached(state, "registry", compute)


def record_reload(state: Any, outcome: str, reason: str, key_id: str) -> None:
    """Remember the last reload asked from the page (this process)."""
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = _page_state(state)
    page["reload"] = {"at": at, "outcome": outcome, "reason": reason, "key_id": key_id}


def last_reload(state: Any) -> dict[str, str] | None:
    """The last reload asked from the page in this process, or None."""
    return _page_state(state)["reload"]


def _gate_metrics(metrics: dict[str, float]) -> dict[str, float]:
    named = {k.replace("_at_", "@"): float(v) for k, v in metrics.items()}
    return {k: named[k] for k in GATE_METRICS if k in named and math.isfinite(named[k])}


def _registered_name(uri: str) -> str:
    """``models:/offers-uplift@champion`` or ``models:/offers-uplift/3`` -> ``offers-uplift``."""
    if not uri.startswith("models:/"):
        return uri
    return uri[len("models:/") :].split("@", 1)[0].split("/", 1)[0]


def last_load(state: Any) -> list[dict[str, Any]]:
    """The models serving now: name, version, source, when they were loaded."""
    current = state.models.current
    if current is None:
        return []
    return [
        {
            "name": m.name,
            "version": m.version,
            "source": m.source,
            "loaded_at": m.loaded_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "reason": (m.reason or "")[:300],
        }
        for m in current.models.values()
    ]


def page_figures(budgets: pd.DataFrame, daily: pd.DataFrame, incr: list[dict[str, Any]]) -> dict:
    """Plotly figures (as JSON strings) for the page: budgets, per day, incrementality."""
    import plotly.graph_objects as go

    figs: dict[str, str] = {}
    b = budgets.iloc[::-1]
    fig = go.Figure(
        go.Bar(
            y=b["offer_id"],
            x=100 * b["used"].fillna(0.0),
            orientation="h",
            customdata=[
                f"{s:,.2f} of {t:,.2f} ({u})"
                for s, t, u in zip(b["spent"], b["budget"], b["unit"], strict=True)
            ],
            hovertemplate="%{y}: %{x:.2f} % used, %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Budgets: share spent per offer (spent / budget)",
        xaxis={
            "title": "% of budget spent",
            "range": [0, max(100.0, 100 * float(b["used"].max() or 0)) * 1.25],
        },
        height=max(260, 20 * len(b) + 120),
        margin={"l": 170, "r": 20, "t": 50, "b": 40},
    )
    figs["budgets"] = fig.to_json()
    fig = go.Figure(
        [go.Bar(name=c, x=daily["day"], y=daily[c]) for c in ("grants", "redemptions")]
        + [go.Scatter(name="decisions", x=daily["day"], y=daily["decisions"], yaxis="y2")]
    )
    fig.update_layout(
        title="Grants and redemptions per day (decisions on the right axis)",
        xaxis={"type": "category"},
        yaxis2={"overlaying": "y", "side": "right"},
        height=320,
        margin={"l": 50, "r": 50, "t": 50, "b": 40},
    )
    figs["daily"] = fig.to_json()
    rows = [r for r in incr if r["dimension"] == "offer" and r["ci_conversion"][0] is not None]
    rows.sort(key=lambda r: r["diff_conversion"])
    fig = go.Figure(
        go.Scatter(
            x=[100 * r["diff_conversion"] for r in rows],
            y=[r["group"] for r in rows],
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [100 * (r["ci_conversion"][1] - r["diff_conversion"]) for r in rows],
                "arrayminus": [100 * (r["diff_conversion"] - r["ci_conversion"][0]) for r in rows],
            },
        )
    )
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Conversion vs holdout per offer (pp, 95 % interval)",
        height=max(260, 20 * len(rows) + 120),
        margin={"l": 170, "r": 20, "t": 50, "b": 40},
    )
    figs["incrementality"] = fig.to_json()
    return figs
