"""Class transformation (Jaskowski & Jaroszewicz 2012) for binary outcomes.

For each treatment ``k``, on the rows of ``k`` and control, define ``z = 1`` when
(treated and ``y = 1``) or (control and ``y = 0``). When treatment and control carry equal
weight at every ``x``, ``tau_k(x) = 2 * P(z = 1 | x) - 1``. Equal weight is obtained by
weighting rows: with ``propensity`` given, by ``1 / p`` (each arm then stands for the whole
population); without it, by ``0.5 / share`` of the row's arm within the pair (a randomised
experiment with unequal arm sizes).
"""

from __future__ import annotations

import numpy as np

from models.uplift.base import BaseUpliftLearner, Readout, Term

__all__ = ["ClassTransformationLearner"]


class ClassTransformationLearner(BaseUpliftLearner):
    """One classifier of the transformed class ``z`` per treatment (binary outcomes only)."""

    supports_continuous = False

    def _fit(self, X, y, group, weights) -> Readout:
        k = len(self.treatments_)
        terms = []
        for j in range(1, k + 1):
            pair = (group == 0) | (group == j)
            treated = (group[pair] == j).astype(np.float64)
            z = (y[pair] == treated).astype(np.int64)
            if weights is None:
                share = treated.mean()
                w = np.where(treated == 1.0, 0.5 / share, 0.5 / (1.0 - share))
            else:
                w = weights[pair]
            model = self._estimator("classifier").fit(X[pair], z, sample_weight=w)
            terms.append(Term(model, "proba"))
        return Readout(tuple(terms), 2.0 * np.eye(k), -np.ones(k))
