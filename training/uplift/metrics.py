"""Uplift metrics: Qini and uplift curves, normalised Qini coefficient, AUUC, uplift@k, deciles.

Every function is pure and checks its inputs first (:func:`check_uplift_inputs`): ``y_true``,
``uplift`` and ``treatment`` must be 1-D, of the same length, free of NaN / infinity, and
``treatment`` must be binary (0 = control, 1 = treated) with both groups present. A bad input
raises :class:`UpliftMetricError` naming the argument and the offending value.

Notation. Sort the rows by predicted uplift, highest first. For the top ``t`` rows let
``N_T(t)``, ``N_C(t)`` be the numbers of treated and control rows and ``Y_T(t)``, ``Y_C(t)`` the
sums of the outcome among them. Rows with equal predicted uplift cannot be told apart by the
model, so curves are evaluated only at the end of each group of tied scores (as ROC curves are):
the result does not depend on how ties happen to be ordered. Every curve starts at ``(0, 0)``.

* **Qini curve** (Radcliffe): ``Q(t) = Y_T(t) - Y_C(t) * N_T(t) / N_C(t)``, the incremental
  outcomes among the top ``t`` rows; the control term is 0 while ``N_C(t) = 0``.
* **Uplift curve**: ``U(t) = (Y_T(t) / N_T(t) - Y_C(t) / N_C(t)) * t``; the rate of an empty
  group is taken as 0.
* **Random line**: the straight line from ``(0, 0)`` to the curve's last point ``(n, C(n))``,
  i.e. what targeting in random order gives on average. Its area is ``n * C(n) / 2``.
* **Oracle ordering**: the ranking an all-knowing model would choose from the observed data:
  treated rows with a positive outcome first (largest outcome first), then rows with a zero
  outcome, then control rows with a positive outcome (largest last). It is the ordering by the
  score ``y * (2 * treatment - 1)``.
* **Normalised Qini coefficient** = ``(A_model - A_random) / (A_oracle - A_random)`` where ``A``
  is the trapezoid area under the Qini curve: 1 for the oracle ordering, about 0 for a random
  ranking, negative for a ranking worse than random (the same normalisation as scikit-uplift's
  ``qini_auc_score``). The oracle is a reference, not always the maximum: because of the
  ``N_T / N_C`` scaling, an ordering that puts control rows first while no treated row has been
  seen can beat it on small or odd samples (e.g. no treated responder), giving values above 1.
* **AUUC** (normalised) = the same ratio of areas computed on the uplift curve. The oracle
  ordering maximises the Qini curve, not always the uplift curve, so AUUC can in principle
  exceed 1; ``normalize=False`` returns the raw area divided by ``n``.
* **uplift@k**: among the top ``ceil(k * n)`` rows (ties kept in input order), the mean outcome
  of the treated minus the mean outcome of the controls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "UpliftMetricError",
    "auuc",
    "check_uplift_inputs",
    "oracle_uplift",
    "plot_qini_curve",
    "plot_uplift_curve",
    "qini_coefficient",
    "qini_curve",
    "uplift_at_k",
    "uplift_by_decile",
    "uplift_curve",
]


class UpliftMetricError(ValueError):
    """An uplift metric got an input it cannot score (names the argument and the value)."""


def _as_1d(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise UpliftMetricError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise UpliftMetricError(f"{name} is empty")
    if arr.dtype == bool:
        arr = arr.astype(np.int8)
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise UpliftMetricError(f"{name} must be numeric; got dtype {arr.dtype}") from exc
    bad = ~np.isfinite(out)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UpliftMetricError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s); first at index {first}: "
            f"{float(out[first])}"
        )
    return out


def check_uplift_inputs(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Validate and return ``(y_true, uplift, treatment)`` as 1-D float arrays.

    Raises :class:`UpliftMetricError` when an argument is not 1-D, is empty, holds NaN or
    infinity, when the lengths differ, or when ``treatment`` is not 0/1 with both groups present.
    """
    y = _as_1d("y_true", y_true)
    u = _as_1d("uplift", uplift)
    t = _as_1d("treatment", treatment)
    lengths = {"y_true": y.size, "uplift": u.size, "treatment": t.size}
    if len(set(lengths.values())) > 1:
        raise UpliftMetricError(f"inputs must have the same length; got {lengths}")
    not_binary = (t != 0) & (t != 1)
    if not_binary.any():
        first = int(np.flatnonzero(not_binary)[0])
        values = sorted({float(v) for v in np.unique(t[not_binary])[:5]})
        raise UpliftMetricError(
            f"treatment must be 0 (control) or 1 (treated); got values {values} "
            f"(first at index {first})"
        )
    n_treated = int(t.sum())
    if n_treated in (0, t.size):
        group = "control" if n_treated == t.size else "treated"
        raise UpliftMetricError(f"treatment has no {group} rows (n={t.size}); need both groups")
    return y, u, t


@dataclass(frozen=True)
class _Cumulative:
    """Cumulative counts at the end of each tie group, with a leading zero row."""

    n: NDArray[np.float64]
    n_t: NDArray[np.float64]
    n_c: NDArray[np.float64]
    y_t: NDArray[np.float64]
    y_c: NDArray[np.float64]


def _cumulative(y: NDArray, u: NDArray, t: NDArray) -> _Cumulative:
    order = np.argsort(-u, kind="mergesort")
    y_s, t_s, u_s = y[order], t[order], u[order]
    ends = np.r_[np.flatnonzero(np.diff(u_s) != 0), u_s.size - 1]
    n = (ends + 1).astype(np.float64)
    n_t = np.cumsum(t_s)[ends]
    y_t = np.cumsum(y_s * t_s)[ends]
    y_c = np.cumsum(y_s * (1.0 - t_s))[ends]

    def lead(a: NDArray) -> NDArray[np.float64]:
        return np.r_[0.0, a]

    return _Cumulative(lead(n), lead(n_t), lead(n - n_t), lead(y_t), lead(y_c))


def _safe_div(num: NDArray, den: NDArray) -> NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _qini_values(c: _Cumulative) -> NDArray[np.float64]:
    return c.y_t - _safe_div(c.y_c * c.n_t, c.n_c)


def _uplift_values(c: _Cumulative) -> NDArray[np.float64]:
    return (_safe_div(c.y_t, c.n_t) - _safe_div(c.y_c, c.n_c)) * c.n


def qini_curve(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Qini curve: ``(x, q)`` with ``x`` the number of rows targeted and ``q = Q(x)``."""
    c = _cumulative(*check_uplift_inputs(y_true, uplift, treatment))
    return c.n, _qini_values(c)


def uplift_curve(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Uplift curve: ``(x, u)`` with ``x`` the number of rows targeted and ``u = U(x)``."""
    c = _cumulative(*check_uplift_inputs(y_true, uplift, treatment))
    return c.n, _uplift_values(c)


def oracle_uplift(y_true: ArrayLike, treatment: ArrayLike) -> NDArray[np.float64]:
    """Scores of the oracle ordering: ``y * (2 * treatment - 1)`` (see the module docstring)."""
    y, _, t = check_uplift_inputs(y_true, np.zeros(np.asarray(y_true).shape), treatment)
    return y * (2.0 * t - 1.0)


def _area(x: NDArray, v: NDArray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (v[1:] + v[:-1]) / 2.0))


def _normalised_area(y: NDArray, u: NDArray, t: NDArray, values, metric: str) -> float:
    model = _cumulative(y, u, t)
    oracle = _cumulative(y, y * (2.0 * t - 1.0), t)
    v_model, v_oracle = values(model), values(oracle)
    random_area = model.n[-1] * v_model[-1] / 2.0
    denom = _area(oracle.n, v_oracle) - random_area
    if math.isclose(denom, 0.0, abs_tol=1e-12):
        raise UpliftMetricError(
            f"{metric} is undefined for this y_true: the oracle curve equals the random line "
            f"(y_true sum among treated={float((y * t).sum())}, "
            f"among control={float((y * (1 - t)).sum())})"
        )
    return (_area(model.n, v_model) - random_area) / denom


def qini_coefficient(y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Normalised Qini coefficient: ``(A_model - A_random) / (A_oracle - A_random)``.

    1 for the oracle ordering, about 0 for a random one, negative when worse than random.
    Raises :class:`UpliftMetricError` when the oracle curve equals the random line (e.g. no
    row has a non-zero outcome), where the ratio is undefined.
    """
    y, u, t = check_uplift_inputs(y_true, uplift, treatment)
    return _normalised_area(y, u, t, _qini_values, "qini_coefficient")


def auuc(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, *, normalize: bool = True
) -> float:
    """Area under the uplift curve.

    With ``normalize=True`` (default): ``(A_model - A_random) / (A_oracle - A_random)`` on the
    uplift curve, the same normalisation as :func:`qini_coefficient`. With ``normalize=False``:
    the trapezoid area under the uplift curve divided by ``n`` (in outcome units).
    """
    y, u, t = check_uplift_inputs(y_true, uplift, treatment)
    if normalize:
        return _normalised_area(y, u, t, _uplift_values, "auuc")
    c = _cumulative(y, u, t)
    return _area(c.n, _uplift_values(c)) / float(y.size)


def _top_order(u: NDArray) -> NDArray[np.intp]:
    return np.argsort(-u, kind="mergesort")


def uplift_at_k(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, k: float = 0.3
) -> float:
    """Mean outcome of treated minus mean outcome of controls among the top ``ceil(k*n)`` rows.

    ``k`` is a fraction in (0, 1]. Ties at the cut-off are kept in input order. Raises
    :class:`UpliftMetricError` when the top rows hold no treated or no control row.
    """
    y, u, t = check_uplift_inputs(y_true, uplift, treatment)
    if not (isinstance(k, int | float) and 0.0 < float(k) <= 1.0):
        raise UpliftMetricError(f"k must be a fraction in (0, 1]; got {k!r}")
    m = math.ceil(float(k) * y.size)
    top = _top_order(u)[:m]
    y_top, t_top = y[top], t[top]
    n_t = float(t_top.sum())
    if n_t in (0.0, float(m)):
        group = "treated" if n_t == 0.0 else "control"
        raise UpliftMetricError(
            f"uplift@k is undefined for k={k}: the top {m} rows hold no {group} row"
        )
    return float((y_top * t_top).sum() / n_t - (y_top * (1 - t_top)).sum() / (m - n_t))


def uplift_by_decile(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, bins: int = 10
) -> pd.DataFrame:
    """Observed uplift per bin of predicted uplift (bin 1 = highest predictions).

    Rows are ranked by predicted uplift (ties in input order) and cut into ``bins`` groups of
    nearly equal size. Columns: ``bin``, ``n_treatment``, ``n_control``, ``rate_treatment``,
    ``rate_control``, ``uplift`` (``rate_treatment - rate_control``; NaN if a group is empty)
    and ``mean_predicted`` (mean predicted uplift in the bin).
    """
    y, u, t = check_uplift_inputs(y_true, uplift, treatment)
    if not (isinstance(bins, int) and 1 <= bins <= y.size):
        raise UpliftMetricError(f"bins must be an int in [1, {y.size}]; got {bins!r}")
    bin_of = np.empty(y.size, dtype=np.int64)
    bin_of[_top_order(u)] = np.repeat(
        np.arange(1, bins + 1), [len(a) for a in np.array_split(np.arange(y.size), bins)]
    )
    frame = pd.DataFrame({"bin": bin_of, "t": t, "yt": y * t, "yc": y * (1 - t), "u": u})
    g = frame.groupby("bin", sort=True).agg(
        n=("t", "size"),
        n_treatment=("t", "sum"),
        yt=("yt", "sum"),
        yc=("yc", "sum"),
        mean_predicted=("u", "mean"),
    )
    n_c = g["n"] - g["n_treatment"]
    out = pd.DataFrame(
        {
            "bin": g.index.to_numpy(),
            "n_treatment": g["n_treatment"].astype(np.int64).to_numpy(),
            "n_control": n_c.astype(np.int64).to_numpy(),
            "rate_treatment": (g["yt"] / g["n_treatment"].where(g["n_treatment"] > 0)).to_numpy(),
            "rate_control": (g["yc"] / n_c.where(n_c > 0)).to_numpy(),
            "mean_predicted": g["mean_predicted"].to_numpy(),
        }
    )
    out.insert(5, "uplift", out["rate_treatment"] - out["rate_control"])
    return out


def _plot(
    kind: str,
    y_true: ArrayLike,
    uplift: ArrayLike | Mapping[str, ArrayLike],
    treatment: ArrayLike,
    path: str | Path,
    title: str | None,
) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = qini_curve if kind == "qini" else uplift_curve
    score = qini_coefficient if kind == "qini" else auuc
    models = dict(uplift) if isinstance(uplift, Mapping) else {"model": uplift}
    if not models:
        raise UpliftMetricError("uplift mapping is empty; give at least one model's scores")
    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x_last, v_last = 0.0, 0.0
    for name, scores in models.items():
        x, v = curve(y_true, scores, treatment)
        ax.plot(x, v, label=f"{name} ({score(y_true, scores, treatment):.3f})")
        x_last, v_last = float(x[-1]), float(v[-1])
    xo, vo = curve(y_true, oracle_uplift(y_true, treatment), treatment)
    ax.plot(xo, vo, color="grey", linestyle=":", label="oracle")
    ax.plot([0.0, x_last], [0.0, v_last], color="black", linestyle="--", label="random")
    ax.set_xlabel("rows targeted (highest predicted uplift first)")
    ax.set_ylabel("incremental outcomes" if kind == "qini" else "uplift x rows targeted")
    ax.set_title(title or ("Qini curve" if kind == "qini" else "Uplift curve"))
    ax.legend(loc="best", fontsize="small")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def plot_qini_curve(
    y_true: ArrayLike,
    uplift: ArrayLike | Mapping[str, ArrayLike],
    treatment: ArrayLike,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Write a PNG of the Qini curve(s) with the random line and the oracle; return its path.

    ``uplift`` is one model's scores or a mapping ``name -> scores`` to overlay several models.
    """
    return _plot("qini", y_true, uplift, treatment, path, title)


def plot_uplift_curve(
    y_true: ArrayLike,
    uplift: ArrayLike | Mapping[str, ArrayLike],
    treatment: ArrayLike,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Write a PNG of the uplift curve(s) with the random line and the oracle; return its path."""
    return _plot("uplift", y_true, uplift, treatment, path, title)
