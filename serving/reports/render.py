"""The incrementality report as JSON and as one self-contained HTML file (plotly, its JS
inlined: the file opens on a machine without network)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["interval_figure", "report_json", "write_report"]

_LABELS = {
    "all": "All sends",
    "offer": "Per offer",
    "moment": "Per moment (surprise offers; regular = no moment)",
    "stage": "Per lifecycle stage at the send",
    "campaign": "Per campaign",
}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def report_json(table: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` (source, window, margin rate, counts) and one record per group."""
    rows = [{k: _clean(v) for k, v in r.items()} for r in table.to_dict(orient="records")]
    return {**meta, "groups": rows}


def interval_figure(table: pd.DataFrame, dimension: str, outcome: str = "conversion") -> Any:
    """A plotly figure: the difference in ``outcome`` per group with its 95 % interval."""
    import plotly.graph_objects as go

    t = table.loc[table["dimension"] == dimension]
    t = t.loc[t[f"diff_{outcome}"].notna()].sort_values(f"diff_{outcome}")
    x = t[f"diff_{outcome}"].astype(float)
    lo = t[f"ci_{outcome}"].map(lambda c: c[0] if c and c[0] is not None else math.nan)
    hi = t[f"ci_{outcome}"].map(lambda c: c[1] if c and c[1] is not None else math.nan)
    unit = "pp" if outcome == "conversion" else "per member"
    scale = 100.0 if outcome == "conversion" else 1.0
    fig = go.Figure(
        go.Scatter(
            x=x * scale,
            y=t["group"],
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (hi - x) * scale,
                "arrayminus": (x - lo) * scale,
            },
            hovertemplate="%{y}: %{x:.2f}<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title=f"{_LABELS.get(dimension, dimension)}: {outcome} vs holdout ({unit}, 95 % interval)",
        height=max(260, 22 * len(t) + 120),
        margin={"l": 180, "r": 20, "t": 50, "b": 40},
    )
    return fig


def _fmt(v: Any, pct: bool | str = False, money: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if pct:
        return f"{100 * v:+.2f} pp" if pct == "diff" else f"{100 * v:.1f} %"
    if money:
        return f"{v:,.2f}"
    return str(v)


def _ci(c: Any, scale: float = 1.0, fmt: str = "{:+.2f}") -> str:
    if not c or c[0] is None:
        return "-"
    return "[" + fmt.format(c[0] * scale) + ", " + fmt.format(c[1] * scale) + "]"


def html_table(table: pd.DataFrame, dimension: str) -> str:
    """An HTML table of one dimension's groups (escaped)."""
    head = (
        "<tr><th>group</th><th>treated</th><th>holdout</th><th>conversion diff</th>"
        "<th>95 % interval (pp)</th><th>spend diff</th><th>95 % interval</th>"
        "<th>redemption rate</th><th>cost</th><th>incremental margin</th><th>ROI</th></tr>"
    )
    body = []
    for r in table.loc[table["dimension"] == dimension].to_dict(orient="records"):
        label = (
            r["group"]
            if not r.get("name") or r["name"] == r["group"]
            else (f"{r['group']} ({r['name']})")
        )
        body.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(c))}</td>"
                for c in (
                    label,
                    r["n_treated"],
                    r["n_control"],
                    _fmt(r["diff_conversion"], pct="diff"),
                    _ci(r["ci_conversion"], 100.0),
                    _fmt(r["diff_spend"], money=True),
                    _ci(r["ci_spend"]),
                    _fmt(r["redemption_rate"], pct=True),
                    _fmt(r["cost"], money=True),
                    _fmt(r["incremental_margin"], money=True),
                    "-" if r["roi"] is None or not math.isfinite(r["roi"]) else f"{r['roi']:+.2f}",
                )
            )
            + "</tr>"
        )
    return f"<table class='report'>{head}{''.join(body)}</table>"


def write_report(table: pd.DataFrame, meta: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``incrementality.json`` and ``incrementality.html`` into ``out``."""
    import plotly.io as pio

    out.mkdir(parents=True, exist_ok=True)
    doc = report_json(table, meta)
    jpath = out / "incrementality.json"
    jpath.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Incrementality report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table.report{border-collapse:collapse;"
        "font-size:13px}table.report td,table.report th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}table.report td:first-child{text-align:left}</style></head><body>",
        "<h1>Incrementality vs the program holdout</h1>",
        "<p>"
        + html.escape(
            f"source: {meta.get('source')}; window: {meta.get('window_days')} days after each "
            f"send; margin rate {meta.get('margin_rate')}; treated units "
            f"{meta.get('n_treated_units')}, held-out units {meta.get('n_holdout_units')}. "
            "Differences are post-stratified on campaign x lifecycle stage x prior activity; "
            "intervals are 95 %. ROI = (incremental margin - cost) / cost."
        )
        + "</p>",
    ]
    first = True
    for dim in [d for d in _LABELS if d in set(table["dimension"])]:
        parts.append(f"<h2>{html.escape(_LABELS[dim])}</h2>")
        if dim != "all":
            for outcome in ("conversion", "spend"):
                t = table.loc[table["dimension"] == dim, f"diff_{outcome}"]
                if t.notna().any():
                    fig = interval_figure(table, dim, outcome)
                    parts.append(pio.to_html(fig, include_plotlyjs=first, full_html=False))
                    first = False
        parts.append(html_table(table, dim))
    parts.append("</body></html>")
    hpath = out / "incrementality.html"
    hpath.write_text("\n".join(parts), encoding="utf-8")
    return jpath, hpath
