"""Validation of a data directory against the canonical tables.

Every source (simulator, adapters, a customer's export) goes through here. The result lists
every problem found, grouped by kind, each naming the file, the column, offending values and
(1-based) data row numbers. Fixable problems are fixed and counted; rows that cannot be fixed are
rejected and counted; nothing is dropped without being reported.

Problem kinds (``Problem.kind``) and what happens to the rows:

========================  ========  ==========================================================
kind                      action    meaning
========================  ========  ==========================================================
missing_file              error     a table file is absent from the directory
unreadable_file           error     the file is not Parquet/CSV
missing_column            error     a required column is absent (the table is not loaded)
extra_column              error     a column that is not in the canonical schema
wrong_type                rejected  a value that does not parse as the column's type
missing_value             rejected  a null in a required column
not_allowed               rejected  a value outside the column's allowed values
negative_value            rejected  a negative amount, cost, quantity, ...
out_of_range              rejected  a value outside the column's bounds (e.g. propensity)
future_timestamp          rejected  a timestamp after the validation time ``now``
invalid_window            rejected  an offer whose valid_to is before its valid_from
missing_offer             rejected  an offer event other than held_out without offer_id
duplicate_id              rejected  the same id with different contents (first row kept)
unknown_reference         rejected  a member_id / offer_id that no row of members/offers has
exact_duplicate           fixed     an identical copy of another row (one copy kept)
id_not_string             fixed     a numeric id column converted to strings
timezone_converted        fixed     tz-aware timestamps converted to naive UTC
========================  ========  ==========================================================

Exact duplicate lines in ``transactions`` are kept: two identical basket lines are legitimate
(the same item scanned twice on separate lines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.sources import schema as S
from features.sources.io import DataFileError, find_table_file, read_raw, to_canonical_frame
from features.sources.schema import TABLE_ORDER, TABLES, ColumnSpec, TableSpec

__all__ = [
    "DataValidationError",
    "Problem",
    "TableCounts",
    "ValidationResult",
    "load_dir",
    "validate_dir",
    "validate_frames",
]

MAX_EXAMPLES = 5
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}
_REJECT_ACTION = "rejected"


@dataclass
class Problem:
    """One kind of problem in one column of one file."""

    table: str
    file: str
    column: str | None
    kind: str
    action: str  # "error" (file/column level), "rejected" (rows removed) or "fixed"
    count: int
    rows: list[int]
    values: list[str]
    detail: str = ""

    @property
    def message(self) -> str:
        where = f"{self.file}" + (f" column '{self.column}'" if self.column else "")
        rows = ", ".join(str(r) for r in self.rows)
        vals = ", ".join(repr(v) for v in self.values)
        parts = [
            f"{where}: {self.kind}: {self.count} row(s) {self.action}"
            if self.rows
            else f"{where}: {self.kind}"
        ]
        if self.detail:
            parts.append(self.detail)
        if vals:
            parts.append(f"values {vals}")
        if rows:
            parts.append(f"rows {rows}" + (" ..." if self.count > len(self.rows) else ""))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "file": self.file,
            "column": self.column,
            "kind": self.kind,
            "action": self.action,
            "count": self.count,
            "rows": self.rows,
            "values": self.values,
            "detail": self.detail,
            "message": self.message,
        }


@dataclass
class TableCounts:
    """Rows read, fixed (changed or removed as exact copies), rejected and kept, per table."""

    read: int = 0
    fixed: int = 0
    rejected: int = 0
    kept: int = 0


@dataclass
class ValidationResult:
    """Problems found, counts per table and the clean canonical frames."""

    data_dir: Path
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, TableCounts] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.action != "fixed"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append(p)
        return out

    def summary(self) -> str:
        lines = [f"{self.data_dir}: {'OK' if self.ok else 'INVALID'}"]
        for kind, probs in self.by_kind().items():
            lines.append(f"[{kind}]")
            lines.extend(f"  {p.message}" for p in probs)
        for t, c in self.counts.items():
            lines.append(
                f"{t}: read {c.read}, fixed {c.fixed}, rejected {c.rejected}, kept {c.kept}"
            )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "data_dir": str(self.data_dir),
                "ok": self.ok,
                "problems": [p.to_dict() for p in self.problems],
                "counts": {t: vars(c) for t, c in self.counts.items()},
            },
            indent=2,
        )


class DataValidationError(ValueError):
    """A data directory failed validation; ``result`` holds every problem."""

    def __init__(self, result: ValidationResult) -> None:
        self.result = result
        super().__init__(result.summary())


# ---- column parsing --------------------------------------------------------------------------
class _TableCheck:
    """Collects problems and a reject mask for one table."""

    def __init__(self, spec: TableSpec, file: str, df: pd.DataFrame) -> None:
        self.spec = spec
        self.file = file
        self.df = df.reset_index(drop=True)
        self.n = len(self.df)
        self.reject = np.zeros(self.n, dtype=bool)
        self.fixed_rows = np.zeros(self.n, dtype=bool)
        self.problems: list[Problem] = []

    def add(
        self,
        column: str | None,
        kind: str,
        mask: np.ndarray | None,
        action: str,
        raw: pd.Series | None = None,
        detail: str = "",
        count: int | None = None,
    ) -> None:
        if mask is not None:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                return
            rows = [int(i) + 1 for i in idx[:MAX_EXAMPLES]]
            values: list[str] = []
            if raw is not None:
                values = [str(v) for v in raw.iloc[idx[:MAX_EXAMPLES]].tolist()]
            n = int(idx.size)
            if action == _REJECT_ACTION:
                self.reject |= mask
            elif action == "fixed":
                self.fixed_rows |= mask
        else:
            rows, values, n = [], [], count or 0
        self.problems.append(
            Problem(
                self.spec.name,
                self.file,
                column,
                kind,
                action,
                n if count is None else count,
                rows,
                values,
                detail,
            )
        )


def _parse_column(chk: _TableCheck, col: ColumnSpec, now: pd.Timestamp) -> pd.Series:
    raw = chk.df[col.name]
    present = raw.notna().to_numpy()
    if col.dtype == "string":
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            chk.add(
                col.name,
                "id_not_string",
                present,
                "fixed",
                raw,
                detail=f"numeric {raw.dtype} values converted to strings",
            )
            as_int = pd.api.types.is_float_dtype(raw) and bool(
                (raw.dropna() == raw.dropna().round()).all()
            )
            raw = raw.astype("Int64") if as_int else raw
        out = raw.astype("string").str.strip()
        out = out.mask(out == "")
        return out.astype(object).where(out.notna(), None)
    if col.dtype in ("float", "int"):
        num = pd.to_numeric(raw, errors="coerce")
        bad = present & num.isna().to_numpy()
        if col.dtype == "int":
            frac = num.notna() & (num != num.round())
            bad |= frac.to_numpy()
        chk.add(
            col.name,
            "wrong_type",
            bad,
            _REJECT_ACTION,
            raw,
            detail=f"expected {'an integer' if col.dtype == 'int' else 'a number'}",
        )
        return num.astype("float64")
    if col.dtype == "bool":
        if pd.api.types.is_bool_dtype(raw):
            return raw.astype(object)
        text = raw.astype("string").str.strip().str.lower()
        out = pd.Series(pd.NA, index=raw.index, dtype=object)
        out[text.isin(_TRUE).fillna(False).to_numpy()] = True
        out[text.isin(_FALSE).fillna(False).to_numpy()] = False
        bad = present & out.isna().to_numpy()
        chk.add(
            col.name,
            "wrong_type",
            bad,
            _REJECT_ACTION,
            raw,
            detail="expected true/false (also 1/0, yes/no)",
        )
        return out
    # timestamp
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        chk.add(
            col.name,
            "timezone_converted",
            present,
            "fixed",
            raw,
            detail=f"converted from {raw.dtype.tz} to naive UTC",
        )
        ts = raw.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(raw):
        ts = raw
    else:
        text = raw.astype("string")
        ts = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
        has_tz = text.str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$", regex=True).fillna(False)
        chk.add(
            col.name,
            "timezone_converted",
            (present & has_tz.to_numpy() & ts.notna().to_numpy()),
            "fixed",
            raw,
            detail="offsets converted to naive UTC",
        )
        ts = ts.dt.tz_localize(None)
        chk.add(
            col.name,
            "wrong_type",
            present & ts.isna().to_numpy(),
            _REJECT_ACTION,
            raw,
            detail="expected a timestamp (ISO 8601, e.g. 2026-01-31 or 2026-01-31T09:30:00)",
        )
    ts = ts.astype("datetime64[us]")
    if col.not_future:
        chk.add(
            col.name,
            "future_timestamp",
            (ts > now).fillna(False).to_numpy(),
            _REJECT_ACTION,
            raw,
            detail=f"after the validation time {now}",
        )
    return ts


def _check_values(chk: _TableCheck, col: ColumnSpec, s: pd.Series) -> None:
    raw = chk.df[col.name]
    if col.required:
        chk.add(
            col.name,
            "missing_value",
            s.isna().to_numpy() & ~chk.reject,
            _REJECT_ACTION,
            raw,
            detail="required column has no value",
        )
    if col.allowed is not None:
        bad = s.notna().to_numpy() & ~s.isin(col.allowed).to_numpy()
        chk.add(
            col.name,
            "not_allowed",
            bad,
            _REJECT_ACTION,
            raw,
            detail=f"allowed: {', '.join(col.allowed)}",
        )
    if col.non_negative:
        chk.add(
            col.name,
            "negative_value",
            (s < 0).fillna(False).to_numpy(),
            _REJECT_ACTION,
            raw,
            detail="must be >= 0",
        )
    if col.bounds is not None:
        lo, hi = col.bounds
        bad = ((s < lo) | (s > hi)).fillna(False).to_numpy()
        chk.add(
            col.name,
            "out_of_range",
            bad,
            _REJECT_ACTION,
            raw,
            detail=f"must lie in [{lo:g}, {hi:g}]",
        )


def _check_table(
    spec: TableSpec, path: Path, df: pd.DataFrame, now: pd.Timestamp, result: ValidationResult
) -> pd.DataFrame | None:
    file = path.name
    chk = _TableCheck(spec, file, df)
    result.counts[spec.name] = TableCounts(read=chk.n)
    missing = [c for c in spec.required if c not in chk.df.columns]
    extra = [c for c in chk.df.columns if c not in spec.by_name]
    for c in missing:
        chk.add(
            c,
            "missing_column",
            None,
            "error",
            count=0,
            detail=f"required column absent; columns present: {list(chk.df.columns)}",
        )
    for c in extra:
        chk.add(
            c,
            "extra_column",
            None,
            "error",
            count=0,
            detail=f"not in the canonical '{spec.name}' schema (expected {spec.column_names})",
        )
    result.problems.extend(chk.problems)
    if missing:
        result.counts[spec.name].rejected = chk.n
        return None
    chk.problems = []
    parsed = {}
    for col in spec.columns:
        if col.name not in chk.df.columns:
            continue
        s = _parse_column(chk, col, now)
        _check_values(chk, col, s)
        parsed[col.name] = s
    out = pd.DataFrame(parsed, index=chk.df.index)

    if spec.name == "offers" and S.VALID_FROM in out and S.VALID_TO in out:
        bad = (out[S.VALID_TO] < out[S.VALID_FROM]).fillna(False).to_numpy()
        chk.add(
            S.VALID_TO,
            "invalid_window",
            bad,
            _REJECT_ACTION,
            chk.df[S.VALID_TO],
            detail="valid_to is before valid_from",
        )
    if spec.name == "offer_events":
        offer = out[S.OFFER_ID] if S.OFFER_ID in out else pd.Series(None, index=out.index)
        bad = (offer.isna() & (out[S.EVENT] != "held_out")).fillna(False).to_numpy()
        chk.add(
            S.OFFER_ID,
            "missing_offer",
            bad,
            _REJECT_ACTION,
            out[S.EVENT],
            detail="offer_id may be null only for held_out events",
        )

    # Exact duplicates are fixed (one copy kept); ids with differing contents are rejected.
    if spec.name != "transactions":
        dup_exact = out.astype(str).duplicated(keep="first").to_numpy() & ~chk.reject
        chk.add(
            None,
            "exact_duplicate",
            dup_exact,
            "fixed",
            out[spec.column_names[0]],
            detail="identical copy of an earlier row; one copy kept",
        )
    else:
        dup_exact = np.zeros(chk.n, dtype=bool)
    if spec.key is not None:
        live = ~chk.reject & ~dup_exact
        key = out[spec.key].where(live)
        dup_id = (key.duplicated(keep="first") & key.notna()).to_numpy()
        chk.add(
            spec.key,
            "duplicate_id",
            dup_id,
            _REJECT_ACTION,
            chk.df[spec.key],
            detail="same id as an earlier row with different contents; first row kept",
        )

    keep = ~chk.reject & ~dup_exact
    counts = result.counts[spec.name]
    counts.rejected = int(chk.reject.sum())
    counts.fixed = int((chk.fixed_rows | dup_exact).sum())
    result.problems.extend(chk.problems)
    return out.loc[keep]


def _check_references(result: ValidationResult, files: dict[str, str]) -> None:
    for table in ("transactions", "offer_events"):
        df = result.tables.get(table)
        if df is None:
            continue
        spec = TABLES[table]
        drop = np.zeros(len(df), dtype=bool)
        for col in spec.columns:
            if col.references is None or col.name not in df:
                continue
            ref_table, ref_col = col.references
            ref = result.tables.get(ref_table)
            if ref is None:
                continue
            bad = (df[col.name].notna() & ~df[col.name].isin(ref[ref_col])).to_numpy()
            if bad.any():
                idx = np.flatnonzero(bad)
                rows = [int(df.index[i]) + 1 for i in idx[:MAX_EXAMPLES]]
                vals = [str(v) for v in df[col.name].iloc[idx[:MAX_EXAMPLES]]]
                result.problems.append(
                    Problem(
                        table,
                        files[table],
                        col.name,
                        "unknown_reference",
                        _REJECT_ACTION,
                        int(bad.sum()),
                        rows,
                        vals,
                        detail=f"no row with this {ref_col} in {files.get(ref_table, ref_table)} "
                        "(absent there, or rejected there)",
                    )
                )
                drop |= bad
        if drop.any():
            result.tables[table] = df.loc[~drop]
            result.counts[table].rejected += int(drop.sum())


def validate_frames(
    raw: dict[str, tuple[str, pd.DataFrame]], data_dir: Path, now: pd.Timestamp | None = None
) -> ValidationResult:
    """Validate raw frames keyed by table name (value: (file name, frame))."""
    now = pd.Timestamp.now("UTC").tz_localize(None) if now is None else pd.Timestamp(now)
    result = ValidationResult(data_dir=data_dir)
    files: dict[str, str] = {}
    for table in TABLE_ORDER:
        if table not in raw:
            continue
        file, df = raw[table]
        files[table] = file
        clean = _check_table(TABLES[table], Path(file), df, now, result)
        if clean is not None:
            result.tables[table] = clean
    _check_references(result, files)
    for table, df in list(result.tables.items()):
        result.tables[table] = to_canonical_frame(df.reset_index(drop=True), table)
        result.counts[table].kept = len(df)
    return result


def validate_dir(data_dir: Path | str, now: pd.Timestamp | None = None) -> ValidationResult:
    """Check every canonical table in ``data_dir``; never raises for bad data, only reports."""
    data_dir = Path(data_dir)
    result = ValidationResult(data_dir=data_dir)
    raw: dict[str, tuple[str, pd.DataFrame]] = {}
    if not data_dir.is_dir():
        result.problems.append(
            Problem(
                "-",
                str(data_dir),
                None,
                "missing_file",
                "error",
                0,
                [],
                [],
                detail="not a directory",
            )
        )
        return result
    for table in TABLE_ORDER:
        try:
            path = find_table_file(data_dir, table)
        except DataFileError as exc:
            result.problems.append(
                Problem(table, table, None, "unreadable_file", "error", 0, [], [], detail=str(exc))
            )
            continue
        if path is None:
            result.problems.append(
                Problem(
                    table,
                    f"{table}.parquet|.csv",
                    None,
                    "missing_file",
                    "error",
                    0,
                    [],
                    [],
                    detail=f"no {table}.parquet, {table}.csv or {table}.csv.gz in {data_dir}",
                )
            )
            continue
        try:
            raw[table] = (path.name, read_raw(path))
        except DataFileError as exc:
            result.problems.append(
                Problem(
                    table, path.name, None, "unreadable_file", "error", 0, [], [], detail=str(exc)
                )
            )
    inner = validate_frames(raw, data_dir, now)
    inner.problems = result.problems + inner.problems
    return inner


def load_dir(
    data_dir: Path | str, now: pd.Timestamp | None = None, allow_fixed: bool = True
) -> dict[str, pd.DataFrame]:
    """The four canonical tables of ``data_dir``; raises DataValidationError on any error."""
    result = validate_dir(data_dir, now)
    if not result.ok or (not allow_fixed and result.problems):
        raise DataValidationError(result)
    return result.tables
