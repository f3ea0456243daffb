"""``offers retrain``: the scheduled job closing the loop (training.loop.retrain).

export (with --store) -> member features as of now -> train affinity -> train uplift (each
registered and gated, the off-policy gate included) -> POST /v1/admin/reload (with --serve-url).
Exit codes: 0 a new champion promoted (and the service reloaded it), 3 every champion kept,
1 a step failed (named), 2 bad usage.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from offers.cli import CompareBpr, CompareBprOpt, check_memory_limit
from offers.registry_cli import PolicyGateOpt, TrackingUriOpt, fail, quiet_mlflow

__all__ = ["register", "retrain_cmd"]

console = Console(stderr=True)
out = Console()

DEFAULT_KEY_ENV = "OFFERS_ADMIN_KEY"


def retrain_cmd(
    data: Annotated[
        Path, typer.Option("--data", help="canonical data directory (offer_events merged into it)")
    ],
    store: Annotated[
        str | None,
        typer.Option(help="serving store URL to export from first (none: no export)"),
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="export only what happened at or after this time")
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="member features as of this time (naive UTC; default now)"),
    ] = None,
    features_out: Annotated[
        Path | None,
        typer.Option(
            help="member feature snapshot to write (default: the one the service reads, "
            "$OFFERS_MEMBER_FEATURES or $OFFERS_HOME/features/member_features.parquet)"
        ),
    ] = None,
    serve_url: Annotated[
        str | None,
        typer.Option(help="running service to reload at the end, e.g. http://127.0.0.1:8000"),
    ] = None,
    api_key_env: Annotated[
        str,
        typer.Option(
            help="environment variable holding an API key with the admin scope (for the reload; "
            "never given on the command line)"
        ),
    ] = DEFAULT_KEY_ENV,
    tracking_uri: TrackingUriOpt = None,
    policy_gate: PolicyGateOpt = True,
    min_delta: Annotated[
        float,
        typer.Option(
            help="metric gates: promote when the challenger beats the champion's NDCG / Qini by "
            "more than this (negative: a fresher model may be this much worse; the policy gate "
            "still applies)"
        ),
    ] = 0.0,
    als_trials: Annotated[int, typer.Option(min=1, help="affinity: ALS configurations")] = 6,
    bpr_trials: Annotated[int, typer.Option(min=1, help="affinity: BPR configurations")] = 3,
    compare_bpr: CompareBprOpt = CompareBpr.auto,
    uplift_params: Annotated[
        str | None,
        typer.Option(help='uplift base learner settings as JSON, e.g. {"n_estimators": 50}'),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of both trainings")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="implicit threads (0 = all cores)")] = 1,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="memory limit of every step's DuckDB queries, e.g. 4GB (DuckDB spills past it)",
            callback=check_memory_limit,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Retrain from the service's own logs: export, features as of now, train and gate both
    models, promote, reload the service. Exit 0: promoted; 3: champions kept; 1: a step failed."""
    quiet_mlflow()
    import pandas as pd

    from serving.settings import Settings
    from training.affinity.search import SearchSettings
    from training.loop import RetrainSettings, retrain
    from training.registry import ModelRegistry
    from training.uplift.fit import UpliftTrainSettings

    if not data.is_dir():
        fail(f"--data {data}: not a directory")
    env = Settings()
    api_key = None
    if serve_url is not None:
        if api_key_env == DEFAULT_KEY_ENV:  # OFFERS_ADMIN_KEY: the tree's training section
            secret = env.training.admin_key
            api_key = None if secret is None else secret.get_secret_value()
        else:  # a variable the operator names on the command line: its name is not a setting
            api_key = os.environ.get(api_key_env)
        if not api_key:
            fail(f"--api-key-env: ${api_key_env} is not set (an API key with the admin scope)")
    try:
        params = json.loads(uplift_params) if uplift_params else None
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"--uplift-params must be a JSON object; got {uplift_params!r}")
        uplift = UpliftTrainSettings(base_params=params, seed=seed)
        search = SearchSettings(
            als_trials=als_trials,
            bpr_trials=bpr_trials,
            seed=seed,
            num_threads=threads,
            compare_bpr=CompareBpr(compare_bpr).value,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = RetrainSettings(
        data_dir=data,
        store_url=store,
        since=since,
        as_of=None if as_of is None else pd.Timestamp(as_of),
        features_out=features_out or env.features_path(),
        search=search,
        uplift=uplift,
        policy_gate=policy_gate,
        min_delta=min_delta,
        serve_url=serve_url,
        memory_limit=memory_limit,
    )
    registry = ModelRegistry(tracking_uri)
    result = retrain(settings, registry, api_key, say=lambda msg: console.log(msg))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "exit_code": result.exit_code,
                    "promoted": result.promoted,
                    "champions": result.champions,
                    "failed_step": result.failed_step,
                    "error": result.error,
                    "run_id": result.run_id,
                    "steps": [
                        {"name": s.name, "status": s.status, "seconds": s.seconds, **s.detail}
                        for s in result.steps
                    ],
                },
                default=str,
            )
        )
    else:
        t = Table(title=f"offers retrain (MLflow run {result.run_id})")
        for col in ("step", "status", "seconds", "detail"):
            t.add_column(col, justify="right" if col == "seconds" else "left")
        for s in result.steps:
            detail = s.detail.get("reason") or ", ".join(
                f"{k}={v}" for k, v in s.detail.items() if k != "reason"
            )
            t.add_row(s.name, s.status, f"{s.seconds:.1f}", str(detail)[:300])
        out.print(t)
        out.print(f"champions: {result.champions}; tracking: {registry.tracking_uri}")
    if result.failed_step is not None:
        console.print(
            f"[red]error:[/] step {result.failed_step} failed: {result.error}",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code=result.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``offers retrain`` to the CLI."""
    app.command("retrain")(retrain_cmd)
