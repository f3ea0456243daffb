"""Reports for program managers: incrementality of offers, moments, stages and campaigns
against the program holdout (``offers report incrementality`` and the ``/ui`` page)."""

from serving.reports.incrementality import (
    DIMENSIONS,
    IncrementalityError,
    ReportInputs,
    estimate,
    incrementality,
    unit_outcomes,
)
from serving.reports.render import report_json, write_report

__all__ = [
    "DIMENSIONS",
    "IncrementalityError",
    "ReportInputs",
    "estimate",
    "incrementality",
    "report_json",
    "unit_outcomes",
    "write_report",
]
