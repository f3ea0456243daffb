"""``offers simulate``: write a seeded synthetic loyalty program (tables, catalog, truth)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()

_STEPS = ("members", "purchases", "campaigns", "tiers and points", "tables", "ground truth")


def simulate_cmd(
    out: Annotated[Path, typer.Option("--out", help="directory to write the program to")],
    members: Annotated[int, typer.Option("--members", help="number of members", min=1)] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same bytes)")] = 42,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="offer catalog YAML (default: the example)")
    ] = None,
    difficulty: Annotated[
        str,
        typer.Option(
            "--difficulty",
            help="easy (every send helps; the original program), realistic (calibrated to "
            "real data: small persuasion, harm, fatigue) or hard (half the persuasion, twice "
            "the harm); see docs/simulator.md",
        ),
    ] = "easy",
) -> None:
    """Simulate a loyalty program with known ground truth and write it to OUT."""
    from features.catalog.model import CatalogError
    from features.sim.config import difficulty as level
    from features.sim.simulate import SimConfig, simulate

    try:
        cfg = SimConfig(catalog_path=catalog, difficulty=level(difficulty))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--difficulty") from None
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]simulate[/] {task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=len(_STEPS) + 1)

        def step(name: str) -> None:
            bar.update(task, description=name, completed=_STEPS.index(name))

        try:
            program = simulate(n_members=members, seed=seed, config=cfg, progress=step)
        except CatalogError as exc:
            console.print("[red]catalog errors:[/]")
            for line in exc.errors:
                console.print(f"  {line}", markup=False, highlight=False)
            raise typer.Exit(code=1) from None
        bar.update(task, description="writing", completed=len(_STEPS))
        program.write(out)
    n = {k: len(v) for k, v in program.tables().items()}
    console.print(
        f"wrote {out}: {n['members']:,} members, {n['offers']:,} offers, "
        f"{n['transactions']:,} transaction lines, {n['offer_events']:,} offer events "
        f"(seed {seed}, difficulty {difficulty}, {time.perf_counter() - t0:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
