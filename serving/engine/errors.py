"""Errors of the decision engine.

Hierarchy::

    EngineInputError (ValueError)      bad input at the boundary: names the field and the value
    └── MissingColumnError             a member-feature frame lacks a required column

Inside the engine, inputs are trusted once validated.
"""

from __future__ import annotations

__all__ = ["EngineInputError", "MissingColumnError"]


class EngineInputError(ValueError):
    """An input the engine cannot use; the message names the field and the offending value."""


class MissingColumnError(EngineInputError):
    """A required column is absent from an input frame."""
