"""Holdout hash (stable, salted, right share) and deterministic decision ids."""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

from serving.engine.hashing import decision_ids, hash64, unit_interval
from serving.engine.holdout import in_holdout
from serving.engine.settings import HoldoutSettings

IDS_100K = np.array([f"m{i:07d}" for i in range(100_000)], dtype=object)


def _fnv1a_fmix_reference(text: str, salt: str) -> int:
    """The documented algorithm written out byte by byte (pure Python, no numpy)."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in salt.encode() + b"\x1f" + text.encode():
        h = ((h ^ b) * 0x100000001B3) & mask
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & mask
    return h ^ (h >> 33)


def test_hash_matches_the_documented_algorithm():
    texts = ["m0000001", "", "Zoë-17", "a" * 40]
    got = hash64(texts, "salt")
    assert [int(x) for x in got] == [_fnv1a_fmix_reference(t, "salt") for t in texts]


def test_hash_is_pinned():
    # Known answers: if these change, every program's holdout would move.
    assert int(hash64(["m0000001"], "holdout/holdout-2026")[0]) == _fnv1a_fmix_reference(
        "m0000001", "holdout/holdout-2026"
    )
    assert [int(x) for x in hash64(["a", "b"], "s")] == [
        14000276326554031738,
        15893126360695873605,
    ]


def test_holdout_is_stable_across_processes():
    code = (
        "from serving.engine.holdout import in_holdout\n"
        "from serving.engine.settings import HoldoutSettings\n"
        "ids = [f'm{i:07d}' for i in range(2000)]\n"
        "print(''.join('1' if x else '0' for x in in_holdout(ids, HoldoutSettings(share=0.1))))\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
        ).stdout.strip()
        for seed in ("1", "2")
    }
    here = "".join(
        "1" if x else "0" for x in in_holdout(IDS_100K[:2000], HoldoutSettings(share=0.1))
    )
    assert runs == {here}


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_holdout_share_on_100k_ids(share):
    got = in_holdout(IDS_100K, HoldoutSettings(share=share)).mean()
    sd = np.sqrt(share * (1 - share) / len(IDS_100K))
    assert abs(got - share) < 4 * sd


def test_salt_draws_an_independent_holdout_and_shares_nest():
    a = in_holdout(IDS_100K, HoldoutSettings(share=0.2, salt="one"))
    b = in_holdout(IDS_100K, HoldoutSettings(share=0.2, salt="two"))
    both = (a & b).mean()
    assert abs(both - 0.04) < 0.004  # independent: 0.2 x 0.2
    small = in_holdout(IDS_100K, HoldoutSettings(share=0.1, salt="one"))
    assert not (small & ~a).any()  # raising the share only adds members
    assert not in_holdout(IDS_100K[:10], HoldoutSettings(share=0.0)).any()


def test_unit_interval_is_uniform():
    u = unit_interval(IDS_100K, "x")
    assert u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    chi2 = ((counts - 10_000) ** 2 / 10_000).sum()
    assert chi2 < 27.9  # 9 degrees of freedom, p = 0.001


def test_decision_ids_are_deterministic_uuid8():
    keys = ["cmp-1|m1", "cmp-1|m2", "cmp-2|m1"]
    a, b = decision_ids(keys), decision_ids(keys)
    assert list(a) == list(b)
    assert len(set(a)) == 3
    for d in a:
        u = uuid.UUID(d)
        assert u.version == 8 and u.variant == uuid.RFC_4122 and str(u) == d
