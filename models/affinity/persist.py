"""Saving and loading affinity models as plain arrays (``.npz``, never pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.affinity.base import AffinityModel
from models.affinity.blend import Blend
from models.affinity.factorization import ALS, BPR
from models.affinity.interactions import AffinityInputError, Interactions
from models.affinity.popularity import PersonalPopularity, Popularity, SegmentPopularity

__all__ = ["MODEL_CLASSES", "load_interactions", "load_model", "save_interactions", "save_model"]

_MATRICES = ("confidence", "count", "last_days")

MODEL_CLASSES: dict[str, type[AffinityModel]] = {
    cls.name: cls for cls in (ALS, BPR, Popularity, SegmentPopularity, PersonalPopularity, Blend)
}


def save_model(model: AffinityModel, path: Path | str) -> Path:
    """Write a fitted model to ``path`` (``.npz``): its parameters, id maps and arrays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = model.to_arrays()
    bad = [k for k, v in arrays.items() if np.asarray(v).dtype == object]
    if bad:
        raise AffinityInputError(f"cannot save object arrays without pickle: {bad}")
    with path.open("wb") as fh:
        # numpy's savez stub has an allow_pickle: bool keyword; mypy checks the splat against it
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


def load_model(path: Path | str) -> AffinityModel:
    """Read a model written by :func:`save_model` (no pickle is ever loaded)."""
    path = Path(path)
    if not path.is_file():
        raise AffinityInputError(f"{path}: no such model file")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    name = str(arrays.get("model_name", ""))
    if name not in MODEL_CLASSES:
        raise AffinityInputError(
            f"{path}: model_name {name!r} is not one of {sorted(MODEL_CLASSES)}"
        )
    return MODEL_CLASSES[name].from_arrays(arrays)


def save_interactions(data: Interactions, path: Path | str) -> Path:
    """Write an :class:`Interactions` (three CSR matrices, ids, segments, as_of) as ``.npz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "member_ids": np.asarray(data.member_ids, dtype=str),
        "item_ids": np.asarray(data.item_ids, dtype=str),
        "as_of": np.asarray(data.as_of.isoformat()),
    }
    if data.segments is not None:
        arrays["segments"] = np.asarray(data.segments, dtype=str)
    for name in _MATRICES:
        m = getattr(data, name).tocsr()
        arrays[f"{name}.data"] = m.data.astype(np.float32)
        arrays[f"{name}.indices"] = m.indices.astype(np.int32)
        arrays[f"{name}.indptr"] = m.indptr.astype(np.int64)
    with path.open("wb") as fh:
        # numpy's savez stub has an allow_pickle: bool keyword; mypy checks the splat against it
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


def load_interactions(path: Path | str) -> Interactions:
    """Read what :func:`save_interactions` wrote (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise AffinityInputError(f"{path}: no such interactions file")
    with np.load(path, allow_pickle=False) as npz:
        a = {k: npz[k] for k in npz.files}
    shape = (len(a["member_ids"]), len(a["item_ids"]))
    mats = {
        name: sp.csr_matrix(
            (a[f"{name}.data"], a[f"{name}.indices"], a[f"{name}.indptr"]), shape=shape
        )
        for name in _MATRICES
    }
    return Interactions(
        member_ids=a["member_ids"].astype(str),
        item_ids=a["item_ids"].astype(str),
        as_of=pd.Timestamp(str(a["as_of"])),
        segments=a["segments"].astype(str) if "segments" in a else None,
        **mats,
    )
