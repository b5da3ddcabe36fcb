"""Budget windows: calendar days, ISO weeks and months in the budget's time zone, DST included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spendgate.api.v1alpha1 import Period
from spendgate.logic.windows import UnknownTimeZone, window_at, window_by_id


def test_a_day_in_berlin_starts_at_local_midnight() -> None:
    window = window_at(Period.DAILY, "Europe/Berlin", datetime(2026, 11, 24, 23, 30, tzinfo=UTC))
    assert window.id == "2026-11-25"
    assert window.start == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)


def test_dst_days_are_23_and_25_hours_long() -> None:
    spring = window_at(Period.DAILY, "America/New_York", datetime(2026, 3, 8, 12, tzinfo=UTC))
    autumn = window_at(Period.DAILY, "America/New_York", datetime(2026, 11, 1, 12, tzinfo=UTC))
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_weeks_are_iso_weeks_and_months_are_calendar_months() -> None:
    week = window_at(Period.WEEKLY, "UTC", datetime(2026, 11, 24, tzinfo=UTC))
    month = window_at(Period.MONTHLY, "UTC", datetime(2026, 12, 31, 23, tzinfo=UTC))
    assert (week.id, week.start, week.end) == (
        "2026-W48", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
    assert (month.id, month.end) == ("2026-12", datetime(2027, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("period", list(Period))
def test_window_by_id_finds_the_window_window_at_named(period: Period) -> None:
    for instant in (datetime(2026, 1, 1, 3, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)):
        expected = window_at(period, "Europe/Berlin", instant)
        assert window_by_id(period, "Europe/Berlin", expected.id) == expected


@pytest.mark.parametrize(("period", "window_id"), [
    (Period.DAILY, "2026-11"), (Period.DAILY, "20261124"), (Period.WEEKLY, "2026-11-24"),
    (Period.WEEKLY, "2026-W54"), (Period.MONTHLY, "2026-13"), (Period.MONTHLY, "2026-W48"),
])
def test_window_by_id_refuses_ids_of_another_shape(period: Period, window_id: str) -> None:
    with pytest.raises(ValueError, match="window id"):
        window_by_id(period, "UTC", window_id)


def test_unknown_time_zones_are_named() -> None:
    with pytest.raises(UnknownTimeZone, match="Mars/Olympus"):
        window_at(Period.DAILY, "Mars/Olympus", datetime(2026, 1, 1, tzinfo=UTC))


def test_seconds_left_is_never_zero() -> None:
    window = window_at(Period.DAILY, "UTC", datetime(2026, 11, 24, tzinfo=UTC))
    assert window.seconds_left(window.end) == 1
    assert window.seconds_left(window.end - timedelta(seconds=90.2)) == 91
