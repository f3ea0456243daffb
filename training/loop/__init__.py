"""The loop: the service's logs back into training, the gate, promotion and the reload."""

from training.loop.retrain import (
    EXIT_FAILED,
    EXIT_KEPT,
    EXIT_PROMOTED,
    RetrainError,
    RetrainResult,
    RetrainSettings,
    retrain,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_KEPT",
    "EXIT_PROMOTED",
    "RetrainError",
    "RetrainResult",
    "RetrainSettings",
    "retrain",
]
