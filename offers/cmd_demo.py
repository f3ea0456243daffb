"""``offers demo``: the whole product end to end on the embedded defaults.

simulate a loyalty program -> validate -> summary -> member feature snapshot -> train the
affinity and uplift models (small settings) -> register and promote them in the local MLflow
store under ``OFFERS_HOME`` -> serve the API on 127.0.0.1:8000 -> send the requests e-mail
tooling, a checkout and a feedback client would send, printing each response -> keep serving
until Ctrl-C (``--no-serve``: stop after the samples).

Re-running on the same ``OFFERS_HOME`` replaces the data and the snapshot, registers new model
versions (promoted to champion) and reuses the store and the demo API key.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from features.settings import DataSettings
from features.sources.summary import summarize
from features.sources.validate import validate_dir
from offers.cmd_data import render_validation

console = Console()

DEMO_KEY_FILE = "demo_api_key"
KEYS_FILE = "api_keys.json"


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


def demo_key(home: Path) -> str:
    """The demo API key (all scopes): reused from ``OFFERS_HOME/demo_api_key`` or created there
    (mode 0600); ``OFFERS_HOME/api_keys.json`` holds only its SHA-256 for ``offers serve``."""
    from serving.auth import hash_key
    from serving.settings import SCOPES

    home.mkdir(parents=True, exist_ok=True)
    path = home / DEMO_KEY_FILE
    key = path.read_text().strip() if path.exists() else ""
    if not key:
        key = "demo-" + secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    (home / KEYS_FILE).write_text(json.dumps({f"sha256:{hash_key(key)}": list(SCOPES)}, indent=2))
    return key


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _timed(label: str, t0: float) -> None:
    console.print(f"[bold]{label}[/] ({time.perf_counter() - t0:.1f} s)")


def _summary(tables: dict, frame: pd.DataFrame) -> None:
    stages = frame.set_index("member_id")["lifecycle_stage"]
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


def serve_command(home: Path, tracking_uri: str, catalog: Path, snapshot: Path, port: int) -> str:
    """The shell command that serves the demo's models again without the demo."""
    from serving.api.modelset import DEFAULT_MODELS

    env = {
        "OFFERS_HOME": home,
        "OFFERS_API_KEYS_FILE": home / KEYS_FILE,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OFFERS_MODELS": json.dumps(DEFAULT_MODELS, separators=(",", ":")),
        "OFFERS_CATALOG": catalog,
        "OFFERS_MEMBER_FEATURES": snapshot,
    }
    assigns = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    return f"{assigns} offers serve --port {port}"


def _how_to(url: str, key: str, home: Path, member: str, serve_cmd: str) -> None:
    console.print(
        f"[bold]demo API key[/] (all scopes; kept in {home / DEMO_KEY_FILE}): {key}",
        soft_wrap=True,
    )
    console.print("try:", soft_wrap=True)
    console.print(
        f"  curl -H 'X-API-Key: {key}' '{url}/v1/members/{member}/offers?k=3'", soft_wrap=True
    )
    console.print(f"  open {url}/docs   (OpenAPI)", soft_wrap=True)
    console.print(f"  open {url}/ui     (program page: sign in with the key above)", soft_wrap=True)
    console.print("later, without the demo:", soft_wrap=True)
    console.print(f"  {serve_cmd}", soft_wrap=True, markup=False, highlight=False)


def _data_and_snapshot(members: int, seed: int, data_dir: Path, snapshot: Path) -> pd.DataFrame:
    """Simulate, validate, write the member feature snapshot and print the summary."""
    from features.sim.simulate import simulate
    from offers.demo_pipeline import write_snapshot

    t0 = time.perf_counter()
    with console.status(f"simulating {members:,} members (seed {seed})"):
        program = simulate(n_members=members, seed=seed)
        program.write(data_dir)
    _timed(f"simulated {members:,} members -> {data_dir}", t0)

    with console.status("validating"):
        result = validate_dir(data_dir)
    render_validation(result)
    if not result.ok:
        raise typer.Exit(code=1)

    tables = result.tables
    end = tables["transactions"]["ts"].max().normalize() + pd.Timedelta(days=1)
    t0 = time.perf_counter()
    with console.status("computing member features as of the end of the data"):
        frame = write_snapshot(data_dir, end, snapshot)
    _timed(f"member feature snapshot as of {end.date()} -> {snapshot}", t0)
    _summary(tables, frame)
    return frame


def _train(data_dir: Path, home: Path, uri: str, members: int, seed: int) -> dict:
    """Train, register and promote both models; print what the gates did."""
    import mlflow  # noqa: F401  (mlflow sets its loggers up on import: quiet them after)

    from offers.demo_pipeline import train_and_promote
    from offers.registry_cli import fail, quiet_mlflow
    from training.affinity.evaluate import EvalInputError
    from training.uplift.fit import UpliftTrainError

    quiet_mlflow()
    t0 = time.perf_counter()
    try:
        with console.status("training") as status:
            trained = train_and_promote(data_dir, home, uri, seed=seed, step=status.update)
    except (EvalInputError, UpliftTrainError) as exc:
        fail(f"training on {members:,} simulated members failed: {exc} (try more --members)")
    for model in trained.values():
        how = "gate promoted it" if model.gate_promoted else "forced by the demo"
        value = f"{model.value:.4f}" if model.value is not None else "n/a"
        console.print(
            f"registered [bold]{model.name} v{model.version}[/] ({model.metric} {value}) -> "
            f"champion ({how}; gate: {model.gate_reason})"
        )
    _timed(f"trained and promoted both models in {uri}", t0)
    return trained


def demo(
    members: Annotated[
        int, typer.Option(help="members to simulate (the models need 500 or more)", min=500)
    ] = 10_000,
    seed: Annotated[int, typer.Option(help="simulation and training seed")] = 42,
    out: Annotated[
        Path | None, typer.Option(help="data directory (default: $OFFERS_HOME/data/demo)")
    ] = None,
    host: Annotated[str, typer.Option(help="address to serve on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on", min=1, max=65535)] = 8000,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="keep serving after the samples")
    ] = True,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: sqlite under OFFERS_HOME)"),
    ] = None,
) -> None:
    """Simulate, train, register, serve and call the API: the whole product on one machine."""
    from offers.demo_pipeline import local_tracking_uri
    from offers.demo_requests import DemoClient, run_samples
    from offers.demo_server import DemoServer, DemoServerError, check_port
    from offers.registry_cli import fail
    from serving.api.modelset import DEFAULT_MODELS
    from serving.settings import SCOPES, Settings

    started = time.perf_counter()
    data = DataSettings()
    home = data.home
    data_dir = out or data.demo_data_dir
    snapshot = home / "features" / "member_features.parquet"
    try:
        check_port(host, port)  # fail before the work, not after
    except DemoServerError as exc:
        fail(str(exc))

    frame = _data_and_snapshot(members, seed, data_dir, snapshot)
    uri = tracking_uri or local_tracking_uri(home)
    _train(data_dir, home, uri, members, seed)

    key = demo_key(home)
    settings = Settings(
        data={"home": home},
        registry={"mlflow_tracking_uri": uri},
        serving={
            "models": DEFAULT_MODELS,
            "api_keys": {key: list(SCOPES)},
            "catalog": data_dir / "catalog.yaml",
            "member_features": snapshot,
        },
    )
    server = DemoServer(settings, host, port)
    t0 = time.perf_counter()
    try:
        with console.status(f"starting the API on {server.url} (models, snapshot, store)"):
            server.start()
    except DemoServerError as exc:
        fail(str(exc))
    store = settings.database_url().split("://", 1)[0]
    _timed(f"serving on {server.url} (store: {store})", t0)

    ids = sorted(frame["member_id"].astype(str))
    samples = None
    try:
        samples = run_samples(DemoClient(server.url, key), ids, console)
        console.rule()
        served = ", ".join(f"{k} v{v}" for k, v in sorted(samples.model_versions.items()))
        console.print(f"models served: {served}")
        console.print(
            "duplicate event stored once: "
            + ("[green]yes[/]" if samples.duplicate_stored_once else "[red]no[/]")
        )
        serve_cmd = serve_command(home, uri, settings.catalog_path(), snapshot, port)
        _how_to(server.url, key, home, ids[0], serve_cmd)
        console.print(f"[bold]demo ready[/] in {time.perf_counter() - started:.1f} s")
        if not samples.ok:
            console.print("[red]some sample requests failed (see above)[/]")
        if serve:
            signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
            console.print(f"serving on {server.url}: press Ctrl-C to stop")
            server.wait()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.stop()
    console.print("server stopped")
    if samples is None or not samples.ok or not samples.duplicate_stored_once:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
