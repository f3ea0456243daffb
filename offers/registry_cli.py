"""CLI pieces shared by the commands that train and register models (affinity, uplift)."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = [
    "PolicyGateOpt",
    "TrackingUriOpt",
    "fail",
    "gate_verdict",
    "policy_line",
    "quiet_mlflow",
    "use_policy_gate",
]

_err = Console(stderr=True)

TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite under OFFERS_HOME)"
    ),
]


PolicyGateOpt = Annotated[
    bool,
    typer.Option(
        "--policy-gate/--no-policy-gate",
        help="also require the policy's doubly-robust value on the latest logged campaign to be "
        "no more than one standard error below the champion's (training.policy.gate)",
    ),
]


def use_policy_gate(registry: Any, data: Any, enabled: bool) -> None:
    """Give ``registry`` the off-policy check on ``data`` (when ``enabled``)."""
    if enabled:
        from training.policy.gate import PolicyCheck

        registry.policy_check = PolicyCheck(data)


def policy_line(decision: Any) -> str | None:
    """The off-policy check's line for people, or None when it did not run."""
    policy = getattr(decision, "policy", None)
    if not policy:
        return None
    return f"policy gate ({'passed' if policy['passed'] else 'failed'}): {policy['reason']}"


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
