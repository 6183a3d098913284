"""Dates as users type them: parsed strictly, and explained in words when they are wrong."""

from __future__ import annotations

import calendar
import datetime as dt
import re


def parse_claimed_date(value: str | dt.date | None) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ValueError(f"claimed date {value!r} {date_problem(value)}") from None


def date_problem(value: str) -> str:
    """Why `value` is not a date, in words: a user who typed 2023-02-30 needs to hear that the
    day does not exist, not that the format is wrong."""
    m = re.match(r"\s*(\d{4})-(\d{2})-(\d{2})(?!\d)", value)
    if m is None:
        return "is not a date in the form YYYY-MM-DD"
    year, month, day = (int(g) for g in m.groups())
    if not 1 <= month <= 12:
        return f"is not a real date (there is no month {month:02d})"
    last = calendar.monthrange(year, month)[1]
    if not 1 <= day <= last:
        return (f"is not a real date ({calendar.month_name[month]} {year} has {last} days)")
    return "is not a date in the form YYYY-MM-DD"


__all__ = ["parse_claimed_date", "date_problem"]
