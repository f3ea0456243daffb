"""Scores of a multi-treatment uplift model on a held-out split: per treatment, and the gate.

For each outcome and treatment ``k``, the rows of ``k`` and of control are ranked by the
model's predicted effect of ``k`` and scored with :mod:`training.uplift.metrics`: ``qini``
(normalised Qini coefficient), ``auuc`` and ``uplift@30``. The aggregate of an outcome
(``qini.<outcome>``) is the mean over treatments weighted by their numbers of treated rows, so
a kind sent a hundred times does not weigh as much as one sent ten thousand times; the gate
metric ``qini`` is that aggregate for the gate outcome.

Metric names: ``<metric>.<outcome>.<treatment>`` and ``<metric>.<outcome>``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.uplift.data import TREATMENT
from training.uplift.metrics import (
    UpliftMetricError,
    auuc,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
)

__all__ = ["GATE_METRIC", "plot_qini_grid", "score_effects"]

log = logging.getLogger(__name__)

GATE_METRIC = "qini"


def _safe(fn, *args) -> float:
    try:
        return float(fn(*args))
    except UpliftMetricError as exc:
        log.info("metric undefined: %s", exc)
        return float("nan")


def score_effects(
    frame: pd.DataFrame,
    effects: dict[str, NDArray[np.float64]],
    treatments: Sequence[str],
    control: str,
    gate_outcome: str,
) -> dict[str, float]:
    """Metrics of predicted ``effects`` (outcome -> ``(n, len(treatments))``) on ``frame``.

    ``frame`` holds the rows' ``treatment`` labels and one column per outcome. Treatments with
    no test row, or whose metric is undefined (e.g. no outcome at all), are left out of the
    aggregate. Returns ``{name: value}`` with NaN values dropped.
    """
    labels = frame[TREATMENT].to_numpy(dtype=object)
    is_control = labels == control
    out: dict[str, float] = {}
    for outcome, pred in effects.items():
        y = frame[outcome].to_numpy(dtype=np.float64)
        values, weights = [], []
        for j, treatment in enumerate(treatments):
            rows = is_control | (labels == treatment)
            t = (labels[rows] == treatment).astype(np.int64)
            if t.sum() == 0 or t.sum() == t.size:
                continue
            u = pred[rows, j]
            q = _safe(qini_coefficient, y[rows], u, t)
            out[f"qini.{outcome}.{treatment}"] = q
            out[f"auuc.{outcome}.{treatment}"] = _safe(auuc, y[rows], u, t)
            out[f"uplift@30.{outcome}.{treatment}"] = _safe(uplift_at_k, y[rows], u, t, 0.3)
            out[f"mean_effect.{outcome}.{treatment}"] = float(u[t == 1].mean())
            if math.isfinite(q):
                values.append(q)
                weights.append(float(t.sum()))
        if values:
            out[f"qini.{outcome}"] = float(np.average(values, weights=weights))
    if f"qini.{gate_outcome}" in out:
        out[GATE_METRIC] = out[f"qini.{gate_outcome}"]
    return {k: v for k, v in out.items() if math.isfinite(v)}


def plot_qini_grid(
    frame: pd.DataFrame,
    pred: NDArray[np.float64],
    treatments: Sequence[str],
    control: str,
    outcome: str,
    path: Path,
) -> Path:
    """One PNG with a Qini curve per treatment (model vs random targeting) for ``outcome``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = frame[TREATMENT].to_numpy(dtype=object)
    y = frame[outcome].to_numpy(dtype=np.float64)
    n = len(treatments)
    cols = min(n, 4)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.0 * rows_), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for j, treatment in enumerate(treatments):
        ax = axes.ravel()[j]
        rows = (labels == control) | (labels == treatment)
        t = (labels[rows] == treatment).astype(np.int64)
        ax.set_title(str(treatment), fontsize=9)
        if t.sum() == 0 or t.sum() == t.size:
            ax.text(0.5, 0.5, "no test rows", ha="center", transform=ax.transAxes)
            continue
        x, q = qini_curve(y[rows], pred[rows, j], t)
        ax.plot(x, q, label="model")
        ax.plot([0, x[-1]], [0, q[-1]], "--", color="grey", label="random")
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(f"Qini curves on the test split: {outcome}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
