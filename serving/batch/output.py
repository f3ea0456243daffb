"""The send file's columns, the store's decision records, and assembling part files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.sources.schema import CHANNEL, MEMBER_ID, OFFER_ID

__all__ = ["OUTPUT_COLUMNS", "assemble", "output_format", "output_frame", "store_records"]

# Expected value parts, then what the sender and the feedback loop need.
OUTPUT_COLUMNS: tuple[str, ...] = (
    "campaign_id",
    MEMBER_ID,
    "rank",
    OFFER_ID,
    "kind",
    "status",
    "holdout",
    "p_redeem",
    "incremental_margin",
    "uplift_adjusted_margin",
    "expected_cost",
    "eiv",
    "lifecycle_boost",
    "rank_score",
    "shadow_price",
    "explanation",
    "decision_id",
    "propensity",
    "explored",
    "is_surprise",
    "moment",
    "fallback",
    "model_versions",
    "policy",
)


class OutputFormatError(ValueError):
    """An output path whose suffix is not a supported format."""


def output_format(path: Path) -> str:
    """``parquet`` or ``csv`` from the suffix (``.parquet``/``.pq``, ``.csv``)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise OutputFormatError(f"--out: {path.name!r} must end in .parquet or .csv")


def output_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Engine rows -> the send file's rows (rank from 1; holdout members without offers).

    String columns are passed on as Arrow-backed arrays (no round trip through Python objects).
    """
    shown = (rows["status"] == "offers").to_numpy()

    def text(c: str) -> pd.api.extensions.ExtensionArray:
        return rows[c].astype("str").array

    out = pd.DataFrame(
        {
            "campaign_id": text("request_id"),
            MEMBER_ID: text(MEMBER_ID),
            "rank": pd.array(
                np.where(shown, rows["slot"].fillna(-1).to_numpy() + 1, 0), dtype="int32"
            ),
            OFFER_ID: rows[OFFER_ID].astype("str").where(shown).array,
            "kind": rows["kind"].astype("str").where(shown).array,
            "status": text("status"),
            "holdout": (rows["status"] == "held_out").to_numpy(),
        }
    )
    for c in OUTPUT_COLUMNS[7:]:
        if c not in out:
            col = rows[c]
            out[c] = col.array if isinstance(col.dtype, pd.StringDtype) else col.to_numpy()
    out["model_versions"] = out["model_versions"].astype(str)
    return out[list(OUTPUT_COLUMNS)]


def store_records(
    out: pd.DataFrame, channel: str, holdout_share: float | None = None
) -> list[dict[str, Any]]:
    """One decision record per member (holdout and no-offer members too, with no offers), with
    its campaign, whether the member was held out and the holdout share (``offers export``)."""
    shown = out.loc[
        (out["status"] == "offers").to_numpy(),
        ["decision_id", OFFER_ID, "rank", "eiv", "propensity"],
    ]
    offers: dict[str, list[dict[str, Any]]] = {}
    for d, o, r, s, p in zip(
        shown["decision_id"].tolist(),
        shown[OFFER_ID].tolist(),
        shown["rank"].astype(np.int64).tolist(),
        shown["eiv"].astype(np.float64).tolist(),
        shown["propensity"].astype(np.float64).tolist(),
        strict=True,
    ):
        rec = {"offer_id": o, "rank": r, "score": s, "propensity": p}
        got = offers.get(d)
        if got is None:
            offers[d] = [rec]
        else:
            got.append(rec)
    first = out[
        ["decision_id", MEMBER_ID, "model_versions", "fallback", "holdout", "campaign_id"]
    ].drop_duplicates("decision_id")
    versions = {v: json.loads(v) for v in first["model_versions"].unique()}
    return [
        {
            "decision_id": d,
            MEMBER_ID: m,
            CHANNEL: channel,
            "offers": offers.get(d, []),
            "model_versions": versions[v],
            "fallback": f,
            "held_out": bool(h),
            "holdout_share": holdout_share,
            "campaign_id": c,
        }
        for d, m, v, f, h, c in zip(
            first["decision_id"].tolist(),
            first[MEMBER_ID].tolist(),
            first["model_versions"].tolist(),
            first["fallback"].tolist(),
            first["holdout"].tolist(),
            first["campaign_id"].tolist(),
            strict=True,
        )
    ]


def assemble(parts: Iterable[Path], out: Path) -> int:
    """Concatenate part files (Parquet, in order) into ``out``; returns the row count.

    Streams one part at a time (memory bounded by a part); writes ``out`` via a temporary file
    renamed at the end, so a reader never sees half a file.
    """
    fmt = output_format(out)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    writer: Any = None
    try:
        for part in parts:
            table = pq.read_table(part)
            n += table.num_rows
            if writer is None:
                writer = (
                    pq.ParquetWriter(tmp, table.schema)
                    if fmt == "parquet"
                    else pacsv.CSVWriter(tmp, table.schema)
                )
            writer.write_table(table)
        if writer is None:
            empty = pa.table({c: pa.array([], pa.string()) for c in OUTPUT_COLUMNS})
            (pq.write_table if fmt == "parquet" else pacsv.write_csv)(empty, tmp)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return n
