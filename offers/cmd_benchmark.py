"""``offers benchmark uplift``: our uplift learners beside CausalML and scikit-uplift."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class Dataset(StrEnum):
    hillstrom = "hillstrom"
    starbucks = "starbucks"


class BaseLearner(StrEnum):
    lightgbm = "lightgbm"
    hgb = "hgb"


def render_report(report: dict, out: Console = console) -> None:
    """One table of mean (std) Qini, AUUC and uplift@30 per model, then ours vs best peer."""
    from training.uplift_benchmark import best_by_library

    table = Table(
        title=f"{report['dataset']}: {report['n_splits']} splits, base {report['base_learner']}"
    )
    for col in ("treatment", "outcome", "library", "learner", "qini", "auuc", "uplift@30", "fit s"):
        table.add_column(col, justify="left" if col in ("treatment", "outcome") else "right")
    for r in report["results"]:
        table.add_row(
            r["treatment"],
            r["outcome"],
            r["library"],
            r["learner"],
            f"{r['qini']:.4f} ({r['qini_std']:.4f})",
            f"{r['auuc']:.4f} ({r['auuc_std']:.4f})",
            f"{r['uplift@30']:.4f}",
            f"{r['fit_seconds']:.2f}",
        )
    out.print(table)
    for b in best_by_library(report):
        if b["peer"] is None:
            continue
        verdict = "[green]ours >= peer[/]" if b["ours_wins"] else "[red]peer ahead[/]"
        out.print(
            f"{b['treatment']} / {b['outcome']}: ours {b['ours']['learner']} "
            f"{b['ours']['qini']:.4f} vs {b['peer']['library']} {b['peer']['learner']} "
            f"{b['peer']['qini']:.4f}: {verdict}"
        )


def uplift(
    dataset: Annotated[Dataset, typer.Option(help="benchmark data set")] = Dataset.hillstrom,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    splits: Annotated[int, typer.Option(min=1, help="seeded stratified splits")] = 5,
    test_size: Annotated[float, typer.Option(help="test share of each split")] = 0.3,
    seed: Annotated[int, typer.Option(help="seed of the splits and base learners")] = 0,
    base_learner: Annotated[
        BaseLearner, typer.Option(help="gradient-boosting library for every learner")
    ] = BaseLearner.lightgbm,
    base_params: Annotated[
        str | None,
        typer.Option(
            help='JSON object overriding base learner settings, e.g. {"n_estimators": 50}'
        ),
    ] = None,
    libraries: Annotated[
        str, typer.Option(help="comma-separated: ours, causalml, sklift")
    ] = "ours,causalml,sklift",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="folder with hillstrom/ and starbucks/ (default ../shared/data)"),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="also write the JSON report here")] = None,
) -> None:
    """Fit every library's uplift learners on the same splits and score them with our metrics."""
    from training.uplift_benchmark import (
        BenchmarkConfig,
        PeerLibraryMissing,
        planned_models,
        run_benchmark,
    )
    from training.uplift_datasets import load_dataset

    try:
        params = json.loads(base_params) if base_params else None
        config = BenchmarkConfig(
            n_splits=splits,
            test_size=test_size,
            seed=seed,
            base_learner=base_learner.value,
            base_params=params,
            libraries=tuple(s.strip() for s in libraries.split(",") if s.strip()),
        )
        n_models = len(planned_models(config))
        data = load_dataset(dataset.value, data_dir)
    except PeerLibraryMissing as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    except (ValueError, FileNotFoundError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc

    total = splits * len(data.treatments) * len(data.outcomes) * n_models
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{dataset.value}: fitting", total=total)
        report = run_benchmark(
            data, config, progress=lambda what: bar.update(task, advance=1, description=what)
        )
    text = json.dumps(report, indent=2)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    if as_json:
        typer.echo(text)
    else:
        render_report(report)


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command group (``offers benchmark uplift``)."""
    group = typer.Typer(help="Benchmarks against peer libraries.", no_args_is_help=True)
    group.command("uplift")(uplift)
    app.add_typer(group, name="benchmark")
