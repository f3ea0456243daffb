"""``offers evaluate policy``: what ships (models trained by ``offers train``'s code, loaded by
serving's loader, decided through the one adapter and the engine) against affinity top-k,
random and the oracle on a simulated program (``training.policy.simulated``), or the engine's
send policy on randomised real data (``--dataset``, ``training.policy``).

Output (``--json``): ``{"policies": {"engine": {"true_incremental_value", "spend",
"redemptions", ..., "off_policy": {"truth", "ips", "snips", "dr", ...}}, "affinity_top_k": ...,
"random": ..., "oracle": ..., "random_at_engine_spend": ..., "oracle_at_engine_spend": ...,
with --observable-bound "observable_oracle_at_engine_spend": ...}, "ratios": ..., "setup": ...,
"models": ..., "off_policy_setup": ..., "diagnostics": {..., "level_errors": ...}}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from offers.cli import CalibrationPairs, evaluate_group

__all__ = ["evaluate_policy", "register"]

log = logging.getLogger(__name__)
console = Console(stderr=True)


# ---- CLI ---------------------------------------------------------------------------------------
def evaluate_policy(
    data: Annotated[
        Path | None, typer.Option("--data", help="a simulated program (offers simulate)")
    ] = None,
    channel: Annotated[str, typer.Option(help="channel of the send")] = "email",
    k: Annotated[int, typer.Option(min=1, help="offers per member")] = 1,
    budget_scale: Annotated[
        float | None,
        typer.Option(help="catalog budgets x this (default: members / 1,000,000)"),
    ] = None,
    match_spend: Annotated[
        bool, typer.Option(help="cap the engine's total expected cost at affinity top-k's")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the model fits")] = 0,
    als_trials: Annotated[int, typer.Option(min=1, help="ALS configurations tried")] = 1,
    trees: Annotated[
        int | None, typer.Option(min=10, help="boosting rounds of the uplift learner")
    ] = None,
    observable_bound: Annotated[
        bool,
        typer.Option(
            help="also the observable oracle: trees fitted to the truth on what the program "
            "observes, allocated within the engine's spend (minutes at 150k members)"
        ),
    ] = False,
    level_by_campaign: Annotated[
        bool,
        typer.Option(
            help="uplift levels measured campaign by campaign (UpliftTrainSettings."
            "level_by_campaign; docs/engine.md)"
        ),
    ] = False,
    calibration_pairs: Annotated[
        CalibrationPairs,
        typer.Option(
            help="the affinity model's P(redeem) calibration pairs (EvalSettings."
            "calibration_pairs; docs/engine.md)"
        ),
    ] = CalibrationPairs.held,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    dataset: Annotated[
        str | None,
        typer.Option(help="randomised real data instead: hillstrom, starbucks or open-bandit"),
    ] = None,
    dataset_set: Annotated[
        list[str] | None,
        typer.Option("--set", help="--dataset setting KEY=VALUE (docs/benchmarks.md)"),
    ] = None,
) -> None:
    """What ships vs affinity top-k, random and oracle on a simulated program.

    True values of a send at the data end, and off-policy estimates (IPS, SNIPS, DR) from the
    logged campaigns next to the truth. With --dataset: the engine's send policy valued on a
    randomised real data set (training.policy).
    """
    if dataset is not None:
        from training.policy.cli import evaluate_dataset

        evaluate_dataset(dataset, dataset_set, seed, as_json)
        return
    if data is None:
        console.print("[red]error:[/] --data (a simulated program) or --dataset is required")
        raise typer.Exit(code=1)
    if not (data / "truth").is_dir():
        console.print(f"[red]error:[/] {data}/truth not found: needs `offers simulate --out`")
        raise typer.Exit(code=1)
    from training.policy.simulated import run_policy_evaluation

    with _stdout_to_stderr(), console.status("policy evaluation") as status:
        report = run_policy_evaluation(
            data, channel, k, budget_scale, match_spend, seed, als_trials, trees,
            step=lambda msg: status.update(f"policy evaluation: {msg}"),
            observable_bound=observable_bound, level_by_campaign=level_by_campaign,
            calibration_pairs=CalibrationPairs(calibration_pairs).value,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    _print(report)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 to 2 meanwhile (DuckDB draws its progress
    bars on the process' stdout, which must hold only the report)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Policies on {report['setup']['members']:,} members (truth)")
    for col in ("policy", "true value", "spend", "redemptions", "sends", "OPE truth", "IPS",
                "SNIPS", "DR"):  # fmt: skip
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, r in report["policies"].items():
        ope = r.get("off_policy", {})
        table.add_row(
            name, f"{r['true_incremental_value']:,.0f}", f"{r['spend']:,.0f}",
            f"{r['redemptions']:,.0f}", f"{r['sends']:,}",
            *(f"{ope[x]:.3f}" if x in ope else "-" for x in ("truth", "ips", "snips", "dr")),
        )  # fmt: skip
    Console().print(table)
    Console().print(report["ratios"])


def register(app: typer.Typer) -> None:
    """Add ``evaluate policy`` (under a shared ``evaluate`` group) to ``app``."""
    evaluate_group(app).command("policy")(evaluate_policy)
