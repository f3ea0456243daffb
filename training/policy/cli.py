"""The ``--dataset`` branch of ``offers evaluate policy`` (the command only dispatches here)."""

from __future__ import annotations

import json
import logging
import warnings

import typer
from rich.console import Console

from training.policy.randomized import PolicyInputError
from training.policy.run import parse_settings, render_markdown, run_dataset

__all__ = ["evaluate_dataset"]

log = logging.getLogger(__name__)


def evaluate_dataset(dataset: str, items: list[str] | None, seed: int, as_json: bool) -> None:
    """Run the evaluation on a randomised real data set; print JSON or Markdown tables.

    Bad settings exit with code 1 and a message naming the setting and its value.
    """
    console = Console(stderr=True)
    try:
        settings = parse_settings(dataset, items)
    except PolicyInputError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    with console.status(f"policy evaluation on {dataset}") as status, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peers' FutureWarnings would bury the progress line
        try:
            report = run_dataset(
                dataset, settings, seed, progress=lambda msg: status.update(f"policy: {msg}")
            )
        except PolicyInputError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    typer.echo(render_markdown(report))
