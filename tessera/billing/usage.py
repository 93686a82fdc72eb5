"""Usage records: who used how much of which partner's capacity, from when to when.

Quantities are normalised once, here: time to integer microseconds (UTC), vCPU / GiB / GPU
to integer thousandths. Their product, *unit-microseconds x 1000*, is an exact integer, so
rating never rounds until the invoice does.

>>> r = parse_usage({"event_id": "u1", "partner": "gcp", "allocation_id": "a", "resource_id": "r",
...                  "start": "2026-01-31T23:00:00Z", "end": "2026-02-01T01:00:00Z", "vcpu": 2})
>>> [(p, e - s) for p, s, e in month_segments(r.start_us, r.end_us)]
[('2026-01', 3600000000), ('2026-02', 3600000000)]
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from tessera.pricing.agreements import utc_us
from tessera.pricing.periods import EPOCH, MONTH_STARTS, US, month_start_us, period_bounds, period_name, period_of

__all__ = ["EPOCH", "US", "DAY_US", "UsageError", "UsageRecord", "parse_usage", "month_segments", "month_start_us",
           "period_bounds", "period_of"]

#: A charge day (UTC) in microseconds: FOCUS rows and chargeback are per day.
DAY_US = 86_400 * US


class UsageError(ValueError):
    """A usage record that cannot be rated; the message names the field."""


@dataclass(slots=True)
class UsageRecord:   # not frozen: a frozen dataclass's __init__ costs 4x (object.__setattr__ per field)
    event_id: str
    partner: str
    allocation_id: str
    resource_id: str
    start_us: int
    end_us: int
    vcpu_milli: int
    memory_milli: int      # GiB x 1000
    gpu_milli: int
    instance_type: str = ""
    region: str = ""
    #: Whose work this is: the tenant of a per-unit record; for a VM billed whole, the tenants
    #: that ran on it with their weights (vCPU-microseconds), who share its cost pro rata.
    tenant: str = ""
    shares: tuple[tuple[str, int], ...] = ()
    #: Own capacity only: the placement's price per hour (micro-units of the base currency,
    #: the share of the own nodes' full cost the scheduler charged) for chargeback.
    price_micro: int = 0


def _time_us(value: Any, field: str, where: str) -> int:
    try:
        return utc_us(value)
    except ValueError as exc:
        raise UsageError(f"{where}.{field}: {exc}") from None


def _milli(value: Any, field: str, where: str) -> int:
    if type(value) is int and value >= 0:      # the common case, exact
        return value * 1000
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}.{field}: a number, not {value!r}")
    m = round(value * 1000)
    if m < 0 or abs(value * 1000 - m) > 1e-6:
        raise UsageError(f"{where}.{field}: {value!r} must be >= 0 with at most 3 decimal places")
    return m


def parse_usage(doc: Any, where: str = "usage") -> UsageRecord:
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: each line must be a JSON object")
    for key in ("event_id", "partner", "allocation_id", "resource_id"):
        v = doc.get(key)
        if not isinstance(v, str) or not v:
            raise UsageError(f"{where}.{key}: required, a non-empty string")
    start = _time_us(doc.get("start"), "start", where)
    end = _time_us(doc.get("end"), "end", where)
    if end < start:
        raise UsageError(f"{where}.end: before start")
    return UsageRecord(doc["event_id"], doc["partner"], doc["allocation_id"], doc["resource_id"], start, end,
                       _milli(doc.get("vcpu"), "vcpu", where), _milli(doc.get("memory_gib"), "memory_gib", where),
                       _milli(doc.get("gpu"), "gpu", where), str(doc.get("instance_type") or ""),
                       str(doc.get("region") or ""), str(doc.get("tenant") or ""))


def month_segments(start_us: int, end_us: int) -> list[tuple[str, int, int]]:
    """Split [start, end) at calendar-month boundaries (UTC): (period, start, end) pieces."""
    i = bisect_right(MONTH_STARTS, start_us) - 1
    if i < 0 or i + 1 >= len(MONTH_STARTS):
        raise UsageError("usage must lie between 1970 and 2199")
    hi = MONTH_STARTS[i + 1]
    if end_us <= hi:
        return [(period_name(i), start_us, end_us)]
    out = []
    s = start_us
    while s < end_us:
        e = min(MONTH_STARTS[i + 1], end_us)
        out.append((period_name(i), s, e))
        s, i = e, i + 1
    return out
