"""A request trace (REQ.csv) as workload requests, normalised once, here.

Columns: ``submit_time`` (seconds from trace start, or ISO-8601 UTC), ``duration_s``,
``vcpu``, ``memory_gib``, optional ``gpu``, ``replicas`` (default 1), ``tier`` (default
silver), ``tenant``, ``tags_required`` and ``regions`` (``;``-separated).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import ValidationError

from tessera.schemas import TIER_RANK, Capacity, WorkloadRequest
from tessera.schemas.base import built
from tessera.schemas.codec import schema_error

GIB = 1 << 30
#: The latest a request may be submitted after the trace's start, in seconds: a century
#: (beyond, its calendar time would soon overflow).
MAX_OFFSET_S = 100 * 365 * 86_400
#: Where a trace given in seconds from its start is put on the calendar (a Monday, UTC).
DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)


class TraceError(ValueError):
    """A trace row that cannot be used; the message names the line and the field."""


@dataclass(frozen=True)
class TracedRequest:
    at: float                  # seconds from the trace start
    duration_s: float
    request: WorkloadRequest


def _number(row: dict, key: str, where: str, default: str | None = None) -> float:
    raw = (row.get(key) or "").strip() or default
    if raw is None:
        raise TraceError(f"{where}: column {key!r} is required")
    try:
        v = float(raw)
    except ValueError:
        raise TraceError(f"{where}: {key} = {raw!r} is not a number") from None
    if not v >= 0 or v == float("inf"):
        raise TraceError(f"{where}: {key} = {raw!r} must be a finite number >= 0")
    return v


def _time(raw: str, where: str) -> float | datetime:
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not 0.0 <= seconds <= MAX_OFFSET_S:       # NaN too
            raise TraceError(f"{where}: submit_time {raw!r} must be seconds from the trace's start, "
                             f"from 0 to {MAX_OFFSET_S:.0f} (a century)")
        return seconds
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise TraceError(f"{where}: submit_time {raw!r} is neither seconds nor an ISO-8601 time") from None
    if dt.tzinfo is None:
        raise TraceError(f"{where}: submit_time {raw!r} has no time zone; give UTC (Z)")
    return dt


def _list(raw: str | None) -> list[str]:
    return [x.strip() for x in (raw or "").split(";") if x.strip()]


def load_trace(path: str | Path) -> tuple[datetime, list[TracedRequest]]:
    """The trace's start on the calendar and its requests in submit order."""
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"requests file {p} not found")
    rows = []
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"submit_time", "duration_s", "vcpu", "memory_gib"} - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{p}: columns {', '.join(sorted(missing))} missing (see `tessera simulate --help`)")
        for i, row in enumerate(reader):
            where = f"{p.name}:{i + 2}"
            rows.append((where, row, _time(row.get("submit_time") or "", where)))
    if not rows:
        raise TraceError(f"{p}: no requests")
    stamps = [t for _, _, t in rows if isinstance(t, datetime)]
    if stamps and len(stamps) != len(rows):
        raise TraceError(f"{p}: submit_time mixes seconds and ISO-8601 times; use one")
    # UTC, as validation makes every event time: requests built below are not validated again
    start = min(stamps).astimezone(timezone.utc) if stamps else DEFAULT_START
    # Traces repeat a few shapes (size, duration, tier, tenant, places) over and over: each
    # shape is parsed and validated once, at its first row (which an error names), and its
    # other rows are built from those validated values with their own ids and times.
    # (Validating every row took about half of loading a trace, a second per 27,000 rows.)
    shapes: dict[tuple, dict] = {}
    out = []
    for i, (where, row, t) in enumerate(rows):
        at = (t - start).total_seconds() if isinstance(t, datetime) else float(t)
        shape = tuple(map(row.get, SHAPE_COLUMNS))
        fields = shapes.get(shape)
        ids = {"event_id": f"sim-{i}", "event_time": start + timedelta(seconds=at), "request_id": f"sim-{i}"}
        if fields is None:
            request = _request(row, where, ids)
            shapes[shape] = {k: v for k, v in request.__dict__.items() if k not in ids}
        else:
            request = built(WorkloadRequest, **fields, **ids)
        out.append(TracedRequest(at, request.expected_duration_seconds, request))
    out.sort(key=lambda r: r.at)
    return start, out


#: The columns that make a request what it is, besides its submit time.
SHAPE_COLUMNS = ("duration_s", "vcpu", "memory_gib", "gpu", "replicas", "tier", "tenant", "tags_required", "regions")


def _request(row: dict, where: str, ids: dict) -> WorkloadRequest:
    tier = (row.get("tier") or "silver").strip()
    if tier not in TIER_RANK:
        raise TraceError(f"{where}: tier {tier!r} unknown; use one of {', '.join(TIER_RANK)}")
    replicas = int(_number(row, "replicas", where, "1"))
    if replicas < 1:
        raise TraceError(f"{where}: replicas must be at least 1")
    duration = _number(row, "duration_s", where)
    vcpu, memory_bytes = _number(row, "vcpu", where), _number(row, "memory_gib", where) * GIB
    gpu = _number(row, "gpu", where, "0")
    if memory_bytes == float("inf"):
        raise TraceError(f"{where}: memory_gib = {row.get('memory_gib')!r} is too large")
    try:
        return WorkloadRequest(
            **ids, tenant=(row.get("tenant") or "default").strip() or "default", sla_tier=tier, replicas=replicas,
            per_replica=Capacity(vcpu=vcpu, memory_bytes=int(memory_bytes), gpu=int(gpu)),
            required_tags=_list(row.get("tags_required")), allowed_regions=_list(row.get("regions")),
            expected_duration_seconds=max(duration, 1.0))
    except ValidationError as exc:      # beyond a contract's bounds (sizes, tags, names)
        raise TraceError(f"{where}: {schema_error(exc)}") from None
