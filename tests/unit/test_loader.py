"""The one model loader (serving.loader): sources, the last-known-good pointer rule, and a
tracking server that accepts connections but never answers (issue 17 item 5)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from serving.loader import (
    LOCAL_COPY,
    LOCAL_DIR,
    REGISTRY,
    ModelSourceError,
    lkg_loader,
    load_model,
    read_current,
)

URI = "models:/loader-probe@champion"


class _Const(mlflow.pyfunc.PythonModel):
    def __init__(self, value: int) -> None:
        self.value = value

    def predict(self, context: object, model_input: list[int]) -> list[int]:
        return [self.value] * len(model_input)


def _register(tracking_uri: str, value: int) -> str:
    """Log a constant model, register it and make it champion; returns its version."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=_Const(value))
        mv = mlflow.register_model(info.model_uri, "loader-probe")
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias("loader-probe", "champion", mv.version)
    return str(mv.version)


@pytest.fixture
def registry(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_loading_does_not_move_the_pointer_commit_does(tmp_path: Path, registry: str) -> None:
    lkg = tmp_path / "lkg"
    loader = lkg_loader(registry, lkg)
    _register(registry, 1)
    first = loader("probe", URI)
    assert (first.source, first.version, first.reason) == (REGISTRY, "1", None)
    assert read_current(lkg, "probe") is None  # loaded, not yet checked: no pointer
    loader.commit(first)
    assert read_current(lkg, "probe")["version"] == "1"
    _register(registry, 2)
    second = loader("probe", URI)
    assert second.version == "2" and second.model.predict([0]) == [2]
    assert read_current(lkg, "probe")["version"] == "1"  # still the checked one
    loader.commit(second)
    assert json.loads((lkg / "probe" / "current.json").read_text())["version"] == "2"
    assert [p.name for p in (lkg / "probe").iterdir() if p.name.startswith(".")] == []


def test_a_silent_tracking_server_falls_back_to_the_local_copy_within_seconds(
    tmp_path: Path, registry: str, silent_server: str
) -> None:
    lkg = tmp_path / "lkg"
    _register(registry, 7)
    good = lkg_loader(registry, lkg)
    good.commit(good("probe", URI))
    started = time.monotonic()
    copy = lkg_loader(silent_server, lkg, timeout=1.0)("probe", URI)
    elapsed = time.monotonic() - started
    assert copy.source == LOCAL_COPY and copy.version == "1"
    assert copy.model.predict([0]) == [7]
    assert "did not answer within 1 s" in copy.reason and silent_server in copy.reason
    assert elapsed < 15, f"fallback took {elapsed:.1f} s"  # was 46 s before the timeout


def test_no_registry_and_no_copy_names_the_model_and_where_it_looked(
    tmp_path: Path, silent_server: str
) -> None:
    with pytest.raises(ModelSourceError) as err:
        load_model("probe", URI, tracking_uri=silent_server, lkg_dir=tmp_path, timeout=1.0)
    message = str(err.value)
    assert "'probe'" in message and URI in message and str(tmp_path / "probe") in message


def test_a_local_model_directory_loads_without_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "const-model"
    mlflow.pyfunc.save_model(str(path), python_model=_Const(3))
    copy = load_model("probe", str(path), lkg_dir=tmp_path / "lkg")
    assert (copy.source, copy.version, copy.path) == (LOCAL_DIR, "const-model", path)
    assert copy.model.predict([0]) == [3]


def test_the_default_tracking_store_is_the_one_training_uses(tmp_path: Path, monkeypatch) -> None:
    """No MLFLOW_TRACKING_URI: the loader reads ``<OFFERS_HOME>/mlflow.db``, as
    ``training.registry.ModelRegistry`` writes it."""
    from training.registry import ModelRegistry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path))
    registry = ModelRegistry(home=tmp_path)
    assert registry.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    _register(registry.tracking_uri, 5)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it
    copy = load_model("probe", URI)
    assert copy.source == REGISTRY and copy.model.predict([0]) == [5]
    assert copy.path is not None and copy.path.is_relative_to(tmp_path / "serving" / "models")
