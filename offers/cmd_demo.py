"""``offers demo``: the main job end to end on the embedded defaults.

For now: simulate a loyalty program -> validate it -> print a summary. Later stages (features,
training, registry, serving) join here as they land.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from features.settings import get_settings
from features.summary import summarize
from features.validate import validate_dir
from offers.cmd_data import render_validation

console = Console()


def _frame_table(title: str, df: pd.DataFrame | pd.Series, fmt: str = "{:,}") -> Table:
    if isinstance(df, pd.Series):
        df = df.to_frame(df.name or "count")
    table = Table(title=title)
    table.add_column(str(df.index.name or ""))
    for col in df.columns:
        table.add_column(str(col), justify="right")
    formats = ["{:.3f}" if pd.api.types.is_float_dtype(df[c]) else fmt for c in df.columns]
    for idx, *values in df.itertuples(name=None):
        table.add_row(str(idx), *(f.format(v) for f, v in zip(formats, values, strict=True)))
    return table


def _lifecycle(data_dir: Path, as_of: pd.Timestamp) -> pd.Series:
    """Lifecycle stage per member from the feature pipeline, as of the end of the data."""
    from features.pipeline import load_tables, member_features

    feats = member_features(load_tables(data_dir), as_of)
    df = feats.select("member_id", "lifecycle_stage").to_pandas()
    return df.set_index("member_id")["lifecycle_stage"]


def demo(
    members: Annotated[int, typer.Option(help="members to simulate", min=100)] = 10_000,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 42,
    out: Annotated[
        Path | None, typer.Option(help="data directory (default: $OFFERS_HOME/data/demo)")
    ] = None,
) -> None:
    """Simulate a program, validate it and print who the members are and how offers did."""
    from features.simulate import simulate

    data_dir = out or get_settings().demo_data_dir
    t0 = time.perf_counter()
    with console.status(f"simulating {members:,} members (seed {seed})"):
        program = simulate(n_members=members, seed=seed)
        program.write(data_dir)
    console.print(
        f"[bold]simulated[/] {members:,} members -> {data_dir} ({time.perf_counter() - t0:.1f} s)"
    )

    with console.status("validating"):
        result = validate_dir(data_dir)
    render_validation(result)
    if not result.ok:
        raise typer.Exit(code=1)

    tables = result.tables
    end = tables["transactions"]["ts"].max().normalize() + pd.Timedelta(days=1)
    with console.status("computing member features as of the end of the data"):
        stages = _lifecycle(data_dir, end)
    summary = summarize(tables, lifecycle=stages)
    console.print(
        _frame_table("members by tier and lifecycle stage", summary["members_by_tier_and_stage"])
    )
    console.print(_frame_table("offers by kind", summary["offers_by_kind"]))
    console.print(_frame_table("redemption by offer kind", summary["redemption_by_kind"]))
    console.print(
        _frame_table(
            "campaigns: treated vs control, bought within 14 days", summary["conversion_by_arm"]
        )
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
