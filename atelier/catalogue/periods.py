"""Calendar periods for trend reports and catalogue statistics: week, month or season.

Each period is an integer ordinal, so that consecutive periods differ by one and gaps are easy to fill:

    month   year * 12 + month - 1                               label 2026-03
    week    ordinal of the ISO week's Monday // 7               label 2026-W09
    season  meteorological: winter = Dec-Feb (December counts  label 2026-winter
            toward the next year's winter), spring Mar-May, summer Jun-Aug, autumn Sep-Nov
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

PERIODS = ("week", "month", "season")
SEASONS = ("winter", "spring", "summer", "autumn")


def ordinal(at: datetime | date, period: str) -> int:
    d = at.date() if isinstance(at, datetime) else at
    if period == "month":
        return d.year * 12 + d.month - 1
    if period == "week":
        return (d - timedelta(days=d.weekday())).toordinal() // 7
    if period == "season":
        return (d.year * 12 + d.month) // 3
    raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")


def label(n: int, period: str) -> str:
    if period == "month":
        return f"{n // 12:04d}-{n % 12 + 1:02d}"
    if period == "week":
        year, week, _ = date.fromordinal(n * 7 + 1).isocalendar()  # the Monday
        return f"{year:04d}-W{week:02d}"
    if period == "season":
        return f"{n // 4:04d}-{SEASONS[n % 4]}"
    raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")


def span(first: int, last: int, period: str) -> list[str]:
    """Labels of every period from `first` to `last`, empty ones included."""
    return [label(n, period) for n in range(first, last + 1)]
