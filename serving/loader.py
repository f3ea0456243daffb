"""The model loader: ``models:/name@alias`` (or a local model directory) -> a loaded pyfunc, its
version, where it came from, and a last-known-good copy on disk.

One loader for every path that decides: the API (lifespan and reload), ``offers score``
(:func:`serving.batch.load_scorer`) and policy evaluation.

* The tracking store is ``MLFLOW_TRACKING_URI`` or, by default, the SQLite file under
  ``OFFERS_HOME`` (:meth:`serving.settings.Settings.tracking_uri`): the same store that
  ``offers train`` registers into.
* A registry model is downloaded once per version into ``<lkg_dir>/<name>/v<version>-<origin>``
  and loaded from there (source ``registry``).
* When the registry cannot answer (server down, a server that accepts connections and never
  answers, alias missing), the copy named by ``<lkg_dir>/<name>/current.json`` is loaded instead
  (source ``local_copy``, with the reason). An http(s) tracking server is probed first with a
  connect-and-read timeout (``OFFERS_REGISTRY_TIMEOUT``, default 3 s) and MLflow's own requests
  get the same timeout and no retries, so a silent server costs seconds, not minutes.
* The pointer ``current.json`` is NOT moved by loading: the caller moves it with
  :meth:`LkgLoader.commit` once the model has passed its checks (the API: after the decision
  bundle built from it). It is written atomically (temporary file + ``os.replace``).

Errors: :class:`ModelSourceError` (nothing to load: registry unavailable and no local copy, or
a local directory that is not a model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from serving.settings import DataSettings, RegistrySettings

__all__ = [
    "CURRENT",
    "LOCAL_COPY",
    "LOCAL_DIR",
    "REGISTRY",
    "LkgLoader",
    "ModelCopy",
    "ModelSourceError",
    "RegistryUnavailable",
    "fetch_copy",
    "lkg_loader",
    "load_local_copy",
    "load_model",
    "read_current",
    "write_current",
]

log = logging.getLogger(__name__)

REGISTRY = "registry"  # loaded from the tracking server / registry just now
LOCAL_COPY = "local_copy"  # the last-known-good copy on disk (registry unavailable)
LOCAL_DIR = "local_dir"  # a model directory named directly (no registry involved)
CURRENT = "current.json"
SILENT_MEMORY_S = 10.0  # after a timeout, the next models of the same load skip the registry


class ModelSourceError(RuntimeError):
    """No model to load: names the model, the URI and why (registry error, missing copy)."""


class RegistryUnavailable(ConnectionError):
    """The tracking server did not answer within the timeout (names it and the timeout)."""


@dataclass(frozen=True)
class ModelCopy:
    """A loaded model and where it came from.

    ``source``: ``registry``, ``local_copy`` (``reason`` says why the registry was not used)
    or ``local_dir``; ``path``: the directory it was loaded from."""

    name: str
    uri: str
    model: Any
    version: str | None
    source: str
    path: Path | None = None
    reason: str | None = None


def _http(tracking_uri: str | None) -> bool:
    return bool(tracking_uri) and urlparse(tracking_uri).scheme in ("http", "https")


def probe(tracking_uri: str | None, timeout: float) -> None:
    """Raise :class:`RegistryUnavailable` unless an http(s) tracking server answers
    ``GET /health`` within ``timeout`` seconds (connect and read); other stores pass."""
    if not _http(tracking_uri):
        return
    url = f"{str(tracking_uri).rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read(64)
    except urllib.error.HTTPError:
        return  # it answered (an auth proxy, an old server without /health): MLflow decides
    except (OSError, ValueError) as exc:  # refused, reset, timed out
        raise RegistryUnavailable(
            f"tracking server {tracking_uri} did not answer within {timeout:g} s "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _bound_mlflow_requests(timeout: float) -> None:
    """MLflow's REST calls: the same timeout, no retries (a fallback exists); explicit
    environment settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout))))


def fetch_copy(
    name: str, uri: str, tracking_uri: str | None, lkg: Path, timeout: float = 3.0
) -> tuple[Path, str | None]:
    """Download ``uri`` into ``lkg/name/v<version>-<origin>`` (once per version) and return
    (directory, version). Does not move the ``current.json`` pointer."""
    import mlflow

    probe(tracking_uri, timeout)
    _bound_mlflow_requests(timeout)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version, tag = None, ""
    if uri.startswith("models:/") and "@" in uri:
        registered, alias = uri.removeprefix("models:/").split("@", 1)
        mv = client.get_model_version_by_alias(registered, alias)
        version = str(mv.version)
        # The run (or source) in the folder name: a recreated registry numbers from 1 again,
        # and its version 1 must not be served from an older copy named v1.
        origin = mv.run_id or mv.source or ""
        tag = "-" + hashlib.sha256(origin.encode()).hexdigest()[:12]
    dest = lkg / name / f"v{version}{tag}" if version else lkg / name / "latest"
    if version is None or not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
        try:
            if tracking_uri:  # models:/ downloads resolve through the global registry URI
                mlflow.set_tracking_uri(tracking_uri)
            got = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=str(tmp),
                    tracking_uri=tracking_uri,
                    registry_uri=tracking_uri,
                )
            )
            if dest.exists():
                shutil.rmtree(dest)
            got.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, version


def read_current(lkg: Path, name: str) -> dict[str, Any] | None:
    """The last-known-good record of ``name`` (``uri``, ``version``, ``path``) or None."""
    path = lkg / name / CURRENT
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.error("model %s: %s is unreadable (%s); no local copy", name, path, exc)
        return None
    return record if isinstance(record, dict) and "path" in record else None


def write_current(lkg: Path, copy: ModelCopy) -> None:
    """Point ``lkg/<name>/current.json`` at ``copy`` (atomic: temp file + ``os.replace``)."""
    if copy.path is None:
        return
    record = {"uri": copy.uri, "version": copy.version, "path": str(copy.path)}
    target = lkg / copy.name / CURRENT
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{CURRENT}.", dir=target.parent)  # workers may race
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _local_dir(uri: str) -> Path | None:
    """``uri`` as a local MLflow model directory (``file://`` or a path with an MLmodel)."""
    path = (
        Path(uri.removeprefix("file://")) if "://" not in uri or uri.startswith("file://") else None
    )
    if path is not None and path.is_dir() and (path / "MLmodel").is_file():
        return path
    return None


def load_local_copy(name: str, uri: str, lkg: Path, reason: str) -> ModelCopy:
    """The last-known-good copy of ``name`` (source ``local_copy`` with ``reason``); raises
    :class:`ModelSourceError` when there is none."""
    import mlflow

    record = read_current(lkg, name)
    if record is None:
        raise ModelSourceError(f"model {name!r}: no last-known-good copy in {lkg / name}")
    model = mlflow.pyfunc.load_model(record["path"])
    return ModelCopy(
        name, uri, model, record.get("version"), LOCAL_COPY, Path(record["path"]), reason
    )


def load_model(
    name: str,
    uri: str,
    *,
    tracking_uri: str | None = None,
    lkg_dir: Path | None = None,
    timeout: float | None = None,
    fallback: bool = True,
) -> ModelCopy:
    """Load ``uri`` (``models:/name@alias``, ``runs:/...`` or a local model directory) as a
    pyfunc. ``tracking_uri`` defaults to the one shared store
    (:meth:`~serving.settings.RegistrySettings.tracking_uri`). With ``fallback`` a registry failure
    loads the last-known-good copy under ``lkg_dir`` instead (raises
    :class:`ModelSourceError` when there is none). The pointer is not moved."""
    import mlflow

    registry, home = RegistrySettings(), DataSettings().home
    timeout = timeout or registry.registry_timeout
    lkg = lkg_dir or registry.lkg_path(home)
    local = _local_dir(uri)
    if local is not None:
        return ModelCopy(
            name, uri, mlflow.pyfunc.load_model(str(local)), local.name, LOCAL_DIR, local
        )
    tracking = tracking_uri or registry.tracking_uri(home)
    try:
        path, version = fetch_copy(name, uri, tracking, lkg, timeout)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        if not fallback or read_current(lkg, name) is None:
            raise ModelSourceError(
                f"model {name!r} from {uri!r} (tracking {tracking}): {reason}; "
                f"no last-known-good copy in {lkg / name}"
            ) from exc
        copy = load_local_copy(name, uri, lkg, f"registry unavailable: {reason}")
        log.warning(
            "model %s: registry unavailable (%s); serving the last-known-good copy v%s",
            name,
            reason,
            copy.version,
        )
        return copy
    return ModelCopy(name, uri, mlflow.pyfunc.load_model(str(path)), version, REGISTRY, path)


class LkgLoader:
    """``loader(name, uri) -> ModelCopy`` with last-known-good copies under ``lkg_dir``;
    ``loader.commit(copy)`` records a checked copy as the one to fall back to."""

    def __init__(
        self, tracking_uri: str | None, lkg_dir: Path, timeout: float | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.lkg_dir = lkg_dir
        self.timeout = timeout
        self._silent_until = 0.0  # a silent server is not asked again for each model
        self._silent_reason = ""

    def __call__(self, name: str, uri: str) -> ModelCopy:
        if time.monotonic() < self._silent_until and read_current(self.lkg_dir, name):
            return self.local(name, uri, self._silent_reason)
        copy = load_model(
            name, uri, tracking_uri=self.tracking_uri, lkg_dir=self.lkg_dir, timeout=self.timeout
        )
        if copy.source == LOCAL_COPY and RegistryUnavailable.__name__ in (copy.reason or ""):
            self._silent_until = time.monotonic() + SILENT_MEMORY_S
            self._silent_reason = copy.reason or ""
        return copy

    def local(self, name: str, uri: str, reason: str) -> ModelCopy:
        """The last-known-good copy of ``name`` (see :func:`load_local_copy`)."""
        return load_local_copy(name, uri, self.lkg_dir, reason)

    def commit(self, copy: ModelCopy) -> None:
        """Move the pointer to ``copy`` when it came from the registry (a local copy is
        already the pointer's; a local directory has none)."""
        if copy.source == REGISTRY:
            write_current(self.lkg_dir, copy)


def lkg_loader(tracking_uri: str | None, lkg_dir: Path, timeout: float | None = None) -> LkgLoader:
    """The service's loader (see :class:`LkgLoader`)."""
    return LkgLoader(tracking_uri, lkg_dir, timeout)
