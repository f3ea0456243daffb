"""One retraining job: export -> features -> train affinity -> train uplift -> reload.

The steps call the functions the single commands call (``offers export``, ``offers features``,
``offers train affinity``, ``offers train uplift``): the same training, registration and gates
(metric gate on the same test window, and with ``policy_gate`` the off-policy gate of
:mod:`training.policy.gate`), which promote a challenger to ``champion`` or keep the champion.
Then ``POST /v1/admin/reload`` on the running service, which loads the champions and the new
feature snapshot, and must answer with the versions just promoted.

MLflow: one parent run (``retrain``) with a nested run per step; the training steps' own
registration runs nest under their step.

Idempotent: the export adds no duplicates and leaves an unchanged table untouched; a model
family whose champion or challenger was already trained by this job on the same input (data
files and settings: the ``retrain_input`` tag) is not trained again, so a re-run on the same
data keeps the champion (exit 3) without registering new versions.

Exit codes (for cron and Airflow): :data:`EXIT_PROMOTED` (0) a new champion was promoted (and
the reload, when asked, loaded it); :data:`EXIT_KEPT` (3) every champion was kept;
:data:`EXIT_FAILED` (1) a step failed (:attr:`RetrainResult.failed_step` names it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from training.affinity.evaluate import EvalSettings
from training.affinity.search import SearchSettings
from training.registry import ModelRegistry
from training.uplift.fit import UpliftTrainSettings

__all__ = [
    "EXIT_FAILED",
    "EXIT_KEPT",
    "EXIT_PROMOTED",
    "STEPS",
    "RetrainError",
    "RetrainResult",
    "RetrainSettings",
    "StepResult",
    "retrain",
]

log = logging.getLogger(__name__)

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_KEPT = 3
STEPS = ("export", "features", "affinity", "uplift", "reload")
INPUT_TAG = "retrain_input"
# registered model name -> the name the service gives it in /v1/models and model_versions
SERVICE_NAMES = {"offers-affinity": "affinity", "offers-uplift": "uplift"}


class RetrainError(RuntimeError):
    """A step of the job failed; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class RetrainSettings:
    """What the job does. ``store_url`` None: no export; ``features_out`` None: no snapshot;
    ``serve_url`` None: no reload. ``as_of`` None: now (UTC)."""

    data_dir: Path
    store_url: str | None = None
    since: datetime | None = None
    as_of: pd.Timestamp | None = None
    features_out: Path | None = None
    affinity: EvalSettings = field(default_factory=EvalSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    uplift: UpliftTrainSettings = field(default_factory=UpliftTrainSettings)
    policy_gate: bool = True
    # the metric gates' margin: a challenger is promoted when it beats the champion by more
    # than this (negative: a fresher model may be this much worse); the policy gate is apart
    min_delta: float = 0.0
    serve_url: str | None = None
    reload_timeout: float = 300.0
    # DuckDB memory limit of every step's queries (e.g. "4GB"; None: DuckDB's default)
    memory_limit: str | None = None


@dataclass
class StepResult:
    """One step: ``done``, ``skipped`` (with the reason) or ``failed``; what it reported."""

    name: str
    status: str
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class RetrainResult:
    """Every step's result, the promotions, the parent run and the exit code."""

    steps: list[StepResult]
    promoted: dict[str, str]  # model name -> the version now champion
    champions: dict[str, str | None]  # model name -> champion after the job
    run_id: str | None
    exit_code: int
    failed_step: str | None = None
    error: str | None = None


Say = Callable[[str], None]


def _input_id(data_dir: Path, settings: Any) -> str:
    """Identity of a training input: the data files' hash and the settings."""
    from training.affinity.train import data_fingerprint

    text = settings.model_dump_json() if hasattr(settings, "model_dump_json") else repr(settings)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{data_fingerprint(data_dir)}|{digest}"


def _already_trained(registry: ModelRegistry, name: str, input_id: str) -> str | None:
    """The champion or challenger version this job trained on ``input_id``, if any."""
    for alias in ("champion", "challenger"):
        version = registry.version_of(name, alias)
        if version is None:
            continue
        mv = registry.client.get_model_version(name, version)
        if mv.tags.get(INPUT_TAG) == input_id:
            return version
    return None


def _log_step(detail: dict[str, Any]) -> None:
    import mlflow

    metrics = {k: float(v) for k, v in detail.items() if isinstance(v, int | float)}
    params = {k: str(v)[:500] for k, v in detail.items() if not isinstance(v, int | float)}
    if metrics:
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()})
    if params:
        mlflow.log_params(params)


def _snapshot(
    data_dir: Path, as_of: pd.Timestamp, path: Path, memory_limit: str | None = None
) -> int:
    """Member features as of ``as_of`` to ``path`` (Parquet; a temporary file moved into place,
    so the service never reads half a file); returns the rows."""
    from features.pipeline import load_tables, member_features
    from features.pipeline.engines import connect

    con = connect("duckdb", memory_limit=memory_limit)
    frame = member_features(load_tables(data_dir, con), as_of).to_pandas()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return len(frame)


def _reload(url: str, api_key: str, timeout: float) -> dict[str, Any]:
    """``POST {url}/v1/admin/reload``; the answer's JSON (RetrainError on anything but 200)."""
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/admin/reload",
        method="POST",
        headers={"X-API-Key": api_key, "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:500]
        raise RetrainError("reload", f"{url} answered {exc.code}: {body}") from None
    except (OSError, ValueError) as exc:
        raise RetrainError("reload", f"{url}: {type(exc).__name__}: {exc}") from None


class _Job:
    """State of one run of the job (steps run in order; the first failure stops it)."""

    def __init__(
        self, settings: RetrainSettings, registry: ModelRegistry, api_key: str | None, say: Say
    ) -> None:
        self.s, self.registry, self.api_key, self.say = settings, registry, api_key, say
        self.steps: list[StepResult] = []
        self.promoted: dict[str, str] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[StepResult]:
        import mlflow

        result = StepResult(name, "done")
        t0 = time.perf_counter()
        experiment = self.registry.experiment_id()
        with mlflow.start_run(experiment_id=experiment, run_name=name, nested=True):
            try:
                yield result
            except RetrainError:
                result.status = "failed"
                raise
            except Exception as exc:
                result.status = "failed"
                raise RetrainError(name, f"{type(exc).__name__}: {exc}") from exc
            finally:
                result.seconds = time.perf_counter() - t0
                self.steps.append(result)
                mlflow.set_tags({"step": name, "status": result.status})
                _log_step({**result.detail, "seconds": result.seconds})

    # -- the steps ------------------------------------------------------------------------
    def export(self) -> None:
        with self.step("export") as r:
            if self.s.store_url is None:
                r.status, r.detail = "skipped", {"reason": "no --store"}
                return
            from serving.batch.export import export_from_url

            self.say("export: the store's decisions, grants and feedback -> offer_events")
            out = export_from_url(self.s.store_url, self.s.data_dir, self.s.since)
            r.detail = {
                **{f"read.{k}": v for k, v in out.read.items()},
                **{f"events.{k}": v for k, v in out.events.items()},
                "written": out.written,
                "already_present": out.already_present,
                "total": out.total,
            }

    def features(self) -> None:
        with self.step("features") as r:
            as_of = self.s.as_of if self.s.as_of is not None else pd.Timestamp.now("UTC")
            as_of = pd.Timestamp(as_of).tz_localize(None) if as_of.tzinfo else as_of
            r.detail = {"as_of": str(as_of)}
            if self.s.features_out is None:
                r.status = "skipped"
                r.detail["reason"] = "no --features-out"
                return
            self.say(f"features: member snapshot as of {as_of} -> {self.s.features_out}")
            r.detail |= {
                "rows": _snapshot(self.s.data_dir, as_of, self.s.features_out, self.s.memory_limit),
                "path": str(self.s.features_out),
            }

    def _family(self, key: str, name: str, settings: Any, train: Callable[[], Any]) -> None:
        with self.step(key) as r:
            input_id = _input_id(self.s.data_dir, settings)
            done = _already_trained(self.registry, name, input_id)
            if done is not None:
                r.status = "skipped"
                r.detail = {"reason": f"v{done} was trained on the same data and settings"}
                self.say(f"{key}: skipped (v{done} was trained on the same data and settings)")
                return
            self.say(f"{key}: training, registering and gating {name}")
            result = train()
            decision = result.decision
            self.registry.client.set_model_version_tag(name, result.version, INPUT_TAG, input_id)
            r.detail = {
                "version": str(result.version),
                "promoted": str(decision.promoted).lower(),
                "reason": decision.reason,
                "champion_before": str(decision.champion_version),
            }
            if decision.challenger_value is not None:
                r.detail["gate_value"] = float(decision.challenger_value)
            if decision.champion_value is not None:
                r.detail["champion_value"] = float(decision.champion_value)
            if decision.policy:
                r.detail["policy_gate"] = str(decision.policy.get("reason", ""))
            if decision.promoted:
                self.promoted[name] = str(result.version)
            verdict = "promoted" if decision.promoted else "kept as challenger"
            self.say(f"{key}: v{result.version} {verdict}: {decision.reason}")

    def affinity(self) -> None:
        from training.affinity.train import AFFINITY_MODEL, DEFAULT_GATE, train_affinity

        gate = replace(DEFAULT_GATE, min_delta=self.s.min_delta)
        both = {"eval": self.s.affinity.model_dump(), "search": self.s.search.model_dump()}
        key = _Settings(json.dumps(both, sort_keys=True, default=str))
        self._family(
            "affinity", AFFINITY_MODEL, key,
            lambda: train_affinity(
                self.s.data_dir, self.s.affinity, self.s.search, self.registry,
                gate=gate, dataset=self.s.data_dir.name, memory_limit=self.s.memory_limit,
            ),
        )  # fmt: skip

    def uplift(self) -> None:
        from training.uplift.train import DEFAULT_GATE, UPLIFT_MODEL, train_uplift

        gate = replace(DEFAULT_GATE, min_delta=self.s.min_delta)
        self._family(
            "uplift", UPLIFT_MODEL, self.s.uplift,
            lambda: train_uplift(
                self.s.data_dir, self.s.uplift, self.registry, gate=gate,
                memory_limit=self.s.memory_limit,
            ),
        )  # fmt: skip

    def reload(self) -> None:
        with self.step("reload") as r:
            if self.s.serve_url is None:
                r.status, r.detail = "skipped", {"reason": "no --serve-url"}
                return
            if not self.api_key:
                raise RetrainError("reload", "no admin API key (see --api-key-env)")
            self.say(f"reload: POST {self.s.serve_url}/v1/admin/reload")
            body = _reload(self.s.serve_url, self.api_key, self.s.reload_timeout)
            loaded = {m["name"]: str(m["version"]) for m in body.get("models", [])}
            r.detail = {f"loaded.{k}": v for k, v in loaded.items()}
            for name, version in self.promoted.items():
                served = loaded.get(SERVICE_NAMES.get(name, name))
                if served != version:
                    raise RetrainError(
                        "reload", f"the service loaded {name} v{served}, not the new champion "
                        f"v{version}",
                    )  # fmt: skip


@dataclass(frozen=True)
class _Settings:
    """Settings given as text (their identity for :func:`_input_id`)."""

    text: str

    def model_dump_json(self) -> str:
        return self.text


def retrain(
    settings: RetrainSettings,
    registry: ModelRegistry,
    api_key: str | None = None,
    say: Say | None = None,
) -> RetrainResult:
    """Run the job (module docstring). Never raises for a failing step: the result names it
    and carries :data:`EXIT_FAILED`."""
    import mlflow

    from training.policy.gate import PolicyCheck

    job = _Job(settings, registry, api_key, say or (lambda msg: log.info("%s", msg)))
    if settings.policy_gate:
        registry.policy_check = PolicyCheck(settings.data_dir)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    failed: RetrainError | None = None
    run_id = None
    try:
        with mlflow.start_run(experiment_id=registry.experiment_id(), run_name="retrain") as run:
            run_id = run.info.run_id
            mlflow.set_tags({"job": "offers retrain", "data_dir": str(settings.data_dir)})
            try:
                for step in STEPS:
                    getattr(job, step)()
            except RetrainError as exc:
                failed = exc
                mlflow.set_tags({"failed_step": exc.step, "error": str(exc)[:5000]})
            champions = {n: registry.version_of(n, "champion") for n in SERVICE_NAMES}
            code = (
                EXIT_FAILED if failed is not None
                else EXIT_PROMOTED if job.promoted
                else EXIT_KEPT
            )  # fmt: skip
            mlflow.set_tags(
                {"exit_code": str(code), "promoted": json.dumps(job.promoted),
                 "champions": json.dumps(champions)}
            )  # fmt: skip
    finally:
        mlflow.set_tracking_uri(previous)
    if failed is not None and run_id is not None:
        registry.client.set_terminated(run_id, "FAILED")
    return RetrainResult(
        steps=job.steps,
        promoted=job.promoted,
        champions=champions,
        run_id=run_id,
        exit_code=code,
        failed_step=None if failed is None else failed.step,
        error=None if failed is None else str(failed),
    )
