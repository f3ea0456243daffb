"""Saving and loading affinity models as plain arrays (``.npz``, never pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.affinity.base import AffinityModel
from models.affinity.blend import Blend
from models.affinity.factorization import ALS, BPR
from models.affinity.interactions import AffinityInputError
from models.affinity.popularity import PersonalPopularity, Popularity, SegmentPopularity

__all__ = ["MODEL_CLASSES", "load_model", "save_model"]

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
        np.savez(fh, **arrays)
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
