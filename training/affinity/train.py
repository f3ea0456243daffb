"""Train the shipped affinity model, log it to MLflow, register it and run the champion gate.

The registered model is the one the report scored: fitted on everything before the test window
start T, so the metrics stored with the version describe exactly that model. The test window
id (data fingerprint, target, candidate policy, window) is stored with the version; the gate
compares the champion on the same id, or re-scores a champion whose training data ends by T
and whose item catalogue is the same on the new window.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.sources.io import table_files
from models.affinity.persist import load_interactions, load_model
from models.affinity.pyfunc import ENTRY_POINT, input_example, save_artifacts, signature
from training.affinity.data import open_affinity_tables
from training.affinity.evaluate import EvalSettings, evaluate_model
from training.affinity.plots import plot_metrics_at_k, plot_reliability
from training.affinity.report import EvalRun, run_evaluation
from training.affinity.search import Progress, SearchSettings
from training.registry import Gate, GateDecision, ModelRegistry

__all__ = [
    "AFFINITY_MODEL",
    "DEFAULT_GATE",
    "TrainResult",
    "data_fingerprint",
    "requirements",
    "test_window_id",
    "train_affinity",
]

log = logging.getLogger(__name__)

AFFINITY_MODEL = "offers-affinity"
DEFAULT_GATE = Gate("ndcg@10", higher_is_better=True)
_REQUIREMENTS = ("numpy", "pandas", "scipy", "implicit", "scikit-learn", "mlflow", "pyarrow")


@dataclass
class TrainResult:
    """The new version, the gate's decision and both sides' metrics."""

    version: str
    decision: GateDecision
    metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    champion_basis: str  # same test window / re-scored on this test window / its own test window
    run: EvalRun


def data_fingerprint(data_dir: Path) -> str:
    """First 12 hex digits of the SHA-256 over the canonical table files' bytes."""
    h = hashlib.sha256()
    for table, path in table_files(Path(data_dir)).items():
        if path is None:
            continue
        h.update(table.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def test_window_id(fingerprint: str, report: dict[str, Any]) -> str:
    """Identity of a test window: data, target, candidates and the window itself."""
    s = report["split"]
    return "|".join(
        [fingerprint, report["target"], report["candidates"], s["test_start"], s["test_end"]]
    )


def requirements() -> list[str]:
    """Pinned pip requirements of the pyfunc (the installed versions; no inference)."""
    return pinned(_REQUIREMENTS)


def pinned(dists: tuple[str, ...]) -> list[str]:
    """``dist==<installed version>`` for each of ``dists`` (the name alone if not installed)."""
    out = []
    for dist in dists:
        try:
            out.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            out.append(dist)
    return out


def _flat_params(report: dict[str, Any], settings: EvalSettings) -> dict[str, Any]:
    p = report["params"]
    out: dict[str, Any] = {
        "dataset": report["dataset"],
        "target": report["target"],
        "candidates": report["candidates"],
        "shipped": report["shipped"],
        "seed": p["seed"],
        **{f"window.{k}": v for k, v in report["split"].items() if isinstance(v, str)},
        **{f"als.{k}": v for k, v in p["als"].items()},
        **{f"bpr.{k}": v for k, v in (p["bpr"] or {}).items()},
        **{f"compare_bpr.{k}": v for k, v in p.get("compare_bpr", {}).items()},
        **{f"blend.{k}": v for k, v in p[report["shipped"]].items()},
        **{f"interactions.{k}": v for k, v in p["interactions"].items()},
        **{f"search.{k}": v for k, v in p.get("search", {}).items()},
        "min_candidates": settings.min_candidates,
    }
    return out


def _logged_metrics(report: dict[str, Any]) -> dict[str, float]:
    shipped = report["shipped"]
    out = {k: v for k, v in report["models"][shipped].items()}
    for name, metrics in report["models"].items():
        if name != shipped:
            out.update({f"{name}.{k}": v for k, v in metrics.items()})
    cal = report.get("calibration") or {}
    for key in ("brier", "brier_base_rate"):
        if isinstance(cal.get(key), float):
            out[f"calibration.{key}"] = cal[key]
    return out


class _Rescorer:
    """Score a champion on this run's test window, when that is fair (see module docstring);
    keeps the champion's full metrics for the report."""

    def __init__(
        self, run: EvalRun, settings: EvalSettings, registry: ModelRegistry, name: str, metric: str
    ) -> None:
        self.run, self.settings, self.registry = run, settings, registry
        self.name, self.metric = name, metric
        self.metrics_: dict[str, float] | None = None

    def __call__(self, version: str, window: str) -> float | None:
        try:
            local = self.registry.download(self.name, version, "artifacts")
            champion = load_model(local / "model.npz")
            rows = load_interactions(local / "rows.npz")
        except Exception as exc:  # a champion of another shape: cannot compare
            log.warning("cannot re-score %s v%s: %s", self.name, version, exc)
            return None
        task = self.run.test_task
        if rows.as_of > task.start:
            log.warning(
                "%s v%s saw data up to %s, after the window start", self.name, version, rows.as_of
            )
            return None
        if not np.array_equal(champion.item_ids_, task.train.item_ids):
            log.warning("%s v%s has another item catalogue", self.name, version)
            return None
        self.metrics_ = evaluate_model(champion, task, self.settings.ks)
        return self.metrics_[self.metric]


def train_affinity(
    data_dir: Path,
    settings: EvalSettings,
    search_settings: SearchSettings,
    registry: ModelRegistry,
    *,
    name: str = AFFINITY_MODEL,
    gate: Gate = DEFAULT_GATE,
    dataset: str | None = None,
    progress: Progress | None = None,
    tables: Mapping[str, Any] | None = None,
    engine: str = "duckdb",
    memory_limit: str | None = None,
) -> TrainResult:
    """Evaluate, log + register the shipped model as challenger, gate it against the champion.

    ``tables`` defaults to ``data_dir`` opened on ``engine`` with ``memory_limit``
    (:func:`training.affinity.data.open_affinity_tables`)."""
    data_dir = Path(data_dir)
    if tables is None:
        tables = open_affinity_tables(data_dir, engine, memory_limit)
    run = run_evaluation(tables, settings, search_settings, dataset or data_dir.name, progress)
    report = run.report
    window = test_window_id(data_fingerprint(data_dir), report)
    if progress:
        progress("register", 0, 1)
    with tempfile.TemporaryDirectory(prefix="offers-affinity-") as tmp:
        tmp_dir = Path(tmp)
        arts = save_artifacts(run.shipped, run.test_task.train, tmp_dir / "arrays", run.calibrator)
        files = [plot_metrics_at_k(report, tmp_dir / "metrics_at_k.png", settings.ks)]
        if run.reliability is not None:
            files.append(plot_reliability(run.reliability, tmp_dir / "reliability.png"))
        report_path = tmp_dir / "affinity_report.json"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        files.append(report_path)
        members = list(run.test_task.train.member_ids[run.test_task.rows[:2]])
        offers = [
            k.split(":", 1)[1] for k in run.test_task.train.item_ids[run.test_task.candidates[:3]]
        ]
        version = registry.log_and_register(
            name,
            python_model=ENTRY_POINT,
            artifacts=arts,
            signature=signature(),
            input_example=input_example(members, offers),
            params=_flat_params(report, settings),
            metrics=_logged_metrics(report),
            test_window=window,
            tags={"dataset": report["dataset"], "target": report["target"]},
            files=files,
            pip_requirements=requirements(),
            run_name=f"affinity-{report['dataset']}-{report['target']}",
        )
    rescorer = _Rescorer(run, settings, registry, name, gate.metric)
    decision = registry.gate(name, version, gate, rescorer)
    if progress:
        progress("register", 1, 1)
    champ = decision.champion_version
    champ_metrics, basis = None, "none"
    if champ and champ != version:
        if registry.test_window(name, champ) == window:
            champ_metrics, basis = registry.metrics(name, champ), "same test window"
        elif rescorer.metrics_ is not None:
            champ_metrics, basis = rescorer.metrics_, "re-scored on this test window"
        else:
            champ_metrics, basis = registry.metrics(name, champ), "its own test window"
    metrics = report["models"][report["shipped"]]
    return TrainResult(version, decision, metrics, champ, champ_metrics, basis, run)
