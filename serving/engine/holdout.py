"""Program holdout: a deterministic, salted hash puts a fixed share of members in a control group.

``in_holdout(ids, settings)`` is ``unit_interval(member_id, salt) < share`` (see
``serving.engine.hashing``): the same member is always in or out for a given salt, in every
process and on every machine, and changing the salt draws a new, independent holdout. Held-out
members get no personalised offers; their decision is still recorded (status ``held_out``), so
the program can measure its own incrementality against them.
"""

from __future__ import annotations

import numpy as np

from serving.engine.hashing import EncodedTexts, unit_interval
from serving.engine.settings import HoldoutSettings

__all__ = ["in_holdout"]


def in_holdout(
    member_ids: np.ndarray | list[str] | EncodedTexts, settings: HoldoutSettings
) -> np.ndarray:
    """Bool per member: in the program holdout (ids may be pre-encoded ``EncodedTexts``)."""
    if settings.share <= 0:
        return np.zeros(len(member_ids), dtype=bool)
    ids = member_ids if isinstance(member_ids, EncodedTexts) else np.asarray(member_ids, object)
    return unit_interval(ids, "holdout/" + settings.salt) < settings.share
