"""``offers report incrementality``: what each offer, moment, stage and campaign earned over the
program holdout, as JSON and HTML, logged to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from offers.cli import command_group
from offers.registry_cli import TrackingUriOpt, fail, quiet_mlflow

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
out = Console()

EXPERIMENT = "offers-reports"


def report_incrementality(
    out_dir: Annotated[Path, typer.Option("--out", help="directory for the JSON and HTML")],
    data: Annotated[
        Path | None, typer.Option(help="canonical data directory (offer_events with held_out)")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="serving store URL (sqlite:///... or postgresql://...)")
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="catalog YAML (default: DIR/catalog.yaml, or $OFFERS_CATALOG with --store)"
        ),
    ] = None,
    window_days: Annotated[float, typer.Option(help="outcome window after each send")] = 14.0,
    margin_rate: Annotated[float, typer.Option(help="gross margin share of spend")] = 0.30,
    tracking_uri: TrackingUriOpt = None,
    mlflow_log: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="log both files as MLflow artifacts")
    ] = True,
) -> None:
    """Treated vs program holdout per offer, moment, lifecycle stage and campaign: conversion
    and spend differences with 95 % intervals, incremental margin, cost, ROI, redemption rate.
    With --store and --data, the store's decisions are the sends and DIR's transactions the
    outcomes."""
    from serving.reports import IncrementalityError, incrementality, unit_outcomes, write_report
    from serving.reports.sources import from_data_dir, from_store

    if data is None and store is None:
        fail("give --data DIR or --store URL")
    try:
        if store is not None:
            from serving.settings import Settings
            from serving.store import open_store

            cat = catalog or Settings().catalog_path()
            st = open_store(store, migrate_schema=False)
            try:
                inputs = from_store(st, cat, data=data)
            finally:
                st.close()
            source = "store"
        else:
            assert data is not None
            inputs = from_data_dir(data, catalog)
            source = f"data:{data}"
        units = unit_outcomes(inputs, window_days)
        table = incrementality(inputs, window_days, margin_rate, units=units)
    except (IncrementalityError, OSError) as exc:
        fail(str(exc))
        return
    meta = {
        "source": source,
        "window_days": window_days,
        "margin_rate": margin_rate,
        "n_treated_units": int(units.loc[units["treated"], "unit"].nunique()),
        "n_holdout_units": int((~units["treated"]).sum()),
    }
    jpath, hpath = write_report(table, meta, out_dir)
    allrow = table.loc[table["dimension"] == "all"].iloc[0] if len(table) else None
    if allrow is not None and allrow["ci_conversion"][0] is not None:
        lo, hi = allrow["ci_conversion"]
        out.print(
            f"all sends: conversion {100 * allrow['diff_conversion']:+.2f} pp "
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] vs holdout ({meta['n_holdout_units']:,} units)"
        )
    out.print(f"wrote {jpath} and {hpath}")
    if mlflow_log:
        _log_mlflow(tracking_uri, [jpath, hpath], meta, allrow)


def _log_mlflow(
    tracking_uri: str | None, paths: list[Path], meta: dict, allrow: pd.Series | None
) -> None:
    quiet_mlflow()
    import mlflow

    from serving.settings import Settings

    uri = tracking_uri or Settings().tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="incrementality") as run:
        mlflow.log_params(
            {k: v for k, v in meta.items() if k != "source"} | {"source": meta["source"][:200]}
        )
        if allrow is not None:
            for k in ("diff_conversion", "diff_spend", "roi", "redemption_rate"):
                v = allrow[k]
                if v is not None and v == v:
                    mlflow.log_metric(k, float(v))
        for p in paths:
            mlflow.log_artifact(str(p), artifact_path="incrementality")
    out.print(f"logged to MLflow ({uri}): run {run.info.run_id}")


def register(app: typer.Typer) -> None:
    group = command_group(app, "report", "Reports for program managers (incrementality).")
    group.command("incrementality")(report_incrementality)
