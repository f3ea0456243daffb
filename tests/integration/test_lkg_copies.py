"""Last-known-good model copies are keyed by version AND origin: a recreated registry that
numbers from 1 again never gets an older copy named v1 served in its place."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from serving.loader import fetch_copy as _fetch

pytestmark = pytest.mark.integration


class _Const(mlflow.pyfunc.PythonModel):
    def __init__(self, value: int) -> None:
        self.value = value

    def predict(self, context, model_input):  # type: ignore[no-untyped-def]
        return [self.value] * len(model_input)


def _register(tracking_uri: str, value: int) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=_Const(value))
    mv = mlflow.register_model(info.model_uri, "lkg-probe")
    mlflow.MlflowClient().set_registered_model_alias("lkg-probe", "champion", mv.version)


def test_recreated_registry_version_1_is_not_served_from_the_old_copy(tmp_path: Path) -> None:
    lkg = tmp_path / "lkg"
    uri = "models:/lkg-probe@champion"
    first = f"sqlite:///{tmp_path / 'a.db'}"
    _register(first, 1)
    path_a, version_a = _fetch("probe", uri, first, lkg)
    second = f"sqlite:///{tmp_path / 'b.db'}"  # a new store: numbering starts at 1 again
    _register(second, 2)
    path_b, version_b = _fetch("probe", uri, second, lkg)
    assert version_a == version_b == "1"
    assert path_a != path_b
    assert mlflow.pyfunc.load_model(str(path_a)).predict([0]) == [1]
    assert mlflow.pyfunc.load_model(str(path_b)).predict([0]) == [2]
    # the same version of the same registry is downloaded once
    assert _fetch("probe", uri, second, lkg)[0] == path_b
