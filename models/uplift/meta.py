"""Meta-learners: S-learner, T-learner and X-learner over gradient-boosted trees.

* **S-learner**: one outcome model on ``X`` plus one 0/1 indicator column per treatment;
  effect of treatment ``k`` = ``f(X, e_k) - f(X, 0)``.
* **T-learner**: one outcome model per group; effect = ``f_k(X) - f_control(X)``.
* **X-learner** (Künzel et al. 2019): stage 1 is a T-learner; stage 2 regresses the imputed
  effects ``y - f_control(X)`` on the treated rows and ``f_k(X) - y`` on the control rows;
  effect = ``g_k * tau_control(X) + (1 - g_k) * tau_k(X)`` where ``g_k`` is the (weighted)
  share of treatment ``k`` among the rows of treatment ``k`` and control.

See :mod:`models.uplift.base` for treatment labels, outcomes and propensity weights.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from models.uplift.base import BaseUpliftLearner, Readout, Term

__all__ = ["SLearner", "TLearner", "XLearner"]


def _rows(weights: NDArray[np.float64] | None, mask: NDArray[np.bool_]):
    return None if weights is None else weights[mask]


def _difference_weights(n_terms: int, n_treatments: int) -> NDArray[np.float64]:
    """Weights for ``effect_k = term_k - term_0`` with terms ``[control, t_1, ..., t_K]``."""
    w = np.zeros((n_terms, n_treatments))
    w[0, :] = -1.0
    w[np.arange(1, n_treatments + 1), np.arange(n_treatments)] = 1.0
    return w


class SLearner(BaseUpliftLearner):
    """One model on features plus treatment indicators (see the module docstring)."""

    def _fit(self, X, y, group, weights) -> Readout:
        k = len(self.treatments_)
        indicators = np.zeros((X.shape[0], k), dtype=X.dtype)
        treated = group > 0
        indicators[np.flatnonzero(treated), group[treated] - 1] = 1.0
        model = self._fit_estimator(
            self._estimator(self._outcome_task()), np.hstack([X, indicators]), y, weights
        )
        eye = np.vstack([np.zeros(k), np.eye(k)])
        terms = tuple(
            Term(model, self._outcome_output(), tuple(float(v) for v in row)) for row in eye
        )
        return Readout(terms, _difference_weights(k + 1, k), np.zeros(k))


class TLearner(BaseUpliftLearner):
    """One model per group (see the module docstring)."""

    def _fit(self, X, y, group, weights) -> Readout:
        k = len(self.treatments_)
        terms = []
        for j in range(k + 1):
            mask = group == j
            model = self._fit_estimator(
                self._estimator(self._outcome_task()), X[mask], y[mask], _rows(weights, mask)
            )
            terms.append(Term(model, self._outcome_output()))
        return Readout(tuple(terms), _difference_weights(k + 1, k), np.zeros(k))


class XLearner(BaseUpliftLearner):
    """Two-stage learner with imputed effects (see the module docstring).

    Learned attribute ``control_share_`` holds ``g_k`` per treatment.
    """

    def _fit(self, X, y, group, weights) -> Readout:
        k = len(self.treatments_)
        outcome_models = []
        for j in range(k + 1):
            mask = group == j
            outcome_models.append(
                self._fit_estimator(
                    self._estimator(self._outcome_task()), X[mask], y[mask], _rows(weights, mask)
                )
            )
        stage1 = [Term(m, self._outcome_output()) for m in outcome_models]
        control = group == 0
        w = np.ones(X.shape[0]) if weights is None else weights
        terms: list[Term] = []
        shares = np.zeros(k)
        for j in range(1, k + 1):
            treated = group == j
            d_treated = y[treated] - stage1[0].evaluate(X[treated])
            d_control = stage1[j].evaluate(X[control]) - y[control]
            tau_treated = self._fit_estimator(
                self._estimator("regressor"), X[treated], d_treated, _rows(weights, treated)
            )
            tau_control = self._fit_estimator(
                self._estimator("regressor"), X[control], d_control, _rows(weights, control)
            )
            terms += [Term(tau_control, "value"), Term(tau_treated, "value")]
            shares[j - 1] = w[treated].sum() / (w[treated].sum() + w[control].sum())
        readout_weights = np.zeros((2 * k, k))
        readout_weights[2 * np.arange(k), np.arange(k)] = shares
        readout_weights[2 * np.arange(k) + 1, np.arange(k)] = 1.0 - shares
        self.control_share_ = shares
        return Readout(tuple(terms), readout_weights, np.zeros(k))
