"""Deterministic, salted, vectorised hashing of id strings (holdout, exploration, decision ids).

``hash64(texts, salt)`` is FNV-1a (64 bit) over the UTF-8 bytes of ``salt``, one separator byte
``0x1f`` and the text, followed by the MurmurHash3 ``fmix64`` finaliser (so that ids differing in
one character land far apart). It depends on nothing but the bytes: the same in every process,
on every machine and in every library version, and easy to reproduce elsewhere (SQL, Spark, a
POS) from this description. ``unit_interval`` maps it to [0, 1) with its top 53 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

__all__ = [
    "EncodedTexts",
    "decision_id_matrix",
    "decision_id_one",
    "decision_ids",
    "encode_texts",
    "hash64",
    "hash64_one",
    "unit_interval",
    "unit_one",
]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SEP = 0x1F


_MASK = (1 << 64) - 1


def _absorb_int(h: int, data: bytes) -> int:
    """FNV-1a over ``data`` from state ``h`` (Python ints: one text at a time)."""
    prime = int(_FNV_PRIME)
    for b in data:
        h = ((h ^ b) * prime) & _MASK
    return h


def _absorb(h: np.ndarray | np.uint64, data: bytes) -> np.uint64:
    return np.uint64(_absorb_int(int(h), data))


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


_SALT_START: dict[str, int] = {}


def hash64_one(text: str, salt: str) -> int:
    """:func:`hash64` of one text (the same bits, as a Python int; the real-time path)."""
    start = _SALT_START.get(salt)
    if start is None:
        start = _SALT_START[salt] = int(_absorb(_absorb(_FNV_OFFSET, salt.encode()), bytes([_SEP])))
    return _fmix64_int(_absorb_int(start, text.encode("utf-8")))


def unit_one(text: str, salt: str) -> float:
    """:func:`unit_interval` of one text."""
    return (hash64_one(text, salt) >> 11) * 2.0**-53


def decision_id_one(key: str) -> str:
    """:func:`decision_ids` of one key."""
    hi = (hash64_one(key, "decision-id/hi") & ~0xF000 & _MASK) | 0x8000
    lo = (hash64_one(key, "decision-id/lo") & ~0xC000000000000000 & _MASK) | (1 << 63)
    h = f"{hi:016x}{lo:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@dataclass(frozen=True)
class EncodedTexts:
    """Texts encoded once for many hashes: UTF-8 bytes (zero padded) and lengths, after an
    optional common ``prefix`` (absorbed once per hash, as a scalar).

    ``hash64(encode_texts(ids), salt)`` equals ``hash64(ids, salt)``, and
    ``hash64(encode_texts(ids).with_prefix("r|"), salt)`` equals ``hash64("r|" + ids, salt)``.
    """

    matrix: np.ndarray  # (n, max_len) uint8
    lengths: np.ndarray  # (n,) int64
    prefix: bytes = b""

    def __len__(self) -> int:
        return len(self.lengths)

    def with_prefix(self, prefix: str) -> EncodedTexts:
        """The same texts, each preceded by ``prefix`` (no copy of the bytes)."""
        return EncodedTexts(self.matrix, self.lengths, prefix.encode("utf-8") + self.prefix)


def encode_texts(texts: np.ndarray | pd.Series | list[str] | EncodedTexts) -> EncodedTexts:
    """Encode texts once (pass the result to ``hash64``/``unit_interval``/``decision_ids``)."""
    if isinstance(texts, EncodedTexts):
        return texts
    return EncodedTexts(*_byte_matrix(texts))


def _byte_matrix(texts: np.ndarray | pd.Series | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, max_len) uint8 matrix of the UTF-8 bytes (zero padded) and each text's length.

    ASCII texts go through a numpy unicode array (its UCS-4 code points are the bytes); the
    few non-ASCII texts are encoded one by one."""
    arr = np.asarray(texts, dtype=object) if not isinstance(texts, np.ndarray) else texts
    if isinstance(texts, pd.Series):
        arr = texts.to_numpy(dtype=object)
    n = len(arr)
    if n == 0:
        return np.zeros((0, 1), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    uni = arr.astype(str) if arr.dtype.kind != "U" else arr
    width = max(uni.dtype.itemsize // 4, 1)
    if uni.dtype.itemsize == 0:
        return np.zeros((n, 1), dtype=np.uint8), np.zeros(n, dtype=np.int64)
    codes = np.ascontiguousarray(uni).view(np.uint32).reshape(n, width)
    wide = cast("np.ndarray", (codes > 0x7F).any(axis=1))  # codes is 2-D: an array
    if arr.dtype == object:  # Python's length keeps trailing NULs (numpy strips them)
        lengths = np.fromiter(map(len, arr), dtype=np.int64, count=n)
    else:
        lengths = np.strings.str_len(uni).astype(np.int64)
    if not wide.any():
        return codes.astype(np.uint8), lengths
    rows = np.flatnonzero(wide)
    src = arr if arr.dtype == object else uni
    enc = [str(t).encode("utf-8") for t in src[rows].tolist()]
    longest = max(max(len(e) for e in enc), width)
    mat = np.zeros((n, longest), dtype=np.uint8)
    mat[:, :width] = np.where(wide[:, None], 0, codes).astype(np.uint8)
    for r, e in zip(rows.tolist(), enc, strict=True):
        mat[r, : len(e)] = np.frombuffer(e, dtype=np.uint8)
    lengths[rows] = [len(e) for e in enc]
    return mat, lengths


def hash64(texts: np.ndarray | pd.Series | list[str] | EncodedTexts, salt: str) -> np.ndarray:
    """uint64 hash of each text under ``salt`` (see the module docstring).

    ``texts`` may be :class:`EncodedTexts` (encode once, hash under many salts)."""
    enc = encode_texts(texts)
    start = _absorb(_absorb(_FNV_OFFSET, salt.encode("utf-8")), bytes([_SEP]) + enc.prefix)
    mat, lengths = enc.matrix, enc.lengths
    h = np.full(len(lengths), start, dtype=np.uint64)
    if not len(lengths):
        return h
    shortest = int(lengths.min())
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max())):
            if j < shortest:
                h ^= mat[:, j]
                h *= _FNV_PRIME
            else:
                live = lengths > j
                step = (h ^ mat[:, j].astype(np.uint64)) * _FNV_PRIME
                h = np.where(live, step, h)
        return _fmix64(h)


def unit_interval(
    texts: np.ndarray | pd.Series | list[str] | EncodedTexts, salt: str
) -> np.ndarray:
    """A uniform-looking number in [0, 1) per text (top 53 bits of ``hash64``)."""
    return (hash64(texts, salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def decision_ids(keys: np.ndarray | pd.Series | list[str] | EncodedTexts) -> np.ndarray:
    """A deterministic RFC 9562 UUIDv8 string per key (128 bits from two salted ``hash64``).

    The same key (``request_id|member_id``) always gives the same id, so a batch send and the
    API agree, and a retried request does not create a second decision.
    """
    out = decision_id_matrix(keys)
    return out.view("S36").ravel().astype(str).astype(object)


def decision_id_matrix(keys: np.ndarray | pd.Series | list[str] | EncodedTexts) -> np.ndarray:
    """The ASCII bytes of ``decision_ids`` as an (n, 36) uint8 matrix (no Python strings)."""
    keys = encode_texts(keys)
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
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
