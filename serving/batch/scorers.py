"""Scorers: member features of one chunk -> the engine's :class:`ScoreInputs` (n x offers).

* :class:`ModelScorer`: the affinity pyfunc (``p_redeem`` per member x offer pair) and the
  uplift pyfunc (effect on spend per treatment; an offer takes its own column
  ``spend:<offer_id>`` or else its kind's ``spend:<kind>``, else no effect). Models load from
  MLflow URIs or local artifact directories (``load_scorer``).
* :class:`SyntheticScorer`: a deterministic factor model keyed on the member id (for the
  benchmark, the tests and a demo without trained models). A member's scores depend only on
  its id, so chunking and partitioning cannot change them.

Every scorer is a plain picklable object (Spark broadcasts it to the executors).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features.pipeline.config import FeatureConfig
from features.sources.schema import MEMBER_ID
from serving.engine import OfferTable, ScoreInputs
from serving.engine.adapters import model_inputs, uplift_matrix
from serving.engine.hashing import hash64

__all__ = [
    "ModelScorer",
    "Scorer",
    "ScorerError",
    "SyntheticScorer",
    "UpliftHeadScorer",
    "load_model_dir",
    "load_scorer",
    "scorer_feature_config",
]

log = logging.getLogger(__name__)


class ScorerError(RuntimeError):
    """Models that cannot be loaded or used (names the model and where it came from)."""


class Scorer(Protocol):
    """Scores one chunk of member features for the catalog's offers."""

    versions: dict[str, str]

    def score(self, members: pd.DataFrame, offers: OfferTable) -> ScoreInputs: ...


def _normals(ids: np.ndarray, salt: str, dims: int) -> np.ndarray:
    """(n, dims) standard normals that depend only on each id (Box-Muller on id hashes)."""
    out = np.empty((len(ids), dims), dtype=np.float32)
    scale = 1.0 / 2.0**53
    for d in range(0, dims, 2):
        h1 = hash64(ids, f"{salt}:{d}")
        h2 = np.uint64(0x9E3779B97F4A7C15) * h1 + np.uint64(d + 1)
        u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) * scale
        u2 = ((h2 >> np.uint64(11)).astype(np.float64) + 0.5) * scale
        r = np.sqrt(-2.0 * np.log(u1))
        out[:, d] = r * np.cos(2 * np.pi * u2)
        if d + 1 < dims:
            out[:, d + 1] = r * np.sin(2 * np.pi * u2)
    return out


@dataclass
class SyntheticScorer:
    """P(redeem) = sigmoid(member factors . offer factors + offer bias); incremental spend =
    P(redeem) x an uplift head linear in the member factors (can be negative)."""

    dims: int = 8
    seed: int = 0
    versions: dict[str, str] = field(default_factory=lambda: {"synthetic": "factors-v1"})

    def offer_factors(self, offer_ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """(dims + 2, m): factors, bias, uplift scale per offer."""
        ids = np.asarray(offer_ids, dtype=object)
        z = _normals(ids, f"offer-{self.seed}", self.dims + 2)
        return z.T

    def member_factors(self, member_ids: np.ndarray) -> np.ndarray:
        return _normals(np.asarray(member_ids, dtype=object), f"member-{self.seed}", self.dims)

    def score(self, members: pd.DataFrame, offers: OfferTable) -> ScoreInputs:
        u = self.member_factors(members[MEMBER_ID].to_numpy(dtype=object))
        v = self.offer_factors(list(offers.ids))
        d = self.dims
        logit = (u @ v[:d]) * np.float32(0.5) + v[d][None, :] * np.float32(0.5) - np.float32(1.5)
        p = 1.0 / (1.0 + np.exp(-logit))
        head = u[:, :2].sum(axis=1, keepdims=True) * np.float32(0.3) + np.float32(1.0)
        spend = p * np.float32(20.0) * head * (np.float32(1.0) + np.float32(0.3) * v[d + 1])
        return ScoreInputs(
            p.astype(np.float64),
            spend.astype(np.float64),
            has_row=np.ones(len(members), dtype=bool),
            model_versions=dict(self.versions),
        )

    def baseline_topk(self, member_ids: np.ndarray, offer_ids: list[str], k: int) -> np.ndarray:
        """The reference: plain factor dot product + top-k (no rules, budgets or uplift)."""
        u = self.member_factors(member_ids)
        s = u @ self.offer_factors(offer_ids)[: self.dims]
        top = np.argpartition(-s, kth=min(k, s.shape[1] - 1), axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)


@dataclass
class ModelScorer:
    """The served models: affinity (P(redeem)) and uplift (incremental spend) pyfuncs, turned
    into engine inputs by the one adapter (:func:`serving.engine.adapters.model_inputs`, as
    the API's bundle does)."""

    affinity: Any
    uplift: Any
    versions: dict[str, str]
    segment_column: str = "segment"
    outcome: str = "spend"
    uncertainty_z: float = 0.0  # the engine's ScoringSettings.uncertainty_z

    def score(self, members: pd.DataFrame, offers: OfferTable) -> ScoreInputs:
        return model_inputs(
            self.affinity,
            self.uplift,
            members,
            offers,
            segment_column=self.segment_column,
            outcome=self.outcome,
            model_versions=self.versions,
            uncertainty_z=self.uncertainty_z,
        )


@dataclass
class UpliftHeadScorer:
    """P(redeem) from the synthetic factor model (keyed on the member id), incremental spend
    from a real uplift model (anything with ``predict(member_features) -> effects``, e.g. the
    ONNX pyfunc): the benchmark's scorer when no affinity model is trained."""

    uplift: Any
    synthetic: SyntheticScorer = field(default_factory=SyntheticScorer)
    outcome: str = "spend"
    versions: dict[str, str] = field(
        default_factory=lambda: {"synthetic": "factors-v1", "uplift": "onnx"}
    )

    def score(self, members: pd.DataFrame, offers: OfferTable) -> ScoreInputs:
        base = self.synthetic.score(members, offers)
        spend = uplift_matrix(self.uplift, members, offers, self.outcome)
        return ScoreInputs(
            base.p_redeem,
            spend,
            has_row=np.ones(len(members), bool),
            model_versions=dict(self.versions),
        )


def _python_model(loaded: Any) -> Any:
    """The PythonModel behind a loaded pyfunc (or a ``_Bound`` artifact model)."""
    if isinstance(loaded, _Bound):
        return loaded.model
    unwrap = getattr(loaded, "unwrap_python_model", None)
    if unwrap is not None:
        try:
            return unwrap()
        except Exception:  # not a python_function model: no stored config
            return None
    return loaded


def scorer_feature_config(scorer: Scorer) -> FeatureConfig | None:
    """The feature pipeline's resolved configuration the scorer's models were trained with
    (stored with the uplift model: ``meta["feature_config"]``), or None (synthetic scores, or
    a model without one). Serving must compute member features with it: the model's inputs
    (category shares, windows, tier thresholds) are defined by it."""
    uplift = getattr(scorer, "uplift", None)
    if uplift is None:
        return None
    meta = getattr(_python_model(uplift), "meta_", None) or {}
    raw = meta.get("feature_config")
    if raw is None:
        return None
    try:
        return FeatureConfig.model_validate(raw)
    except ValueError as exc:
        raise ScorerError(f"uplift model: stored feature_config is not valid: {exc}") from exc


def _load_one(name: str, uri: str, tracking_uri: str | None) -> tuple[Any, str]:
    """A model from a local directory of raw artifacts, or through the one loader
    (:func:`serving.loader.load_model`: a local MLflow model directory, or ``models:/...`` from
    the shared tracking store with its last-known-good copy); returns (model, version)."""
    from serving.loader import LOCAL_COPY, LOCAL_DIR, load_model

    path = Path(uri)
    try:
        if path.is_dir() and not (path / "MLmodel").is_file():
            return _load_artifact_dir(name, path), f"{name}@{path.name}"
        copy = load_model(name, uri, tracking_uri=tracking_uri)
    except Exception as exc:
        raise ScorerError(
            f"model {name!r} from {uri!r} failed to load: {type(exc).__name__}: {exc}. "
            "Train and register one (offers train affinity / offers train uplift) or name "
            "local artifact directories under 'models' in the campaign file."
        ) from exc
    if copy.source == LOCAL_DIR:
        return copy.model, f"{name}@{path.name}"
    if copy.source == LOCAL_COPY:
        log.warning(
            "model %s: %s; scoring with the local copy v%s", name, copy.reason, copy.version
        )
    version = uri
    if uri.startswith("models:/") and "@" in uri:
        registered = uri.removeprefix("models:/").split("@", 1)[0]
        version = f"{registered}/{copy.version}"
    return copy.model, version


def load_model_dir(name: str, path: Path | str) -> Any:
    """A model (``affinity`` or ``uplift``) from a local directory of raw artifacts, with
    ``predict(frame)`` like a loaded pyfunc."""
    return _load_artifact_dir(name, Path(path))


def _load_artifact_dir(name: str, path: Path) -> Any:
    """Raw artifacts (``*.npz`` for affinity, ``*.onnx`` + ``*.json`` for uplift)."""
    files = {p.stem: str(p) for p in path.iterdir() if p.is_file()}
    for p in path.iterdir():  # the names models.uplift.pyfunc.save_artifacts writes
        if p.suffix == ".onnx":
            files.setdefault("onnx_" + p.stem.removeprefix("uplift_"), str(p))
        elif p.name == "uplift_meta.json":
            files.setdefault("meta", str(p))
    if name == "affinity":
        from models.affinity.pyfunc import AffinityPyfunc

        return _Bound(AffinityPyfunc().load(files))
    from models.uplift.pyfunc import UpliftPyfunc

    return _Bound(UpliftPyfunc().load(files))


@dataclass
class _Bound:
    """A PythonModel with ``predict(frame)`` like a loaded pyfunc."""

    model: Any

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict(None, frame)


def load_scorer(models: dict[str, str], tracking_uri: str | None = None) -> Scorer:
    """``{"synthetic": "<seed>"}`` or ``{"affinity": uri, "uplift": uri}`` -> a scorer.

    ``tracking_uri`` defaults to the store ``offers train`` registers into
    (``MLFLOW_TRACKING_URI``, else ``<OFFERS_HOME>/mlflow.db``)."""
    if "synthetic" in models:
        return SyntheticScorer(seed=int(models["synthetic"] or 0))
    missing = [k for k in ("affinity", "uplift") if k not in models]
    if missing:
        raise ScorerError(f"models: {missing} not given (have {json.dumps(models)})")
    aff, va = _load_one("affinity", models["affinity"], tracking_uri)
    up, vu = _load_one("uplift", models["uplift"], tracking_uri)
    return ModelScorer(aff, up, {"affinity": va, "uplift": vu})
