"""The Starbucks uplift data set as documented: first send, 7-day window, profile features."""

from __future__ import annotations

import numpy as np
import pytest

from training.uplift.datasets import load_starbucks

pytestmark = pytest.mark.integration


def test_starbucks_treatment_window_and_features(shared_data) -> None:
    data = load_starbucks(shared_data)
    assert data.X.shape == (17_000, 7)
    labels, counts = np.unique(data.treatment, return_counts=True)
    assert dict(zip(labels, counts, strict=True)) == {
        "bogo": 5_018,
        "discount": 5_093,
        "informational": 2_539,
        "none": 4_350,
    }
    assert data.control == "none"
    # 11,256 members buy at least once in hours [0, 168)
    assert int(data.outcomes["purchase"].sum()) == 11_256
    none = data.treatment == "none"
    assert data.outcomes["purchase"][none].mean() == pytest.approx(0.5356, abs=1e-4)
    assert data.outcomes["purchase_3plus"].sum() < data.outcomes["purchase"].sum()
    assert int(data.X["demographics_missing"].sum()) == 2_175
    assert not data.X.isna().any().any()
