"""Peer uplift learners (CausalML, scikit-uplift) as multi-arm effect predictors.

Each peer is a function ``fit_predict(X_train, y_train, arm_train, X_test, n_arms)`` returning
the (n_test, n_arms - 1) predicted effects of arms 1..K against arm 0 (none), so that its
argmax policy is built by the same rule as ours (:func:`training.policy.policies.send_policy`).
Peers are benchmark-only (the ``bench`` extra): :func:`available_peers` lists those that can
run here and skips the rest (with the reason in :func:`missing_peer_libraries`).

* CausalML: S-, T-, X-, R- and DR-learners (multi-treatment, constant randomised
  propensities: each arm's share of the training rows of that arm and none) over the same
  LightGBM base estimator as ours, and its uplift random forest (binary outcomes only);
* scikit-uplift: ``SoloModel``, ``TwoModels`` and ``ClassTransformation`` (the last binary
  outcomes only), one two-arm model per arm against none.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models.uplift import make_base_estimator

__all__ = ["PEER_LIBRARIES", "PeerFit", "available_peers", "missing_peer_libraries"]

PEER_LIBRARIES = {"causalml": "causalml==0.18.0", "sklift": "scikit-uplift==0.5.1"}
PeerFit = Callable[[NDArray, NDArray, NDArray, NDArray, int], NDArray]


def missing_peer_libraries() -> list[str]:
    """The peer libraries that cannot be imported here (pip pins in :data:`PEER_LIBRARIES`)."""
    return [lib for lib in PEER_LIBRARIES if importlib.util.find_spec(lib) is None]


def _labels(arm: NDArray) -> NDArray:
    # zero-padded labels sort like the arm indices (t02 < t10), so peers' columns follow 1..K
    return np.char.add("t", np.char.zfill(arm.astype(str), 2))


def _pair_shares(arm: NDArray, n_arms: int) -> dict[int, float]:
    none = (arm == 0).sum()
    return {k: float((arm == k).sum() / ((arm == k).sum() + none)) for k in range(1, n_arms)}


def _causalml_meta(kind: str, params: dict[str, Any], seed: int) -> PeerFit:
    from causalml.inference import meta

    def fit_predict(X_tr, y_tr, arm_tr, X_te, n_arms):
        binary = bool(np.isin(y_tr, (0, 1)).all())
        task: Literal["classifier", "regressor"] = "classifier" if binary else "regressor"

        def est(t: Literal["classifier", "regressor"] = task) -> Any:
            return make_base_estimator("lightgbm", t, params, seed)

        t_tr = _labels(arm_tr)
        shares = _pair_shares(arm_tr, n_arms)
        p_tr = {f"t{k:02d}": np.full(len(X_tr), s) for k, s in shares.items()}
        p_te = {f"t{k:02d}": np.full(len(X_te), s) for k, s in shares.items()}
        if kind == "S":
            cls = meta.BaseSClassifier if binary else meta.BaseSRegressor
            model = cls(learner=est(), control_name="t00")
            model.fit(X_tr, treatment=t_tr, y=y_tr)
            return np.asarray(model.predict(X_te))
        if kind == "T":
            cls = meta.BaseTClassifier if binary else meta.BaseTRegressor
            model = cls(learner=est(), control_name="t00")
            model.fit(X_tr, treatment=t_tr, y=y_tr)
            return np.asarray(model.predict(X_te))
        if kind == "X":
            if binary:
                model = meta.BaseXClassifier(
                    outcome_learner=est(), effect_learner=est("regressor"), control_name="t00"
                )
            else:
                model = meta.BaseXRegressor(learner=est(), control_name="t00")
            model.fit(X_tr, treatment=t_tr, y=y_tr, p=p_tr)
            return np.asarray(model.predict(X_te, p=p_te))
        if kind == "R":
            if binary:
                model = meta.BaseRClassifier(
                    outcome_learner=est(), effect_learner=est("regressor"),
                    control_name="t00", n_fold=3, random_state=seed,
                )  # fmt: skip
            else:
                model = meta.BaseRRegressor(
                    learner=est(), control_name="t00", n_fold=3, random_state=seed
                )
            model.fit(X_tr, treatment=t_tr, y=y_tr, p=p_tr, verbose=False)
            return np.asarray(model.predict(X_te))
        if kind == "DR":
            model = meta.BaseDRRegressor(learner=est("regressor"), control_name="t00")
            model.fit(X_tr, treatment=t_tr, y=y_tr.astype(np.float64), p=p_tr, seed=seed)
            return np.asarray(model.predict(X_te, p=p_te, verbose=False))
        raise ValueError(f"unknown CausalML learner {kind!r}")

    return fit_predict


def _causalml_forest(trees: int, seed: int) -> PeerFit:
    from causalml.inference.tree import UpliftRandomForestClassifier

    def fit_predict(X_tr, y_tr, arm_tr, X_te, n_arms):
        model = UpliftRandomForestClassifier(
            control_name="t00", n_estimators=trees, max_depth=5, min_samples_leaf=200,
            min_samples_treatment=50, max_features=min(10, X_tr.shape[1]),
            evaluationFunction="KL", random_state=seed, n_jobs=1,
        )  # fmt: skip
        model.fit(X_tr, treatment=_labels(arm_tr), y=y_tr.astype(np.int64))
        pred = np.asarray(model.predict(X_te), dtype=np.float64)
        return pred.reshape(len(X_te), n_arms - 1)

    return fit_predict


def _sklift(kind: str, params: dict[str, Any], seed: int) -> PeerFit:
    from sklift import models

    def fit_predict(X_tr, y_tr, arm_tr, X_te, n_arms):
        binary = bool(np.isin(y_tr, (0, 1)).all())
        task: Literal["classifier", "regressor"] = "classifier" if binary else "regressor"
        out = np.zeros((len(X_te), n_arms - 1))
        for k in range(1, n_arms):
            rows = (arm_tr == 0) | (arm_tr == k)
            t = (arm_tr[rows] == k).astype(np.int64)

            def est() -> Any:
                return make_base_estimator("lightgbm", task, params, seed)

            if kind == "S":
                model = models.SoloModel(estimator=est(), method="dummy")
            elif kind == "T":
                model = models.TwoModels(
                    estimator_trmnt=est(), estimator_ctrl=est(), method="vanilla"
                )
            else:
                model = models.ClassTransformation(estimator=est())
            model.fit(X_tr[rows], y_tr[rows], t)
            out[:, k - 1] = np.asarray(model.predict(X_te), dtype=np.float64).ravel()
        return out

    return fit_predict


def available_peers(
    binary: bool, base_params: dict[str, Any] | None = None, seed: int = 0, forest_trees: int = 50
) -> dict[str, PeerFit]:
    """Peer name (``library:learner``) -> fit_predict, for the installed peer libraries."""
    params = dict(base_params or {})
    missing = set(missing_peer_libraries())
    peers: dict[str, PeerFit] = {}
    if "causalml" not in missing:
        for kind in ("S", "T", "X", "R", "DR"):
            peers[f"causalml:{kind}"] = _causalml_meta(kind, params, seed)
        if binary:
            peers["causalml:UpliftRF"] = _causalml_forest(forest_trees, seed)
    if "sklift" not in missing:
        for kind in ("S", "T", "CT") if binary else ("S", "T"):
            peers[f"sklift:{kind}"] = _sklift(kind, params, seed)
    return peers
