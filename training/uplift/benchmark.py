"""Benchmark our uplift learners against CausalML and scikit-uplift in one run.

Protocol (the same for every library, so the numbers compare):

* each treatment is compared with control on the rows of those two groups only;
* ``n_splits`` seeded stratified train/test splits (``StratifiedShuffleSplit``, strata =
  treatment x every outcome of the data set), shared by all outcomes, learners and libraries;
* the same features and the same base estimator (``make_base_estimator(base_learner, ...)``
  with the same parameters and ``random_state``) for every library;
* every library's test-set predictions are scored with :mod:`training.uplift.metrics`; the
  result per (treatment, outcome, library, learner) is the mean and standard deviation over
  the splits.

Peer libraries are optional (the ``bench`` extra) and imported only when used; a missing one
raises :class:`PeerLibraryMissing` naming the pip pin to install.

Continuous outcomes (e.g. spend on the simulated program) are fitted by our S-, T- and
X-learners only (class transformation and the peers' classifiers need a binary outcome), and
only binary outcomes define the strata of the splits.

Known truth (the simulated program): ``run_benchmark(..., truth={outcome: effect per row})``
also scores each model's test predictions against the true effects of the treated test rows
(NaN elsewhere): ``truth_corr`` (Pearson correlation of predicted and true effects) and
``ate_error`` (mean predicted minus mean true effect; ``ate_true`` is the mean true effect).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models.uplift import LEARNERS, make_base_estimator
from models.uplift.base import DEFAULT_BASE_PARAMS
from training.uplift.datasets import UpliftDataset
from training.uplift.metrics import UpliftMetricError, auuc, qini_coefficient, uplift_at_k

__all__ = [
    "LIBRARIES",
    "PEER_LEARNERS",
    "PEER_PINS",
    "BenchmarkConfig",
    "PeerLibraryMissing",
    "best_by_library",
    "missing_libraries",
    "planned_fits",
    "planned_models",
    "report_markdown",
    "run_benchmark",
]

log = logging.getLogger(__name__)

LIBRARIES: tuple[str, ...] = ("ours", "causalml", "sklift")
PEER_PINS = {"causalml": "causalml==0.18.0", "sklift": "scikit-uplift==0.5.1"}
_PEER_MODULES = {"causalml": "causalml", "sklift": "sklift"}
# learner name -> the peer class it maps to
PEER_LEARNERS = {
    "causalml": {"S": "BaseSClassifier", "T": "BaseTClassifier", "X": "BaseXClassifier"},
    "sklift": {"S": "SoloModel", "T": "TwoModels", "CT": "ClassTransformation"},
}
OUR_CLASSES = {name: cls.__name__ for name, cls in LEARNERS.items()}
TOP_K = (10, 20, 30)
TRUTH_METRICS = ("truth_corr", "ate_error", "ate_true")

FitPredict = Callable[[NDArray, NDArray, NDArray, NDArray], NDArray]


class PeerLibraryMissing(RuntimeError):
    """A peer library asked for is not installed (names the pip pin)."""


def missing_libraries(libraries: Iterable[str]) -> list[str]:
    """The peer libraries among ``libraries`` that cannot be imported."""
    return [
        lib
        for lib in libraries
        if lib in _PEER_MODULES and importlib.util.find_spec(_PEER_MODULES[lib]) is None
    ]


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to run: splits, base learner settings, libraries, learners, subsets."""

    n_splits: int = 5
    test_size: float = 0.3
    seed: int = 0
    base_learner: str = "lightgbm"
    base_params: dict[str, Any] | None = None
    libraries: tuple[str, ...] = LIBRARIES
    learners: tuple[str, ...] = ("S", "T", "X", "CT")
    treatments: tuple[str, ...] | None = None  # None: all of the data set's
    outcomes: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.libraries) - set(LIBRARIES)
        if unknown:
            raise ValueError(f"unknown libraries {sorted(unknown)}; choose from {LIBRARIES}")
        unknown = set(self.learners) - set(LEARNERS)
        if unknown:
            raise ValueError(f"unknown learners {sorted(unknown)}; choose from {sorted(LEARNERS)}")
        if self.n_splits < 1:
            raise ValueError(f"n_splits must be >= 1; got {self.n_splits}")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size must be in (0, 1); got {self.test_size}")


def _ours(name: str, config: BenchmarkConfig) -> FitPredict:
    def fit_predict(X_tr, y_tr, t_tr, X_te):
        model = LEARNERS[name](
            base_learner=config.base_learner,
            base_params=config.base_params,
            random_state=config.seed,
        )
        return model.fit(X_tr, y_tr, t_tr).predict(X_te)[:, 0]

    return fit_predict


def _causalml(name: str, config: BenchmarkConfig) -> FitPredict:
    from causalml.inference import meta

    def est(task: Literal["classifier", "regressor"]) -> Any:
        return make_base_estimator(config.base_learner, task, config.base_params, config.seed)

    def fit_predict(X_tr, y_tr, t_tr, X_te):
        if name == "X":
            model = meta.BaseXClassifier(
                outcome_learner=est("classifier"), effect_learner=est("regressor")
            )
            share = float(t_tr.mean())  # randomised: the propensity is the treated share
            model.fit(X_tr, treatment=t_tr, y=y_tr, p=np.full(len(X_tr), share))
            return np.asarray(model.predict(X_te, p=np.full(len(X_te), share)))[:, 0]
        cls = meta.BaseSClassifier if name == "S" else meta.BaseTClassifier
        model = cls(learner=est("classifier"))
        model.fit(X_tr, treatment=t_tr, y=y_tr)
        return np.asarray(model.predict(X_te))[:, 0]

    return fit_predict


def _sklift(name: str, config: BenchmarkConfig) -> FitPredict:
    from sklift import models

    def clf():
        return make_base_estimator(
            config.base_learner, "classifier", config.base_params, config.seed
        )

    def fit_predict(X_tr, y_tr, t_tr, X_te):
        if name == "S":
            model = models.SoloModel(estimator=clf(), method="dummy")
        elif name == "T":
            model = models.TwoModels(estimator_trmnt=clf(), estimator_ctrl=clf(), method="vanilla")
        else:
            model = models.ClassTransformation(estimator=clf())
        model.fit(X_tr, y_tr, t_tr)
        return np.asarray(model.predict(X_te), dtype=np.float64).ravel()

    return fit_predict


def _candidates(config: BenchmarkConfig) -> list[tuple[str, str, str, FitPredict]]:
    """``(library, learner, model class, fit_predict)`` for everything to run."""
    missing = missing_libraries(config.libraries)
    if missing:
        pins = " ".join(PEER_PINS[m] for m in missing)
        raise PeerLibraryMissing(
            f"peer librar{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} not "
            f"installed: pip install {pins} (the 'bench' extra), or run with libraries=ours only"
        )
    out = []
    for library in config.libraries:
        if library == "ours":
            out += [("ours", n, OUR_CLASSES[n], _ours(n, config)) for n in config.learners]
        else:
            factory = _causalml if library == "causalml" else _sklift
            out += [(library, n, c, factory(n, config)) for n, c in PEER_LEARNERS[library].items()]
    return out


def planned_models(config: BenchmarkConfig) -> list[tuple[str, str, str]]:
    """``(library, learner, model class)`` that :func:`run_benchmark` will fit per split.

    Raises :class:`PeerLibraryMissing` when a requested peer library is not installed.
    """
    return [(lib, learner, model) for lib, learner, model, _ in _candidates(config)]


def _is_binary(values: NDArray) -> bool:
    return bool(np.isin(values, (0, 1)).all())


def _fits_outcome(library: str, learner: str, binary: bool) -> bool:
    """Whether a model can be fitted on the outcome (see the module docstring)."""
    return binary or (library == "ours" and LEARNERS[learner].supports_continuous)


def planned_fits(dataset: UpliftDataset, config: BenchmarkConfig) -> int:
    """How many models :func:`run_benchmark` fits (the number of ``progress`` calls)."""
    treatments = config.treatments or dataset.treatments
    outcomes = config.outcomes or tuple(dataset.outcomes)
    per_split = sum(
        _fits_outcome(library, learner, _is_binary(dataset.outcomes[outcome]))
        for outcome in outcomes
        for library, learner, _ in planned_models(config)
    )
    return config.n_splits * len(treatments) * per_split


def _splits(dataset: UpliftDataset, rows: NDArray, config: BenchmarkConfig):
    from sklearn.model_selection import StratifiedShuffleSplit

    strata = dataset.treatment[rows].astype(str)
    for values in dataset.outcomes.values():
        if not _is_binary(values):  # a continuous outcome cannot define strata
            continue
        strata = np.char.add(np.char.add(strata, "|"), values[rows].astype(str))
    splitter = StratifiedShuffleSplit(
        n_splits=config.n_splits, test_size=config.test_size, random_state=config.seed
    )
    return list(splitter.split(np.zeros(rows.size), strata))


def _score(
    y: NDArray, uplift: NDArray, t: NDArray, truth: NDArray | None = None
) -> dict[str, float]:
    scores = {"qini": qini_coefficient(y, uplift, t), "auuc": auuc(y, uplift, t)}
    for k in TOP_K:
        try:
            scores[f"uplift@{k}"] = uplift_at_k(y, uplift, t, k / 100)
        except UpliftMetricError:
            scores[f"uplift@{k}"] = float("nan")
    if truth is not None:
        known = (t == 1) & np.isfinite(truth)
        pred, true = uplift[known], truth[known]
        corr = np.corrcoef(pred, true)[0, 1] if known.sum() > 2 and pred.std() > 0 else np.nan
        scores["truth_corr"] = float(corr)
        scores["ate_true"] = float(true.mean()) if known.any() else float("nan")
        scores["ate_error"] = float(pred.mean() - true.mean()) if known.any() else float("nan")
    return scores


def run_benchmark(
    dataset: UpliftDataset,
    config: BenchmarkConfig | None = None,
    progress: Callable[[str], None] | None = None,
    truth: dict[str, NDArray] | None = None,
) -> dict[str, Any]:
    """Run every library and learner on every (treatment, outcome); return the JSON report.

    ``progress`` is called once per fitted model with a short description (for progress bars);
    the number of calls is :func:`planned_fits` (``n_splits x treatments x outcomes x models``
    when every outcome is binary). ``truth`` maps outcomes to each row's true effect (see the
    module docstring).
    """
    config = config or BenchmarkConfig()
    candidates = _candidates(config)
    treatments = config.treatments or dataset.treatments
    outcomes = config.outcomes or tuple(dataset.outcomes)
    X_all = dataset.X.to_numpy(dtype=np.float64)
    results = []
    for treatment in treatments:
        rows = np.flatnonzero(np.isin(dataset.treatment, [treatment, dataset.control]))
        if rows.size == 0 or not (dataset.treatment[rows] == treatment).any():
            raise ValueError(f"{dataset.name}: no rows with treatment {treatment!r}")
        X = X_all[rows]
        t = (dataset.treatment[rows] == treatment).astype(np.int64)
        splits = _splits(dataset, rows, config)
        for outcome in outcomes:
            y = dataset.outcomes[outcome][rows]
            binary = _is_binary(y)
            true = None
            if truth is not None and outcome in truth:
                true = np.asarray(truth[outcome], dtype=np.float64)[rows]
            per_model: dict[tuple[str, str, str], list[dict[str, float]]] = {}
            for train, test in splits:
                for library, learner, model, fit_predict in candidates:
                    if not _fits_outcome(library, learner, binary):
                        continue
                    start = time.perf_counter()
                    uplift = fit_predict(X[train], y[train], t[train], X[test])
                    seconds = time.perf_counter() - start
                    scores = _score(
                        y[test], uplift, t[test], None if true is None else true[test]
                    ) | {"fit_seconds": seconds}
                    per_model.setdefault((library, learner, model), []).append(scores)
                    if progress:
                        progress(f"{treatment} / {outcome} / {library} {learner}")
            results += [
                _summarise(treatment, outcome, key, runs) for key, runs in per_model.items()
            ]
            log.info("%s: %s / %s done", dataset.name, treatment, outcome)
    return {
        "dataset": dataset.name,
        "n_splits": config.n_splits,
        "test_size": config.test_size,
        "seed": config.seed,
        "base_learner": config.base_learner,
        "base_params": {**DEFAULT_BASE_PARAMS[config.base_learner], **(config.base_params or {})},
        "results": results,
    }


def _summarise(
    treatment: str, outcome: str, key: tuple[str, str, str], runs: list[dict[str, float]]
) -> dict[str, Any]:
    library, learner, model = key
    row: dict[str, Any] = {
        "treatment": treatment,
        "outcome": outcome,
        "learner": learner,
        "library": library,
        "model": model,
        "n_splits": len(runs),
    }
    extra = [m for m in TRUTH_METRICS if m in runs[0]]
    for metric in ("qini", "auuc", *(f"uplift@{k}" for k in TOP_K), "fit_seconds", *extra):
        values = np.array([r[metric] for r in runs], dtype=np.float64)
        finite = values[np.isfinite(values)]
        row[metric] = float(finite.mean()) if finite.size else None
        row[f"{metric}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return row


def best_by_library(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (treatment, outcome): our best learner, the best peer and whether ours >= peer."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["results"]:
        groups.setdefault((r["treatment"], r["outcome"]), []).append(r)
    out = []
    for (treatment, outcome), rows in groups.items():
        ours = [r for r in rows if r["library"] == "ours"]
        peers = [r for r in rows if r["library"] != "ours"]
        best_ours = max(ours, key=lambda r: r["qini"]) if ours else None
        best_peer = max(peers, key=lambda r: r["qini"]) if peers else None
        out.append(
            {
                "treatment": treatment,
                "outcome": outcome,
                "ours": best_ours,
                "peer": best_peer,
                "ours_wins": (
                    None
                    if best_ours is None or best_peer is None
                    else best_ours["qini"] >= best_peer["qini"]
                ),
            }
        )
    return out


def report_markdown(report: dict[str, Any]) -> str:
    """Markdown tables of a report: Qini per learner and library, then ours vs best peer."""

    def cell(row: dict[str, Any] | None, metric: str = "qini") -> str:
        if row is None:
            return "-"
        return f"{row[metric]:.4f} ± {row[metric + '_std']:.4f}"

    libraries = [lib for lib in LIBRARIES if any(r["library"] == lib for r in report["results"])]
    index = {
        (r["treatment"], r["outcome"], r["learner"], r["library"]): r for r in report["results"]
    }
    keys = dict.fromkeys((r["treatment"], r["outcome"], r["learner"]) for r in report["results"])
    lines = [
        "| treatment | outcome | learner | "
        + " | ".join(f"Qini {lib}" for lib in libraries)
        + " | AUUC ours | uplift@30 ours |",
        "|---" * (5 + len(libraries)) + "|",
    ]
    for treatment, outcome, learner in keys:
        ours = index.get((treatment, outcome, learner, "ours"))
        cells = [cell(index.get((treatment, outcome, learner, lib))) for lib in libraries]
        u30 = "-" if ours is None else f"{ours['uplift@30']:.4f}"
        lines.append(
            f"| {treatment} | {outcome} | {learner} | "
            + " | ".join(cells)
            + f" | {cell(ours, 'auuc')} | {u30} |"
        )
    lines += [
        "",
        "| treatment | outcome | best ours | best peer | ours >= peer |",
        "|---|---|---|---|---|",
    ]
    for b in best_by_library(report):
        ours, peer = b["ours"], b["peer"]
        ours_text = "-" if ours is None else f"{ours['learner']} {ours['qini']:.4f}"
        peer_text = (
            "-" if peer is None else f"{peer['library']} {peer['learner']} {peer['qini']:.4f}"
        )
        verdict = "-" if b["ours_wins"] is None else ("yes" if b["ours_wins"] else "**no**")
        lines.append(
            f"| {b['treatment']} | {b['outcome']} | {ours_text} | {peer_text} | {verdict} |"
        )
    truth_rows = [r for r in report["results"] if "truth_corr" in r]
    if truth_rows:
        lines += [
            "",
            "| treatment | outcome | library | learner | truth corr | ATE error | true ATE |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['treatment']} | {r['outcome']} | {r['library']} | {r['learner']} | "
            f"{_fmt(r, 'truth_corr')} | {_fmt(r, 'ate_error')} | {_fmt(r, 'ate_true', False)} |"
            for r in truth_rows
        ]
    return "\n".join(lines) + "\n"


def _fmt(row: dict[str, Any], metric: str, with_std: bool = True) -> str:
    value = row.get(metric)
    if value is None:
        return "-"
    if not with_std:
        return f"{value:.4f}"
    return f"{value:.4f} ± {row.get(metric + '_std', 0.0):.4f}"
