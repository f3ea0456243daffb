"""``offers score``: decisions for a whole campaign send, to Parquet or CSV (docs/batch.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console()
log = logging.getLogger(__name__)


class RateColumn(ProgressColumn):
    """Members per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- members/s" if speed is None else f"{speed:,.0f} members/s", style="cyan")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def score_command(
    campaign: Annotated[Path, typer.Option("--campaign", help="campaign YAML file")],
    data: Annotated[Path, typer.Option("--data", help="data directory (canonical tables)")],
    out: Annotated[Path, typer.Option("--out", help="decision file (.parquet or .csv)")],
    engine: Annotated[str, typer.Option("--engine", help="local or spark")] = "local",
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1)] = 100_000,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run")] = False,
    store_url: Annotated[
        str | None, typer.Option("--store", help="store URL (default: the serving settings')")
    ] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="do not record decisions")] = False,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri")] = None,
) -> None:
    """Score every member of DATA for the campaign: offers, value parts, explanations, decision
    ids and exploration probabilities, budgets respected over the whole send."""
    from features.catalog.model import CatalogError, load_catalog
    from serving.batch import (
        DEFAULT_MODELS,
        CampaignError,
        ResumeError,
        ScorerError,
        SendPlan,
        load_campaign,
        load_scorer,
        run_local,
        scorer_feature_config,
    )
    from serving.batch.local import parts_dir
    from serving.batch.output import OutputFormatError, output_format
    from serving.engine import EngineInputError

    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"{engine!r} is not one of local, spark", param_hint="--engine")
    try:
        output_format(out)
        camp = load_campaign(campaign)
        catalog = load_catalog(camp.catalog or data / "catalog.yaml")
        plan = SendPlan.create(camp, catalog)
        scorer = load_scorer(camp.models or DEFAULT_MODELS, tracking_uri)
        if hasattr(scorer, "uncertainty_z"):  # the campaign engine's lower confidence bound
            scorer.uncertainty_z = plan.engine.settings.scoring.uncertainty_z
        feature_config = scorer_feature_config(scorer)
    except (CampaignError, CatalogError, OutputFormatError, ScorerError, EngineInputError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    pdir = parts_dir(out)
    pdir.mkdir(parents=True, exist_ok=True)
    feats = pdir / "features.parquet"
    if not (resume and feats.is_file()):
        from features.pipeline.output import write_member_snapshot

        with console.status(f"member features as of {camp.send_date}"):
            n = write_member_snapshot(data, camp.send_date, feats, feature_config)
        source = "the uplift model's" if feature_config is not None else "the default"
        console.print(f"{n:,} members to score (features with {source} configuration)")
    store = None
    if not no_store:
        from serving.settings import Settings
        from serving.store import open_store

        store = open_store(store_url or Settings().database_url())
    events = None
    try:
        from features.pipeline import load_tables
        from serving.batch.history import with_store_grants

        events = with_store_grants(load_tables(data).offer_events.to_pandas(), store)
        if engine == "local":
            import pyarrow.parquet as pq

            total = pq.ParquetFile(feats).metadata.num_rows
            with _progress() as progress:
                task = progress.add_task(f"scoring {camp.campaign_id}", total=total)
                result = run_local(
                    camp,
                    plan,
                    scorer,
                    feats,
                    out,
                    chunk_size,
                    resume,
                    store,
                    events,
                    on_chunk=lambda _k, done: progress.update(task, completed=done),
                )
        else:
            from features.pipeline.engines import spark_session
            from serving.batch.spark import run_spark

            with console.status("scoring on Spark"):
                result = run_spark(
                    spark_session(),
                    camp,
                    plan,
                    scorer,
                    feats,
                    out,
                    store,
                    events=events,
                    resume=resume,
                )
    except (ResumeError, EngineInputError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    finally:
        if store is not None:
            store.close()
    _summary(result, plan, out)


def _summary(result, plan, out: Path) -> None:
    t = Table(title=f"{result.rows:,} rows for {result.members:,} members -> {out}")
    t.add_column("budget")
    t.add_column("price", justify="right")
    t.add_column("used", justify="right")
    t.add_column("limit", justify="right")
    o = plan.engine.offers
    for j, oid in enumerate(o.ids):
        lim = plan.budget_left[j]
        if lim == lim and lim != float("inf"):
            price = (result.prices or {}).get(f"offer:{oid}", 0.0)
            t.add_row(oid, f"{price:.3g}", f"{result.budget_used[j]:,.1f}", f"{lim:,.1f}")
    if plan.total_money is not None:
        price = (result.prices or {}).get("total_money", 0.0)
        t.add_row(
            "total_money", f"{price:.3g}", f"{result.money_used:,.1f}", f"{plan.total_money:,.1f}"
        )
    console.print(t)
    console.print(
        json.dumps(
            {
                "chunks": result.chunks,
                "resumed_chunks": result.resumed_chunks,
                "stored": result.stored,
            }
        )
    )


def register(app: typer.Typer) -> None:
    """Add ``offers score``."""
    app.command("score")(score_command)
