"""The uplift model packaged as an MLflow pyfunc (models-from-code: nothing is pickled).

Artifacts: one ONNX graph per outcome (``onnx_<outcome>``, from
:func:`models.uplift.onnx_export.export_onnx`), the feature encoder (``encoder``, JSON of
:class:`~models.uplift.encoding.FeatureEncoder`) and ``meta`` (JSON: outcomes, treatments,
control label, treatment grain, outcome window, learner, and the feature pipeline's resolved
configuration, which serving must use to compute the input rows).

Input: one row per member, the feature pipeline's member features as of the decision time
(the columns the encoder was fitted on; extra columns such as ``member_id`` are ignored).
Output, one row per input row in the same order: one column per outcome and treatment named
``<outcome>:<treatment>`` (e.g. ``spend:bogo``), the estimated effect of sending that treatment
rather than nothing (difference in conversion probability, or in spend over the window).

``load_context`` builds the onnxruntime sessions once; ``predict`` needs only numpy, pandas and
onnxruntime, never the training code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.uplift.base import UpliftInputError
from models.uplift.encoding import FeatureEncoder
from models.uplift.onnx_export import OnnxUpliftPredictor

__all__ = [
    "ENTRY_POINT",
    "UpliftPyfunc",
    "effect_column",
    "save_artifacts",
    "signature",
]

ENTRY_POINT = Path(__file__).with_name("pyfunc_entry.py")


def effect_column(outcome: str, treatment: str) -> str:
    """Output column of one outcome and treatment: ``<outcome>:<treatment>``."""
    return f"{outcome}:{treatment}"


def save_artifacts(
    onnx_models: dict[str, bytes],
    encoder: FeatureEncoder,
    meta: dict[str, Any],
    out_dir: Path,
) -> dict[str, str]:
    """Write the artifacts to ``out_dir``; returns the ``artifacts`` mapping for log_model.

    ``onnx_models`` maps each outcome to its serialised graph; ``meta`` must name the
    ``outcomes`` (in that order) and the ``treatments`` (the graphs' output columns).
    """
    missing = [k for k in ("outcomes", "treatments", "control") if k not in meta]
    if missing:
        raise UpliftInputError(f"meta: missing key(s) {missing}")
    if list(onnx_models) != list(meta["outcomes"]):
        raise UpliftInputError(
            f"meta outcomes {meta['outcomes']} differ from the ONNX models' {list(onnx_models)}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    arts: dict[str, str] = {}
    for outcome, data in onnx_models.items():
        path = out_dir / f"uplift_{outcome}.onnx"
        path.write_bytes(data)
        arts[f"onnx_{outcome}"] = str(path)
    enc = out_dir / "encoder.json"
    enc.write_text(json.dumps(encoder.to_dict(), indent=1))
    arts["encoder"] = str(enc)
    meta_path = out_dir / "uplift_meta.json"
    meta_path.write_text(json.dumps(meta, indent=1, default=str))
    arts["meta"] = str(meta_path)
    return arts


def signature(example: pd.DataFrame, outcomes: Sequence[str], treatments: Sequence[str]) -> Any:
    """Input schema from an example of feature rows (every column optional, so a null or an
    absent optional attribute is accepted); output: one double column per outcome x treatment."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    def spec(name: str, s: pd.Series) -> ColSpec:
        if pd.api.types.is_bool_dtype(s):
            kind = "boolean"
        elif pd.api.types.is_integer_dtype(s):
            kind = "long"
        elif pd.api.types.is_numeric_dtype(s):
            kind = "double"
        else:
            kind = "string"
        return ColSpec(kind, name, required=False)

    inputs = Schema([spec(str(c), example[c]) for c in example.columns])
    outputs = Schema([ColSpec("double", effect_column(o, t)) for o in outcomes for t in treatments])
    return ModelSignature(inputs=inputs, outputs=outputs)


class UpliftPyfunc(PythonModel):
    """``load_context`` builds the sessions once; ``predict`` returns per-treatment effects."""

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts)

    def load(self, artifacts: dict[str, str]) -> UpliftPyfunc:
        """Load from artifact paths (also usable without MLflow)."""
        self.meta_: dict[str, Any] = json.loads(Path(artifacts["meta"]).read_text())
        self.encoder_ = FeatureEncoder.from_dict(json.loads(Path(artifacts["encoder"]).read_text()))
        self.outcomes_: list[str] = [str(o) for o in self.meta_["outcomes"]]
        self.treatments_: list[str] = [str(t) for t in self.meta_["treatments"]]
        self.sessions_: dict[str, OnnxUpliftPredictor] = {}
        n_features = len(self.encoder_.feature_names_out_)
        for outcome in self.outcomes_:
            predictor = OnnxUpliftPredictor(Path(artifacts[f"onnx_{outcome}"]).read_bytes())
            if predictor.treatments != self.treatments_:
                raise UpliftInputError(
                    f"ONNX model of {outcome!r} predicts {predictor.treatments}; meta says "
                    f"{self.treatments_}"
                )
            if predictor.n_features != n_features:
                raise UpliftInputError(
                    f"ONNX model of {outcome!r} takes {predictor.n_features} features; the "
                    f"encoder gives {n_features}"
                )
            self.sessions_[outcome] = predictor
        self.columns_ = [effect_column(o, t) for o in self.outcomes_ for t in self.treatments_]
        return self

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Effects per outcome and treatment for every input row (see the module docstring).

        ``params={"outcomes": [...]}`` computes only those outcomes (their columns, in the
        model's order); an outcome the model does not have is an error naming it."""
        if not isinstance(model_input, pd.DataFrame):
            raise UpliftInputError(f"input must be a DataFrame, got {type(model_input).__name__}")
        outcomes = self.outcomes_
        if params and params.get("outcomes") is not None:
            wanted = [str(o) for o in params["outcomes"]]
            unknown = sorted(set(wanted) - set(self.outcomes_))
            if unknown:
                raise UpliftInputError(
                    f"params.outcomes: {unknown} not among the model's {self.outcomes_}"
                )
            outcomes = [o for o in self.outcomes_ if o in wanted]
        columns = [effect_column(o, t) for o in outcomes for t in self.treatments_]
        if len(model_input) == 0:
            return pd.DataFrame({c: np.zeros(0) for c in columns})
        X = self.encoder_.transform(model_input)
        blocks = [self.sessions_[o].predict(X) for o in outcomes]
        return pd.DataFrame(np.hstack(blocks), columns=columns)
