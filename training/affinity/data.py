"""The canonical tables of a data directory as affinity training reads them, at any size.

``open_affinity_tables(data_dir, engine, memory_limit)`` opens the files through the feature
pipeline (:func:`features.pipeline.load_tables`: DuckDB by default, Spark with
``engine="spark"``). ``transactions`` stays a table of the backend: the interaction matrix and
the purchase positives are aggregated there (:func:`models.affinity.build_interactions`), so a
32M-line table never becomes a pandas frame. The small tables come back as pandas frames:
``offers`` whole, ``offer_events`` with the four columns the evaluation reads (member, offer,
event, time). Segments are computed by the feature pipeline on the same backend
(``AffinityTables.features``).

Typical sizes (1M simulated members): 32M transaction lines stay on disk; 3.2M offer events
are about 0.1 GB in pandas (Arrow de-duplicates the repeated strings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import pandas as pd

from features.pipeline import FeatureTables, load_tables
from features.pipeline.engines import connect, spark_memory
from features.sources import schema as S

__all__ = ["EVENT_COLUMNS", "AffinityTables", "open_affinity_tables"]

log = logging.getLogger(__name__)

EVENT_COLUMNS: tuple[str, ...] = (S.MEMBER_ID, S.OFFER_ID, S.EVENT, S.TS)


@dataclass(frozen=True)
class AffinityTables(Mapping[str, Any]):
    """``offers`` and ``offer_events`` as pandas frames, ``transactions`` and ``members`` as
    tables of the backend, and the backend's ``FeatureTables`` (for segments)."""

    frames: dict[str, pd.DataFrame | ir.Table]
    features: FeatureTables

    def __getitem__(self, name: str) -> pd.DataFrame | ir.Table:
        return self.frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)


def open_affinity_tables(
    data_dir: Path | str, engine: str = "duckdb", memory_limit: str | None = None
) -> AffinityTables:
    """Open ``data_dir`` for affinity training (module docstring). ``memory_limit`` (e.g.
    ``"4GB"``) caps DuckDB, which spills to a temporary directory past it; on Spark it is the
    driver's memory."""
    if engine == "duckdb":
        con = connect(engine, memory_limit=memory_limit)
    elif memory_limit is not None:
        con = connect(engine, driver_memory=spark_memory(memory_limit))
    else:
        con = connect(engine)
    ft = load_tables(Path(data_dir), con)
    ev = ft.offer_events
    events = ev.select(*EVENT_COLUMNS).to_pandas()
    events[S.TS] = events[S.TS].astype("datetime64[us]")
    offers = ft.offers.to_pandas()
    log.info("affinity tables: %d offers, %d offer events in pandas", len(offers), len(events))
    frames: dict[str, pd.DataFrame | ir.Table] = {
        "offers": offers,
        "offer_events": events,
        "transactions": ft.transactions,
        "members": ft.members,
    }
    return AffinityTables(frames, ft)
