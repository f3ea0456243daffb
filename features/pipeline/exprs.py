"""Small Ibis building blocks shared by the feature families (time arithmetic, calendar).

All time arithmetic goes through whole epoch seconds (timestamps truncated to the second),
which DuckDB and Spark compute identically; visibility itself (``ts < as_of``) compares the
full-precision timestamps.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

__all__ = [
    "DAY_S",
    "MONEY_SCALE",
    "WEEK_S",
    "days_between",
    "epoch_s",
    "from_units",
    "next_annual_date",
    "safe_div",
    "to_units",
    "week_index",
]

DAY_S = 86_400
WEEK_S = 7 * DAY_S
# Money is summed as whole 1/10,000 currency units (int64): integer sums do not depend on the
# order of summation, so DuckDB, Spark, batch and online give bit-identical totals and shares.
MONEY_SCALE = 10_000


def to_units(amount: ir.NumericValue) -> ir.IntegerValue:
    """An amount in whole 1/10,000 currency units (rounded half away from zero)."""
    return (amount.cast("float64") * MONEY_SCALE).round().cast("int64")


def from_units(units: ir.NumericValue) -> ir.FloatingValue:
    """Currency amount of a sum of units."""
    return units.cast("float64") / float(MONEY_SCALE)


def epoch_s(ts: ir.TimestampValue) -> ir.IntegerValue:
    """Whole seconds since 1970-01-01 (sub-second parts dropped)."""
    return ts.truncate("s").epoch_seconds().cast("int64")


def week_index(epoch: ir.IntegerValue) -> ir.IntegerValue:
    """Index of the ISO week (Monday 00:00 to Sunday 24:00) of an epoch second; consecutive
    weeks have consecutive indexes (1970-01-01 was a Thursday, hence the 3-day shift)."""
    return (epoch + 3 * DAY_S) // WEEK_S


def days_between(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    """``later - earlier`` in (fractional) days."""
    return (epoch_s(later) - epoch_s(earlier)).cast("float64") / float(DAY_S)


def safe_div(num: ir.NumericValue, den: ir.NumericValue) -> ir.FloatingValue:
    """``num / den`` as float64, null where ``den`` is 0 or null (no division error on Spark)."""
    return num.cast("float64") / den.cast("float64").nullif(0.0)


def _is_leap(year: ir.IntegerValue) -> ir.BooleanValue:
    return ((year % 4) == 0) & ((year % 100) != 0) | ((year % 400) == 0)


def _annual(year: ir.IntegerValue, month: ir.IntegerValue, day: ir.IntegerValue) -> ir.DateValue:
    """The date of (month, day) in ``year``; 29 February falls on 28 February in common years."""
    feb29 = (month == 2) & (day == 29) & ~_is_leap(year)
    return ibis.date(year, month, ibis.ifelse(feb29, 28, day))


def next_annual_date(
    on_or_after: ir.DateValue,
    month: ir.IntegerValue,
    day: ir.IntegerValue,
    after_year: ir.IntegerValue | None = None,
) -> ir.DateValue:
    """First yearly occurrence of (month, day) on or after ``on_or_after``.

    With ``after_year``, occurrences in that year or before do not count (a membership
    anniversary is never the joining day itself).
    """
    year = on_or_after.year()
    this_year = _annual(year, month, day)
    ok = this_year >= on_or_after
    if after_year is not None:
        ok = ok & (year > after_year)
    return ibis.ifelse(ok, this_year, _annual(year + 1, month, day))
