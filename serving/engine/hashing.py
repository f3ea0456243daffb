"""Deterministic, salted, vectorised hashing of id strings (holdout, exploration, decision ids).

``hash64(texts, salt)`` is FNV-1a (64 bit) over the UTF-8 bytes of ``salt``, one separator byte
``0x1f`` and the text, followed by the MurmurHash3 ``fmix64`` finaliser (so that ids differing in
one character land far apart). It depends on nothing but the bytes: the same in every process,
on every machine and in every library version, and easy to reproduce elsewhere (SQL, Spark, a
POS) from this description. ``unit_interval`` maps it to [0, 1) with its top 53 bits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["decision_ids", "hash64", "unit_interval"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SEP = 0x1F


def _absorb(h: np.ndarray | np.uint64, data: bytes) -> np.uint64:
    out = np.uint64(h)
    for b in data:
        out = np.uint64((int(out) ^ b) * int(_FNV_PRIME) & 0xFFFFFFFFFFFFFFFF)
    return out


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _byte_matrix(texts: np.ndarray | pd.Series | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, max_len) uint8 matrix of the UTF-8 bytes (zero padded) and each text's length."""
    enc = pd.Series(np.asarray(texts, dtype=object)).astype(str).str.encode("utf-8")
    lengths = enc.str.len().to_numpy(dtype=np.int64)
    fixed = np.asarray(enc.to_numpy(dtype=object), dtype=np.bytes_)
    width = max(fixed.dtype.itemsize, 1)
    mat = np.frombuffer(fixed.tobytes(), dtype=np.uint8).reshape(len(fixed), width)
    return mat, lengths


def hash64(texts: np.ndarray | pd.Series | list[str], salt: str) -> np.ndarray:
    """uint64 hash of each text under ``salt`` (see the module docstring)."""
    start = _absorb(_absorb(_FNV_OFFSET, salt.encode("utf-8")), bytes([_SEP]))
    mat, lengths = _byte_matrix(texts)
    h = np.full(len(lengths), start, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(mat.shape[1]):
            live = lengths > j
            step = (h ^ mat[:, j].astype(np.uint64)) * _FNV_PRIME
            h = np.where(live, step, h)
        return _fmix64(h)


def unit_interval(texts: np.ndarray | pd.Series | list[str], salt: str) -> np.ndarray:
    """A uniform-looking number in [0, 1) per text (top 53 bits of ``hash64``)."""
    return (hash64(texts, salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def decision_ids(keys: np.ndarray | pd.Series | list[str]) -> np.ndarray:
    """A deterministic RFC 9562 UUIDv8 string per key (128 bits from two salted ``hash64``).

    The same key (``request_id|member_id``) always gives the same id, so a batch send and the
    API agree, and a retried request does not create a second decision.
    """
    hi = hash64(keys, "decision-id/hi")
    lo = hash64(keys, "decision-id/lo")
    hi = (hi & ~np.uint64(0xF000)) | np.uint64(0x8000)  # version 8 in bits 48-51
    lo = (lo & ~np.uint64(0xC000000000000000)) | np.uint64(0x8000000000000000)  # variant 10
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nib = np.concatenate(
        [(hi[:, None] >> shifts) & np.uint64(0xF), (lo[:, None] >> shifts) & np.uint64(0xF)],
        axis=1,
    ).astype(np.int64)
    chars = _HEX[nib]  # (n, 32)
    dash = np.full((len(chars), 1), ord("-"), dtype=np.uint8)
    parts = [chars[:, :8], dash, chars[:, 8:12], dash, chars[:, 12:16], dash]
    parts += [chars[:, 16:20], dash, chars[:, 20:]]
    out = np.ascontiguousarray(np.concatenate(parts, axis=1))
    return out.view("S36").ravel().astype(str).astype(object)
