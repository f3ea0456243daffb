"""Uplift benchmark data sets read straight from the raw public files.

Each loader returns an :class:`UpliftDataset`: numeric features (the same for every library),
one treatment label per row, the control label, the treatments to compare against control
and one or more binary outcomes.

* **Hillstrom** (MineThatData e-mail test, 64,000 rows): features ``recency``, ``history``,
  ``mens``, ``womens``, ``newbie`` and one-hot ``zip_code`` (``Surburban`` kept as spelt in the
  data), ``channel`` and ``history_segment`` (named by its ordinal, 1..7); treatments
  ``Womens E-Mail`` and ``Mens E-Mail`` against ``No E-Mail``; outcomes ``visit`` and
  ``conversion`` (two weeks). Duplicated rows are kept, as in the original data.
* **Starbucks** (rewards-app simulation, 17,000 members): see :func:`load_starbucks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DATASETS",
    "STARBUCKS_SEND_HOUR",
    "STARBUCKS_WINDOW_HOURS",
    "UpliftDataset",
    "default_data_dir",
    "load_dataset",
    "load_hillstrom",
    "load_starbucks",
]

HILLSTROM_FILE = (
    "Kevin_Hillstrom_MineThatData_E-MailAnalytics_DataMiningChallenge_2008.03.20.csv.gz"
)
STARBUCKS_SEND_HOUR = 0
STARBUCKS_WINDOW_HOURS = 168


@dataclass(frozen=True)
class UpliftDataset:
    """Features, treatment labels and binary outcomes of one benchmark data set."""

    name: str
    X: pd.DataFrame
    treatment: np.ndarray
    control: str
    treatments: tuple[str, ...]
    outcomes: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.X)
        for name, values in {"treatment": self.treatment, **self.outcomes}.items():
            if len(values) != n:
                raise ValueError(f"{self.name}: {name} has {len(values)} rows but X has {n}")


def default_data_dir() -> Path:
    """``$OFFERS_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    from features.settings import DataSettings

    return DataSettings().shared_data


def load_hillstrom(data_dir: Path | None = None) -> UpliftDataset:
    """The Hillstrom e-mail test from its raw CSV (see the module docstring)."""
    path = (data_dir or default_data_dir()) / "hillstrom" / HILLSTROM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Hillstrom CSV not found: {path}")
    raw = pd.read_csv(path)
    numeric = raw[["recency", "history", "mens", "womens", "newbie"]].astype(np.float64)
    # history_segment labels look like "3) $200 - $350": keep the ordinal digit as the name
    categorical = raw[["zip_code", "channel"]].assign(history_segment=raw["history_segment"].str[0])
    dummies = pd.get_dummies(categorical, dtype=np.float64)
    return UpliftDataset(
        name="hillstrom",
        X=pd.concat([numeric, dummies], axis=1),
        treatment=raw["segment"].to_numpy(dtype=object),
        control="No E-Mail",
        treatments=("Womens E-Mail", "Mens E-Mail"),
        outcomes={
            "visit": raw["visit"].to_numpy(np.int64),
            "conversion": raw["conversion"].to_numpy(np.int64),
        },
    )


def load_starbucks(data_dir: Path | None = None) -> UpliftDataset:
    """Starbucks offers at the first send (hour 0) and purchases in the following 7 days.

    Treatment: the type of offer a member received at hour 0 (``bogo``, ``discount`` or
    ``informational``); control (``none``): the members who received no offer at hour 0 (about
    a quarter; the simulator's assignment does not depend on the profile). Only the first send
    is used because it has no earlier offers still running and the next send is at hour 168, so
    the window [0, 168) sees the effect of this one send alone. Outcomes: ``purchase`` (any
    transaction in the window) and ``purchase_3plus`` (three or more). Features, from the profile
    only (nothing happens before hour 0): age, income, tenure in days up to the last joining date
    in the data, one-hot gender and a flag for the 2,175 members without demographics (their
    age 118 and null income are replaced by -1).
    """
    folder = (data_dir or default_data_dir()) / "starbucks"
    for name in ("profile.json.gz", "transcript.json.gz", "portfolio.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"Starbucks file not found: {folder / name}")
    profile = pd.read_json(folder / "profile.json.gz", orient="records", lines=True)
    transcript = pd.read_json(folder / "transcript.json.gz", orient="records", lines=True)
    portfolio = pd.read_json(folder / "portfolio.json", orient="records", lines=True)

    offer_type = dict(zip(portfolio["id"], portfolio["offer_type"], strict=True))
    received = transcript[
        (transcript["event"] == "offer received") & (transcript["time"] == STARBUCKS_SEND_HOUR)
    ]
    kind = received.set_index("person")["value"].map(lambda v: offer_type[v["offer id"]])
    in_window = transcript[
        (transcript["event"] == "transaction")
        & (transcript["time"] >= STARBUCKS_SEND_HOUR)
        & (transcript["time"] < STARBUCKS_SEND_HOUR + STARBUCKS_WINDOW_HOURS)
    ]
    purchases = in_window.groupby("person").size()

    members = profile.set_index("id")
    missing = members["gender"].isna() | (members["age"] == 118)
    joined = pd.to_datetime(members["became_member_on"].astype(str), format="%Y%m%d")
    X = pd.DataFrame(
        {
            "age": members["age"].where(~missing, -1).astype(np.float64),
            "income": members["income"].where(~missing, -1).astype(np.float64),
            "tenure_days": (joined.max() - joined).dt.days.astype(np.float64),
            "gender_F": (members["gender"] == "F").astype(np.float64),
            "gender_M": (members["gender"] == "M").astype(np.float64),
            "gender_O": (members["gender"] == "O").astype(np.float64),
            "demographics_missing": missing.astype(np.float64),
        }
    )
    n_purchases = purchases.reindex(members.index, fill_value=0).to_numpy()
    return UpliftDataset(
        name="starbucks",
        X=X.reset_index(drop=True),
        treatment=kind.reindex(members.index).fillna("none").to_numpy(dtype=object),
        control="none",
        treatments=("bogo", "discount", "informational"),
        outcomes={
            "purchase": (n_purchases >= 1).astype(np.int64),
            "purchase_3plus": (n_purchases >= 3).astype(np.int64),
        },
    )


DATASETS = {"hillstrom": load_hillstrom, "starbucks": load_starbucks}


def load_dataset(name: str, data_dir: Path | None = None) -> UpliftDataset:
    """Load a benchmark data set by name (``hillstrom`` or ``starbucks``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown uplift data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](data_dir)
