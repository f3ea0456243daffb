"""The MLflow model registry gate, generic over models: log, register, gate, promote, roll back.

Every training run logs its parameters, data window, metrics and model (a pyfunc with a
signature and an input example) and registers it under a model name; the new version gets the
alias ``challenger``. It becomes ``champion`` only if it beats the current champion on the
gate metric *on the same stored test window* (``test_window`` tag); a champion stored with
another window is re-scored on the challenger's window through a caller-supplied function, or
the gate refuses. A forced promotion sets ``champion`` on any version; rolling back is promoting
an earlier version (:meth:`ModelRegistry.rollback` picks the previous champion from the
promotion history kept on the registered model).

Tracking store: ``MLFLOW_TRACKING_URI`` when set (e.g. a remote ``mlflow server``), otherwise a
local SQLite file ``<OFFERS_HOME>/mlflow.db`` with artifacts in ``<OFFERS_HOME>/mlartifacts``.
MLflow metric names cannot hold ``@``: ``recall@10`` is logged as ``recall_at_10``.

Errors: :class:`RegistryError` (unknown model or version, gate impossible).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.settings import DataSettings, RegistrySettings

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Gate",
    "GateDecision",
    "ModelRegistry",
    "RegistryError",
    "metric_key",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TEST_WINDOW_TAG = "test_window"
HISTORY_TAG = "champion_history"
DEFAULT_EXPERIMENT = "offers"
ROLLBACK = "rollback"


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked (names the model, version or window)."""


def metric_key(name: str) -> str:
    """MLflow-safe metric name: ``recall@10`` -> ``recall_at_10``."""
    return name.replace("@", "_at_")


@dataclass(frozen=True)
class Gate:
    """Promotion rule: the challenger must beat the champion on ``metric`` by > ``min_delta``."""

    metric: str
    higher_is_better: bool = True
    min_delta: float = 0.0

    def beats(self, challenger: float, champion: float) -> bool:
        delta = challenger - champion if self.higher_is_better else champion - challenger
        return delta > self.min_delta


@dataclass(frozen=True)
class GateDecision:
    """Outcome of a gate: promoted or not, why, and the two figures compared."""

    promoted: bool
    reason: str
    version: str
    challenger_value: float | None
    champion_version: str | None = None
    champion_value: float | None = None
    policy: dict[str, Any] | None = None  # the off-policy check (training.policy.gate), if run


class ModelRegistry:
    """Registry operations for any model name (the gate metric and direction are parameters)."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        home: Path | None = None,
    ) -> None:
        from mlflow import MlflowClient

        self.home = (home or DataSettings().home).resolve()
        self.tracking_uri = tracking_uri or RegistrySettings().tracking_uri(self.home)
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        # ``policy_check(registry, name, champion_version, challenger_version)`` -> a result with
        # ``passed``, ``reason`` and ``as_dict()`` (training.policy.gate.PolicyCheck): when set,
        # a challenger is promoted only if its policy also passes (module docstring).
        self.policy_check: Callable[..., Any] | None = None

    # ---- logging and registering --------------------------------------------------------------
    def experiment_id(self) -> str:
        """The experiment's id, created on first use (local stores keep artifacts in home)."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:") or self.tracking_uri.startswith("file:"):
            location = (self.home / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def log_and_register(
        self,
        name: str,
        *,
        python_model: str | Path | Any,
        artifacts: dict[str, str],
        signature: Any,
        input_example: Any,
        params: dict[str, Any],
        metrics: dict[str, float],
        test_window: str,
        tags: dict[str, str] | None = None,
        files: list[Path] | None = None,
        pip_requirements: list[str] | None = None,
        run_name: str | None = None,
    ) -> str:
        """Log one run (params, metrics, files, pyfunc model), register it under ``name`` and
        give the new version the ``challenger`` alias. Returns the version."""
        import mlflow
        from mlflow.exceptions import MlflowException

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            # nested: under the caller's active run when there is one (``offers retrain``'s
            # step runs); a top-level run otherwise
            with mlflow.start_run(
                experiment_id=self.experiment_id(), run_name=run_name, nested=True
            ) as run:
                mlflow.log_params({k: _param(v) for k, v in params.items()})
                mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
                mlflow.set_tags({TEST_WINDOW_TAG: test_window, **(tags or {})})
                for f in files or []:
                    mlflow.log_artifact(str(f))
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(python_model)
                    if isinstance(python_model, Path)
                    else python_model,
                    artifacts=artifacts,
                    signature=signature,
                    input_example=input_example,
                    pip_requirements=pip_requirements,
                )
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if "already exists" not in str(exc).lower():
                    raise
            # the store resolves the logged model through the (global) tracking URI set above
            mv = self.client.create_model_version(
                name, source=info.model_uri, run_id=run.info.run_id, model_id=info.model_id
            )
        finally:
            mlflow.set_tracking_uri(previous)
        version = str(mv.version)
        self.client.set_model_version_tag(name, version, TEST_WINDOW_TAG, test_window)
        self.client.set_model_version_tag(name, version, "run_id", run.info.run_id)
        self.client.set_registered_model_alias(name, CHALLENGER, version)
        log.info(
            "registered %s version %s (run %s) as %s", name, version, run.info.run_id, CHALLENGER
        )
        return version

    # ---- reading ----------------------------------------------------------------------------
    def version_of(self, name: str, alias: str) -> str | None:
        """The version holding ``alias``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def metrics(self, name: str, version: str) -> dict[str, float]:
        """The metrics logged by the run that produced ``version`` (``@`` names restored)."""
        mv = self._version(name, version)
        data = self.client.get_run(mv.run_id).data.metrics
        return {k.replace("_at_", "@"): float(v) for k, v in data.items()}

    def test_window(self, name: str, version: str) -> str | None:
        """The test window ``version`` was scored on."""
        return self._version(name, version).tags.get(TEST_WINDOW_TAG)

    def versions(self, name: str) -> list[str]:
        """Every version of ``name``, oldest first."""
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted((str(v.version) for v in found), key=int)

    def history(self, name: str) -> list[dict[str, str]]:
        """Promotions to champion, oldest first: version, time, reason."""
        rm = self._registered(name)
        return json.loads(rm.tags.get(HISTORY_TAG, "[]"))

    def download(self, name: str, alias_or_version: str, path: str = "") -> Path:
        """Local copy of a registered model's files (or of ``path`` inside them)."""
        import mlflow

        uri = self.model_uri(name, alias_or_version) + (f"/{path}" if path else "")
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        finally:
            mlflow.set_tracking_uri(previous)

    def model_uri(self, name: str, alias_or_version: str) -> str:
        """``models:/name@alias`` or ``models:/name/version``."""
        if alias_or_version.isdigit():
            return f"models:/{name}/{alias_or_version}"
        return f"models:/{name}@{alias_or_version}"

    # ---- gate, promotion, rollback ------------------------------------------------------------
    def gate(
        self,
        name: str,
        version: str,
        gate: Gate,
        rescore_champion: Callable[[str, str], float | None] | None = None,
    ) -> GateDecision:
        """Promote ``version`` to champion if it beats the current champion on ``gate.metric``
        on the same test window (see module docstring); the first version always wins.

        ``rescore_champion(champion_version, test_window)`` re-scores a champion stored with another
        test window on the challenger's window (None: cannot, the gate refuses).
        """
        mine = self.metrics(name, version).get(gate.metric)
        if mine is None:
            raise RegistryError(f"{name} version {version}: no metric '{gate.metric}' logged")
        champ = self.version_of(name, CHAMPION)
        if champ is None:
            self.promote(name, version, reason="gate: first version")
            return GateDecision(True, "no champion yet", version, mine)
        if champ == version:
            return GateDecision(False, "already champion", version, mine, champ, mine)
        window = self.test_window(name, version)
        theirs: float | None
        if self.test_window(name, champ) == window:
            theirs = self.metrics(name, champ).get(gate.metric)
            how = "stored"
        elif rescore_champion is not None:
            theirs = rescore_champion(champ, window or "")
            how = "re-scored"
        else:
            theirs, how = None, "different window"
        if theirs is None:
            reason = (
                f"champion v{champ} has no {gate.metric} on test window {window!r}: not promoted "
                f"(force with a promote)"
            )
            return GateDecision(False, reason, version, mine, champ, None)
        policy = None
        if self.policy_check is not None:
            policy = self.policy_check(self, name, champ, version)
            self.client.set_model_version_tag(name, version, "policy_gate", policy.reason[:500])
        policy_ok = policy is None or policy.passed
        policy_dict = None if policy is None else policy.as_dict()
        policy_text = "" if policy is None else f"; policy: {policy.reason}"
        if gate.beats(mine, theirs) and policy_ok:
            self.promote(name, version, reason=f"gate: {gate.metric} {mine:.4f} vs {theirs:.4f}")
            reason = (
                f"beats champion v{champ} ({how}): {gate.metric} {mine:.4f} vs {theirs:.4f}"
                f"{policy_text}"
            )
            return GateDecision(True, reason, version, mine, champ, theirs, policy_dict)
        verb = "beats" if gate.beats(mine, theirs) else "does not beat"
        reason = (
            f"{verb} champion v{champ} ({how}): {gate.metric} {mine:.4f} vs {theirs:.4f}"
            f"{policy_text}{'' if policy_ok else ' -> not promoted'}"
        )
        return GateDecision(False, reason, version, mine, champ, theirs, policy_dict)

    def promote(self, name: str, version: str, reason: str = "forced") -> None:
        """Give ``version`` the champion alias (any version: this is also how to roll back)."""
        self._version(name, version)
        self.client.set_registered_model_alias(name, CHAMPION, version)
        self.client.set_model_version_tag(name, version, "promoted_reason", reason)
        history = self.history(name)
        history.append(
            {
                "version": version,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "reason": reason,
            }
        )
        self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
        log.info("%s version %s is now %s (%s)", name, version, CHAMPION, reason)

    def rollback(self, name: str) -> str:
        """Promote the champion before the current one; returns that version.

        Rollbacks undo promotions like a stack: rolling back twice goes two champions back.
        """
        stack: list[str] = []
        for h in self.history(name):
            if h["reason"].startswith(ROLLBACK) and stack:
                stack.pop()
            else:
                stack.append(h["version"])
        current = self.version_of(name, CHAMPION)
        earlier = [v for v in stack[:-1] if v != current]
        if not earlier:
            raise RegistryError(f"{name}: no earlier champion to roll back to")
        target = earlier[-1]
        self.promote(name, target, reason=f"{ROLLBACK} from v{current}")
        return target

    # ---- helpers -----------------------------------------------------------------------------
    def _registered(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            raise RegistryError(
                f"no registered model named {name!r} at {self.tracking_uri}"
            ) from exc

    def _version(self, name: str, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        self._registered(name)
        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            known = ", ".join(self.versions(name)) or "none"
            raise RegistryError(f"{name} has no version {version} (versions: {known})") from exc


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]
