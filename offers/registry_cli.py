"""CLI pieces shared by the commands that train and register models (affinity, uplift)."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["TrackingUriOpt", "fail", "gate_verdict", "quiet_mlflow"]

_err = Console(stderr=True)

TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite under OFFERS_HOME)"
    ),
]


def fail(message: str) -> None:
    """Print an error and exit 1."""
    _err.print(f"[red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code=1)


def quiet_mlflow() -> None:
    """No artifact progress bars or info logs from MLflow in CLI output."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def gate_verdict(version: Any, decision: Any) -> str:
    """One line: the new version, whether the gate promoted it, and why."""
    verdict = (
        "[green]promoted to champion[/]" if decision.promoted else "[yellow]kept as challenger[/]"
    )
    return f"v{version}: {verdict}: {decision.reason}"
