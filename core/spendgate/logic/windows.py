"""Budget windows: a pure function of (period, time zone, instant).

A window is a calendar day, ISO week (Monday to Monday) or month in the Budget's IANA time zone.
Spend is keyed by the window id, so a reset is a new key and never a mutation of old spend. The
boundaries are computed on local wall-clock dates and converted back to UTC, so DST days are 23
or 25 hours long, as a finance team in that zone would expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spendgate.api.v1alpha1 import Period


@dataclass(frozen=True)
class Window:
    id: str  # e.g. 2026-11-24, 2026-W48, 2026-11
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC, exclusive

    def seconds_left(self, now: datetime) -> int:
        """Whole seconds until the reset, at least 1 (a retry-after of 0 means "now")."""
        return max(1, int((self.end - now).total_seconds() + 0.999))


class UnknownTimeZone(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise UnknownTimeZone(f"unknown IANA time zone {name!r}") from error


def window_at(period: Period, time_zone: str, now: datetime) -> Window:
    """The window of `period` in `time_zone` that contains the aware instant `now`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = zone(time_zone)
    today = now.astimezone(tz).date()
    first, following, window_id = _bounds(period, today)
    return Window(id=window_id, start=_midnight(first, tz), end=_midnight(following, tz))


def window_by_id(period: Period, time_zone: str, window_id: str) -> Window:
    """The window of `period` in `time_zone` named `window_id` (as reported by a proxy).

    Raises ValueError when the id is not one `window_at` could have produced for this period.
    """
    first = _first_day(period, window_id)
    start, following, expected_id = _bounds(period, first)
    if expected_id != window_id:
        raise ValueError(f"{window_id!r} is not a {period.value.lower()} window id")
    tz = zone(time_zone)
    return Window(id=window_id, start=_midnight(start, tz), end=_midnight(following, tz))


def _first_day(period: Period, window_id: str) -> date:
    try:
        if period is Period.DAILY:
            return date.fromisoformat(window_id)
        if period is Period.WEEKLY:
            year, week = window_id.split("-W")
            return date.fromisocalendar(int(year), int(week), 1)
        year, month = window_id.split("-")
        return date(int(year), int(month), 1)
    except ValueError as error:
        raise ValueError(f"{window_id!r} is not a {period.value.lower()} window id") from error


def _bounds(period: Period, today: date) -> tuple[date, date, str]:
    if period is Period.DAILY:
        return today, today + timedelta(days=1), today.isoformat()
    if period is Period.WEEKLY:
        monday = today - timedelta(days=today.weekday())
        year, week, _ = monday.isocalendar()
        return monday, monday + timedelta(days=7), f"{year}-W{week:02d}"
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following, f"{first.year}-{first.month:02d}"


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    # Local midnight; fold=0 picks the first instant if midnight repeats, and a skipped midnight
    # (zones that spring forward at 00:00) normalises forward through the UTC round trip.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
