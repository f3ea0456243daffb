"""Export a fitted uplift learner to one ONNX graph and serve it with onnxruntime.

The graph follows the learner's :class:`~models.uplift.base.Readout`: input ``X`` (float32,
``[n, n_features]``), one converted tree ensemble per distinct base model, and output
``uplift`` (float32, ``[n, n_treatments]``) = ``outputs @ weights + intercept``. When several
terms share a base model (the S-learner evaluates one model with each treatment indicator), the
augmented inputs are stacked row-wise and the model runs once.

Converters: scikit-learn's HistGradientBoosting through ``skl2onnx``; LightGBM through
``onnxmltools`` (imported only for LightGBM models). Tree thresholds become float32 in ONNX, so
a row whose feature lies between a float64 threshold and its float32 rounding could fall on the
other side; the parity test bounds the difference at 1e-4 on real and synthetic data.

Exporting needs ``onnx`` and a converter (the ``train`` extra); :class:`OnnxUpliftPredictor`
needs ``onnxruntime`` alone (the ``serve`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.uplift.base import BaseUpliftLearner, NotFittedError, Term, UpliftInputError

if TYPE_CHECKING:  # onnx is needed to export only; serving needs onnxruntime alone
    import onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OnnxUpliftPredictor", "export_onnx"]

INPUT_NAME = "X"
OUTPUT_NAME = "uplift"
_OPSET = 15  # the highest onnxmltools 1.16 converts LightGBM to
_ML_OPSET = 3


def _convert(estimator: Any, n_features: int) -> onnx.ModelProto:
    """One base estimator as an ONNX model with input ``X_in`` and no ZipMap."""
    opsets = {"": _OPSET, "ai.onnx.ml": _ML_OPSET}
    if type(estimator).__module__.startswith("lightgbm"):
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat

        initial_types = [("X_in", MlFloat([None, n_features]))]
        # split=10: trees summed in groups, so float32 accumulation stays within 1e-4 of native
        kwargs = {"zipmap": False} if hasattr(estimator, "predict_proba") else {"split": 10}
        return onnxmltools.convert_lightgbm(
            estimator, initial_types=initial_types, target_opset=_OPSET, **kwargs
        )
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    initial_types = [("X_in", FloatTensorType([None, n_features]))]
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    return convert_sklearn(
        estimator, initial_types=initial_types, target_opset=opsets, options=options
    )


class _GraphBuilder:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.opsets: dict[str, int] = {"": _OPSET, "ai.onnx.ml": _ML_OPSET}
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: NDArray) -> str:
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def inline(self, model: onnx.ModelProto, prefix: str, x: str) -> list[str]:
        """Add ``model``'s graph fed by tensor ``x``; return its output names."""
        from onnx import compose

        model = compose.add_prefix(model, prefix)
        graph = model.graph
        self.nodes.append(self.helper.make_node("Identity", [x], [graph.input[0].name]))
        self.nodes.extend(graph.node)
        self.initializers.extend(graph.initializer)
        for opset in model.opset_import:
            self.opsets[opset.domain] = max(self.opsets.get(opset.domain, 0), opset.version)
        return [o.name for o in graph.output]


def _term_input(g: _GraphBuilder, term: Term, n_rows: str) -> str:
    """``X`` with the term's constant indicator columns appended."""
    if not term.indicator:
        return INPUT_NAME
    m = len(term.indicator)
    row = g.const("indicator", np.asarray([term.indicator], dtype=np.float32))
    shape = g.node("Concat", [n_rows, g.const("m", np.array([m], np.int64))], "shape", axis=0)
    block = g.node("Expand", [row, shape], "block")
    return g.node("Concat", [INPUT_NAME, block], "augmented", axis=1)


def _term_column(g: _GraphBuilder, term: Term, outputs: list[str]) -> str:
    """The term's output as an ``[m, 1]`` float tensor."""
    if term.output == "proba":
        probs = next(o for o in outputs if o.endswith("probabilities"))
        starts, ends, axes = ([1], [2], [1])
        return g.node(
            "Slice",
            [
                probs,
                g.const("s", np.array(starts, np.int64)),
                g.const("e", np.array(ends, np.int64)),
                g.const("a", np.array(axes, np.int64)),
            ],
            "p1",
        )
    value = next(o for o in outputs if o.endswith("variable"))
    return g.node("Reshape", [value, g.const("col", np.array([-1, 1], np.int64))], "value")


def export_onnx(learner: BaseUpliftLearner) -> bytes:
    """Serialise a fitted learner's prediction as one ONNX model (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    if not hasattr(learner, "readout_"):
        raise NotFittedError(f"{type(learner).__name__} is not fitted; nothing to export")
    readout = learner.readout_
    d = learner.n_features_in_
    g = _GraphBuilder()
    n_rows = g.node(
        "Slice",
        [
            g.node("Shape", [INPUT_NAME], "xshape"),
            g.const("s", np.array([0], np.int64)),
            g.const("e", np.array([1], np.int64)),
        ],
        "n",
    )
    # group the terms by base model so that each model runs once
    groups: dict[int, list[int]] = {}
    for i, term in enumerate(readout.terms):
        groups.setdefault(id(term.estimator), []).append(i)
    columns, order = [], []
    for gi, indices in enumerate(groups.values()):
        first = readout.terms[indices[0]]
        sub = _convert(first.estimator, d + len(first.indicator))
        inputs = [_term_input(g, readout.terms[i], n_rows) for i in indices]
        x = inputs[0] if len(inputs) == 1 else g.node("Concat", inputs, "stacked", axis=0)
        col = _term_column(g, first, g.inline(sub, f"m{gi}_", x))
        if len(indices) > 1:  # [j*n, 1] -> [n, j]
            j = np.array([len(indices), -1], np.int64)
            col = g.node("Transpose", [g.node("Reshape", [col, g.const("j", j)], "r")], "t")
        columns.append(col)
        order.extend(indices)
    stacked = columns[0] if len(columns) == 1 else g.node("Concat", columns, "outputs", axis=1)
    weights = g.const("weights", readout.weights[order].astype(np.float32))
    intercept = g.const("intercept", readout.intercept.astype(np.float32))
    product = g.node("MatMul", [stacked, weights], "product")
    g.nodes.append(helper.make_node("Add", [product, intercept], [OUTPUT_NAME], name="readout"))

    k = readout.weights.shape[1]
    graph = helper.make_graph(
        g.nodes,
        f"uplift_{type(learner).__name__}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, d])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, k])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(dom, ver) for dom, ver in g.opsets.items()],
        producer_name="loyalty-offers",
    )
    model.ir_version = min(model.ir_version, 9)  # onnxruntime 1.32 reads IR <= 10
    meta = {
        "learner": type(learner).__name__,
        "treatments": "|".join(map(str, learner.treatments_)),
        "outcome": learner.outcome_,
        "n_features": str(d),
    }
    if learner.feature_names_in_:
        meta["feature_names"] = "|".join(learner.feature_names_in_)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxUpliftPredictor:
    """Predict uplift from ONNX bytes with onnxruntime; the session is built once.

    ``predict(X)`` returns the same ``(n, n_treatments)`` array as the native learner
    (float64, computed in float32). ``treatments`` and ``n_features`` come from the model's
    metadata.
    """

    # rows per onnxruntime call: the S-learner graph concatenates a copy of the rows per arm
    # (1M members, 34 arms x 150 columns: 2 GB for 100,000 rows; 0.2 GB for 10,000)
    chunk_rows = 10_000

    def __init__(self, model_bytes: bytes, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        meta = self._session.get_modelmeta().custom_metadata_map
        self.treatments: list[str] = meta.get("treatments", "").split("|")
        self.n_features = int(meta["n_features"])
        self.learner = meta.get("learner", "")

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """Effects of each treatment against control, shape ``(n, n_treatments)``."""
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise UpliftInputError(f"X must have shape (n, {self.n_features}); got {arr.shape}")
        if arr.shape[0] <= self.chunk_rows:  # the serving path: one call
            (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(arr)})
            return out.astype(np.float64)
        # chunks of rows: onnxruntime's intermediate tensors (one per tree ensemble and, for
        # the S-learner, a copy of the rows per arm) stay the size of a chunk
        parts = []
        for start in range(0, arr.shape[0], self.chunk_rows):
            part = np.ascontiguousarray(arr[start : start + self.chunk_rows])
            parts.append(self._session.run([OUTPUT_NAME], {INPUT_NAME: part})[0])
        return np.concatenate(parts).astype(np.float64)
