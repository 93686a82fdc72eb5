"""Billing periods: calendar months (UTC) of integer-microsecond times. One calendar for
billing's ledger and for the prices the scheduler reads (a month-to-date position, a
commitment, starts again with each period).

>>> period_of(month_start_us(2026, 3))
'2026-03'
>>> period_bounds("2026-12") == (month_start_us(2026, 12), month_start_us(2027, 1))
True
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
US = 1_000_000
US_PER_HOUR = 3600 * US


def _month_starts() -> list[int]:
    out = []
    for y in range(1970, 2200):
        for m in range(1, 13):
            delta = datetime(y, m, 1, tzinfo=timezone.utc) - EPOCH
            out.append((delta.days * 86_400 + delta.seconds) * US)
    return out


#: Start of every month 1970-01 .. 2199-12 (UTC) in microseconds: periods by bisection.
MONTH_STARTS = _month_starts()


def month_start_us(year: int, month: int) -> int:
    delta = datetime(year, month, 1, tzinfo=timezone.utc) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * US


#: The month the last lookup fell in, (start, end, name): nearly every lookup falls in the
#: same month as the one before (one tuple, replaced whole, so threads read it safely).
_last_month = (0, 0, "")


def period_of(us: int) -> str:
    global _last_month
    lo, hi, name = _last_month
    if lo <= us < hi:
        return name
    i = bisect_right(MONTH_STARTS, us) - 1
    name = period_name(i)
    if 0 <= i < len(MONTH_STARTS) - 1:
        _last_month = (MONTH_STARTS[i], MONTH_STARTS[i + 1], name)
    return name


def period_bounds(period: str) -> tuple[int, int]:
    y, m = int(period[:4]), int(period[5:7])
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return month_start_us(y, m), month_start_us(ny, nm)


def period_name(i: int) -> str:
    """The name of month ``i`` (months since 1970-01), e.g. '2026-03'."""
    return PERIOD_NAMES[i] if 0 <= i < len(PERIOD_NAMES) else f"{1970 + i // 12:04d}-{i % 12 + 1:02d}"


#: The names of the months of ``MONTH_STARTS``, made once: billing names the month of
#: every usage record it rates.
PERIOD_NAMES = tuple(f"{1970 + i // 12:04d}-{i % 12 + 1:02d}" for i in range(len(MONTH_STARTS)))


