"""``offers benchmark uplift``: our uplift learners beside CausalML and scikit-uplift.

``--dataset simulated`` runs on the simulated program (simulated in memory with ``--members``
and ``--sim-seed``, or read from ``--sim-data DIR`` written by ``offers simulate``), whose true
effects are known: each result row then also has ``truth_corr``, ``ate_error`` and ``ate_true``
(see ``training.uplift.simulated``).
"""

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
    simulated = "simulated"


class BaseLearner(StrEnum):
    lightgbm = "lightgbm"
    hgb = "hgb"


def render_report(report: dict, out: Console = console) -> None:
    """One table of mean (std) Qini, AUUC and uplift@30 per model, then ours vs best peer."""
    from training.uplift.benchmark import best_by_library

    table = Table(
        title=f"{report['dataset']}: {report['n_splits']} splits, base {report['base_learner']}"
    )
    truth = any("truth_corr" in r for r in report["results"])
    columns = ["treatment", "outcome", "library", "learner", "qini", "auuc", "uplift@30", "fit s"]
    if truth:
        columns += ["truth corr", "ATE error", "true ATE"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("treatment", "outcome") else "right")
    for r in report["results"]:
        cells = [
            r["treatment"],
            r["outcome"],
            r["library"],
            r["learner"],
            f"{r['qini']:.4f} ({r['qini_std']:.4f})",
            f"{r['auuc']:.4f} ({r['auuc_std']:.4f})",
            _num(r["uplift@30"]),
            f"{r['fit_seconds']:.2f}",
        ]
        if truth:
            cells += [
                f"{_num(r.get('truth_corr'))} ({_num(r.get('truth_corr_std'))})",
                f"{_num(r.get('ate_error'))} ({_num(r.get('ate_error_std'))})",
                _num(r.get("ate_true")),
            ]
        table.add_row(*cells)
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


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


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
    members: Annotated[
        int, typer.Option(min=100, help="simulated: members of the program simulated in memory")
    ] = 50_000,
    sim_seed: Annotated[int, typer.Option(help="simulated: seed of the simulation")] = 7,
    sim_data: Annotated[
        Path | None,
        typer.Option(help="simulated: a program written by `offers simulate` (with truth/)"),
    ] = None,
) -> None:
    """Fit every library's uplift learners on the same splits and score them with our metrics."""
    from training.uplift.benchmark import (
        BenchmarkConfig,
        PeerLibraryMissing,
        planned_fits,
        planned_models,
        run_benchmark,
    )
    from training.uplift.datasets import load_dataset

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
        planned_models(config)  # fails early when a peer library is missing
        truth = None
        if dataset is Dataset.simulated:
            from training.uplift.simulated import simulated_benchmark_data

            with err_console.status("simulated program: training set and true effects"):
                data, truth = simulated_benchmark_data(sim_data, members=members, seed=sim_seed)
        else:
            data = load_dataset(dataset.value, data_dir)
    except PeerLibraryMissing as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    except (ValueError, FileNotFoundError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc

    total = planned_fits(data, config)
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
            data,
            config,
            progress=lambda what: bar.update(task, advance=1, description=what),
            truth=truth,
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
