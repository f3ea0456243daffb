"""Feature rows -> the numeric matrix an uplift learner was fitted on, the same at serving time.

:class:`FeatureEncoder` learns, on the training rows, which columns are numeric and which are
categorical and, for each categorical column, its levels. ``transform`` then always gives the
same columns in the same order:

* numeric and boolean columns pass through as float64 (null -> NaN, which the tree learners
  and their ONNX graphs route like a missing value);
* a categorical (string) column becomes one 0/1 column per level seen in training, at most
  ``max_levels`` (the most frequent; ties by name), named ``<column>=<level>``. A null, or a
  level never seen in training (e.g. a region added later), gives 0 in every one of them.

Precision. Every value is rounded to 16 significant bits (relative precision 8e-6, far finer
than any tree split needs; the result is float64). The ONNX graph compares float32 inputs with
float32 thresholds, while LightGBM compares float64 inputs with float64 thresholds placed just
above the midpoint of two training values. With full-precision values, a row whose value and
a threshold round to the same float32 goes the other way in ONNX (simulated program, 50,000
members: T-learner 0.007 off on conversion; rounding values to float32 alone made it worse, 0.036
and 0.56 on spend). With 16-bit values, the midpoint of two values is a float32 number and the
threshold rounds onto it, so both sides agree exactly (3e-7 on the same rows).

Memory. ``transform`` encodes ``chunk_rows`` rows at a time into one preallocated matrix, so
its temporaries (the one-hot blocks, the rounding) are those of a chunk, not of the whole
frame. ``dtype=np.float32`` halves the matrix and is exact: a 16-bit value is a float32
number, so the learners see the same values (a 1.26M x 117 training matrix of a 1M-member
program: 0.55 GiB instead of 1.1 GiB).

The encoder is stored with the model as JSON (:meth:`to_dict` / :meth:`from_dict`), so serving
needs neither the training data nor the training code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from models.uplift.base import NotFittedError, UpliftInputError

__all__ = ["MANTISSA_BITS", "FeatureEncoder", "quantise"]

_FORMAT = 1
MANTISSA_BITS = 16


def quantise(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``values`` rounded to :data:`MANTISSA_BITS` significant bits (NaN stays NaN)."""
    mantissa, exponent = np.frexp(np.asarray(values, dtype=np.float64))
    scale = float(2**MANTISSA_BITS)
    return np.ldexp(np.round(mantissa * scale) / scale, exponent)


class FeatureEncoder:
    """One-hot categoricals with levels fixed at fit time; numeric columns as float64."""

    def __init__(self, max_levels: int = 50) -> None:
        self.max_levels = max_levels

    def fit(self, frame: pd.DataFrame, columns: Sequence[str] | None = None) -> FeatureEncoder:
        """Learn the columns (``columns``, default all of ``frame``'s) and the levels."""
        if not isinstance(frame, pd.DataFrame):
            raise UpliftInputError(f"frame must be a DataFrame; got {type(frame).__name__}")
        if not isinstance(self.max_levels, int) or self.max_levels < 1:
            raise UpliftInputError(f"max_levels must be an int >= 1; got {self.max_levels!r}")
        cols = list(frame.columns if columns is None else columns)
        _require(frame, cols)
        if not cols:
            raise UpliftInputError("frame has no feature columns to encode")
        self.columns_: list[str] = [str(c) for c in cols]
        self.levels_: dict[str, list[str]] = {}
        for col in self.columns_:
            s = frame[col]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                continue
            counts = s.dropna().astype(str).value_counts()
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            self.levels_[col] = sorted(level for level, _ in ranked[: self.max_levels])
        self.feature_names_out_: list[str] = _names_out(self.columns_, self.levels_)
        return self

    def transform(
        self,
        frame: pd.DataFrame,
        dtype: type[np.floating] = np.float64,
        chunk_rows: int = 100_000,
    ) -> NDArray[np.floating]:
        """The encoded matrix, shape ``(len(frame), len(feature_names_out_))``, values rounded
        to :data:`MANTISSA_BITS` significant bits (see the module docstring), as ``dtype``
        (float64 or float32: the same values), built ``chunk_rows`` rows at a time.

        Raises :class:`UpliftInputError` naming a missing column, or a numeric column whose
        values are not numbers.
        """
        if not hasattr(self, "columns_"):
            raise NotFittedError("FeatureEncoder is not fitted; call fit(frame)")
        if not isinstance(frame, pd.DataFrame):
            raise UpliftInputError(f"frame must be a DataFrame; got {type(frame).__name__}")
        if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise UpliftInputError(f"dtype must be float64 or float32; got {np.dtype(dtype)}")
        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise UpliftInputError(f"chunk_rows must be an int >= 1; got {chunk_rows!r}")
        _require(frame, self.columns_)
        out = np.empty((len(frame), len(self.feature_names_out_)), dtype=dtype)
        for start in range(0, len(frame), chunk_rows):
            part = frame.iloc[start : start + chunk_rows]
            out[start : start + len(part)] = quantise(self._encode(part))
        return out

    def _encode(self, frame: pd.DataFrame) -> NDArray[np.float64]:
        """The unrounded float64 matrix of ``frame`` (columns checked by the caller)."""
        blocks: list[NDArray[np.float64]] = []
        for col in self.columns_:
            s = frame[col]
            if col in self.levels_:
                levels = self.levels_[col]
                # -1 for a level not seen in fit (and for nulls): an all-zero block row
                values = s.astype("string").astype(object)
                codes = pd.Index(levels, dtype=object).get_indexer(values)
                block = np.zeros((len(frame), len(levels)))
                hit = codes >= 0
                block[np.flatnonzero(hit), codes[hit]] = 1.0
                blocks.append(block)
                continue
            try:
                values = pd.to_numeric(s, errors="raise").astype("Float64")
            except (TypeError, ValueError) as exc:
                raise UpliftInputError(
                    f"column '{col}' was numeric in training; got non-numeric values "
                    f"{s.dropna().astype(str).unique()[:3].tolist()}"
                ) from exc
            blocks.append(values.to_numpy(dtype=np.float64, na_value=np.nan)[:, None])
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    def fit_transform(
        self, frame: pd.DataFrame, columns: Sequence[str] | None = None
    ) -> NDArray[np.floating]:
        """``fit`` then ``transform`` on the same frame."""
        return self.fit(frame, columns).transform(frame)

    @property
    def categorical_columns(self) -> list[str]:
        """The input columns encoded one-hot."""
        return [c for c in self.columns_ if c in self.levels_]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (what :meth:`from_dict` reads)."""
        if not hasattr(self, "columns_"):
            raise NotFittedError("FeatureEncoder is not fitted; nothing to save")
        return {
            "format": _FORMAT,
            "max_levels": self.max_levels,
            "columns": self.columns_,
            "levels": self.levels_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoder:
        """Rebuild a fitted encoder from :meth:`to_dict`'s output."""
        if data.get("format") != _FORMAT:
            raise UpliftInputError(
                f"encoder: unsupported format {data.get('format')!r}; expected {_FORMAT}"
            )
        enc = cls(max_levels=int(data["max_levels"]))
        enc.columns_ = [str(c) for c in data["columns"]]
        enc.levels_ = {str(k): [str(v) for v in vs] for k, vs in data["levels"].items()}
        unknown = sorted(set(enc.levels_) - set(enc.columns_))
        if unknown:
            raise UpliftInputError(f"encoder: levels given for unknown columns {unknown}")
        enc.feature_names_out_ = _names_out(enc.columns_, enc.levels_)
        return enc


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UpliftInputError(
            f"frame: missing feature column(s) {missing[:10]}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )


def _names_out(columns: list[str], levels: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for col in columns:
        out += [f"{col}={level}" for level in levels[col]] if col in levels else [col]
    return out
