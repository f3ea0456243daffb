"""The request a decision answers: who asks (campaign or checkout), on which channel, when."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.sources.schema import CHANNELS
from serving.engine.errors import EngineInputError

__all__ = ["DecisionContext"]


@dataclass(frozen=True)
class DecisionContext:
    """One send or one checkout request.

    ``request_id`` names the request (a campaign id for a batch send, the checkout's request or
    basket id in real time); together with the member id it seeds the decision id and the
    exploration draws, so the same request for the same member always gets the same decision.
    ``as_of`` is the decision time (naive UTC); ``k`` overrides ``EngineSettings.k``.
    """

    channel: str
    as_of: pd.Timestamp
    request_id: str
    k: int | None = None

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise EngineInputError(f"channel: {self.channel!r} is not one of {', '.join(CHANNELS)}")
        t = pd.Timestamp(self.as_of)
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        object.__setattr__(self, "as_of", t)
        if not self.request_id:
            raise EngineInputError("request_id: must not be empty")
        if self.k is not None and self.k < 1:
            raise EngineInputError(f"k: {self.k} must be at least 1")
