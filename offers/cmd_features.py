"""``offers features``: point-in-time member features of a data directory, to Parquet or CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.pipeline import (
    FeatureInputError,
    features_at,
    load_tables,
    member_features,
    resolve_categories,
    to_naive_utc,
    to_timestamp,
)
from features.pipeline.config import FeatureConfig
from features.pipeline.engines import ENGINES, connect, spark_memory
from features.pipeline.output import FeatureFileSummary, write_features
from features.sources.schema import TS
from offers.cli import check_memory_limit

console = Console()


def _load_config(path: Path | None) -> FeatureConfig:
    if path is None:
        return FeatureConfig()
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    return FeatureConfig.model_validate(data)


def render_summary(summary: FeatureFileSummary, out: Console = console) -> None:
    """Rows written, then type, nulls and null share of every column."""
    table = Table(title=f"{summary.rows:,} rows -> {summary.path}")
    for col in ("feature", "type", "nulls", "null %"):
        table.add_column(col, justify="left" if col in ("feature", "type") else "right")
    for name, typ in summary.types.items():
        nulls = summary.nulls[name]
        share = 100.0 * nulls / summary.rows if summary.rows else 0.0
        style = "yellow" if summary.rows and nulls == summary.rows else None
        table.add_row(name, typ, f"{nulls:,}", f"{share:.1f}", style=style)
    out.print(table)


def features(
    data: Annotated[Path, typer.Option("--data", help="data directory (.parquet/.csv tables)")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="features from events strictly before this (naive UTC)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="output file: .parquet or .csv")] = Path(
        "features.parquet"
    ),
    engine: Annotated[str, typer.Option(help=f"one of {', '.join(ENGINES)}")] = "duckdb",
    pairs: Annotated[
        Path | None,
        typer.Option(
            help="instead of --as-of: a .parquet/.csv of (member_id, time) pairs; each row's "
            "features as of its own time"
        ),
    ] = None,
    time_col: Annotated[str, typer.Option(help="time column of --pairs")] = "decision_time",
    config_file: Annotated[
        Path | None, typer.Option("--config", help="FeatureConfig as YAML or JSON")
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="DuckDB memory limit, e.g. 4GB (spills to a temp directory past it); on Spark the "
            "driver's memory",
            callback=check_memory_limit,
        ),
    ] = None,
    history_start: Annotated[
        str | None,
        typer.Option(
            help="first day the data covers ('auto': earliest transaction); tier points are "
            "annualised before a full tier window is covered"
        ),
    ] = None,
) -> None:
    """Compute member features and write them; the resolved config goes to <out>.config.json."""
    if (as_of is None) == (pairs is None):
        raise typer.BadParameter("give exactly one of --as-of and --pairs")
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise typer.BadParameter(f"{out}: suffix must be .parquet or .csv", param_hint="--out")
    try:
        config = _load_config(config_file)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"opening {data} on {engine}")
            if engine == "duckdb":
                con = connect(engine, memory_limit=memory_limit)
            elif memory_limit is not None:  # on Spark: the driver's memory, as train does
                con = connect(engine, driver_memory=spark_memory(memory_limit))
            else:
                con = connect(engine)
            tables = load_tables(data, con)
            if history_start is not None:
                start = (
                    tables.transactions[TS].min().execute()
                    if history_start == "auto"
                    else to_timestamp(history_start)
                )
                config = config.model_copy(update={"history_start": to_timestamp(start)})
            if pairs is not None:
                import pandas as pd

                frame = (
                    pd.read_parquet(pairs)
                    if pairs.suffix == ".parquet"
                    else pd.read_csv(pairs, dtype={"member_id": str})
                )
                before = to_naive_utc(frame[time_col]).max() if time_col in frame else None
                progress.update(task, description="resolving categories")
                config = resolve_categories(tables, config, before=before)
                expr = features_at(tables, frame, config, time_col=time_col)
            else:
                progress.update(task, description="resolving categories")
                config = resolve_categories(tables, config, before=as_of)
                expr = member_features(tables, as_of, config)
            progress.update(task, description="computing features")

            def rows_done(n: int) -> None:
                progress.update(task, description=f"computing and writing: {n:,} rows")

            summary = write_features(expr, out, on_rows=rows_done)
    except (FeatureInputError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from exc
    config_path = out.with_name(out.name + ".config.json")
    config_path.write_text(config.model_dump_json(indent=2))
    render_summary(summary)
    console.print(
        f"{summary.rows:,} rows x {len(summary.types)} columns in {summary.seconds:.1f} s; "
        f"config: {config_path}"
    )


def register(app: typer.Typer) -> None:
    app.command("features")(features)


__all__ = ["features", "register", "render_summary"]
