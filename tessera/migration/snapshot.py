"""What the migration planner sees: an immutable snapshot of the fleet and its work.

The offline form is the JSON document ``tessera migrate plan --snapshot`` reads::

    {"now": ISO-8601 UTC,
     "resources": [{"id", "provider", "region", "vcpu", "memory_gib", "gpu",   # total capacity
                    "price_per_hour", "tags": [...], "open": bool, "healthy": bool,
                    "withdrawing": bool (optional: the partner is taking it back),
                    "pool": str (optional, default the provider)}],
     "allocations": [{"id", "tier", "tenant" (optional), "vcpu", "memory_gib", "gpu",  # per replica
                      "tags_required": [...], "regions": [...], "providers": [...] (optional),
                      "placements": [{"resource_id", "replicas"}],
                      "expected_end": ISO-8601 (optional: unknown = runs past the horizon)}],
     "forecast": [{"at": ISO-8601, "vcpu": extra vCPU expected in use then,
                   "gpu": extra GPUs then (optional: without it GPU capacity is not closed)}] (optional),
     "recent_moves": [{"allocation_id", "at": ISO-8601}]                      (optional)}

Units are normalised here, once: capacity and demand become (vCPU, GiB, GPU) tuples,
prices ``Decimal``, times aware UTC. The live migration agent builds the same values from
its resource table and the scheduler's placements, so both paths meet the same planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from tessera.schemas import TIER_RANK

#: The dimensions the planner packs, in this order.
DIMS = ("vcpu", "memory_gib", "gpu")


class SnapshotError(ValueError):
    """The snapshot cannot be planned on; the message says where and what to fix."""


@dataclass(frozen=True, slots=True)
class Resource:
    id: str
    provider: str
    region: str
    capacity: tuple[float, float, float]
    price_per_hour: Decimal
    tags: frozenset[str] = frozenset()
    open: bool = False          # already running (paid for) even with no work on it
    healthy: bool = True
    withdrawing: bool = False   # the partner is taking it back: treated like unhealthy
    pool: str = ""

    @property
    def usable(self) -> bool:
        """May the planner put work here?"""
        return self.healthy and not self.withdrawing


@dataclass(frozen=True, slots=True)
class Allocation:
    id: str
    tier: str
    demand: tuple[float, float, float]      # per replica
    placements: tuple[tuple[str, int], ...]  # (resource id, replicas), sorted by resource id
    tags_required: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    tenant: str = ""
    expected_end: datetime | None = None

    @property
    def replicas(self) -> int:
        return sum(k for _, k in self.placements)

    def fits_on(self, r: Resource) -> bool:
        """Constraints only (tags, regions, providers), not room."""
        return (self.tags_required <= r.tags and (not self.regions or r.region in self.regions)
                and (not self.providers or r.provider in self.providers))


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: datetime
    resources: tuple[Resource, ...]
    allocations: tuple[Allocation, ...]
    #: (time, extra vCPU, extra GPUs or None when GPU demand is not forecast)
    forecast: tuple[tuple[datetime, float, float | None], ...] = ()
    recent_moves: tuple[tuple[str, datetime], ...] = ()
    _by_id: dict[str, Resource] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id.update((r.id, r) for r in self.resources)

    def resource(self, rid: str) -> Resource:
        return self._by_id[rid]

    def used(self) -> dict[str, list[float]]:
        """Capacity in use per resource id, from the allocations' placements."""
        used = {r.id: [0.0, 0.0, 0.0] for r in self.resources}
        for a in self.allocations:
            for rid, k in a.placements:
                u = used[rid]
                for d in range(3):
                    u[d] += a.demand[d] * k
        return used


def parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise SnapshotError(f"{where}: expected an ISO-8601 UTC time string, got {value!r}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SnapshotError(f"{where}: {value!r} is not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise SnapshotError(f"{where}: {value!r} has no time zone; write it in UTC, e.g. 2026-11-30T12:00:00Z")
    return t.astimezone(timezone.utc)


def _number(doc: Mapping, key: str, where: str, default: float | None = 0.0) -> float:
    v = doc.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v or v == float("inf"):
        raise SnapshotError(f"{where}: {key!r} must be a finite non-negative number, got {v!r}")
    return float(v)


def _names(doc: Mapping, key: str, where: str) -> frozenset[str]:
    v = doc.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SnapshotError(f"{where}: {key!r} must be a list of strings")
    return frozenset(v)


def _id(doc: Mapping, where: str) -> str:
    v = doc.get("id")
    if not isinstance(v, str) or not v:
        raise SnapshotError(f"{where}: 'id' must be a non-empty string")
    return v


def _flag(doc: Mapping, key: str, where: str, default: bool) -> bool:
    v = doc.get(key, default)
    if not isinstance(v, bool):
        raise SnapshotError(f"{where}: {key!r} must be true or false")
    return v


def parse_snapshot(doc: Any) -> Snapshot:
    """The JSON document above as a Snapshot; raises SnapshotError naming the bad field."""
    if not isinstance(doc, dict):
        raise SnapshotError("the snapshot must be a JSON object with now, resources and allocations")
    now = parse_time(doc.get("now"), "now")
    res_docs, alloc_docs = doc.get("resources"), doc.get("allocations", [])
    if not isinstance(res_docs, list) or not isinstance(alloc_docs, list):
        raise SnapshotError("'resources' and 'allocations' must be lists")
    resources: dict[str, Resource] = {}
    for i, d in enumerate(res_docs):
        where = f"resources[{i}]"
        if not isinstance(d, dict):
            raise SnapshotError(f"{where}: must be an object")
        rid = _id(d, where)
        if rid in resources:
            raise SnapshotError(f"{where}: duplicate resource id {rid!r}")
        try:
            price = Decimal(str(d["price_per_hour"]))
        except (KeyError, InvalidOperation):
            raise SnapshotError(f"{where}: 'price_per_hour' missing or not a number") from None
        if not price.is_finite() or price < 0:
            raise SnapshotError(f"{where}: 'price_per_hour' must be a finite non-negative number")
        provider = str(d.get("provider", ""))
        resources[rid] = Resource(
            id=rid, provider=provider, region=str(d.get("region", "")),
            capacity=tuple(_number(d, k, where) for k in DIMS),  # type: ignore[arg-type]
            price_per_hour=price, tags=_names(d, "tags", where), open=_flag(d, "open", where, False),
            healthy=_flag(d, "healthy", where, True), withdrawing=_flag(d, "withdrawing", where, False),
            pool=str(d.get("pool") or provider))
    allocations: list[Allocation] = []
    seen: set[str] = set()
    for i, d in enumerate(alloc_docs):
        where = f"allocations[{i}]"
        if not isinstance(d, dict):
            raise SnapshotError(f"{where}: must be an object")
        aid = _id(d, where)
        if aid in seen:
            raise SnapshotError(f"{where}: duplicate allocation id {aid!r}")
        seen.add(aid)
        tier = d.get("tier", "silver")
        if tier not in TIER_RANK:
            raise SnapshotError(f"{where}: unknown tier {tier!r}; use one of {', '.join(TIER_RANK)}")
        demand = tuple(_number(d, k, where) for k in DIMS)
        if not any(demand):
            raise SnapshotError(f"{where}: the allocation asks for nothing (vcpu, memory_gib and gpu are all 0)")
        pls = d.get("placements")
        if not isinstance(pls, list) or not pls:
            raise SnapshotError(f"{where}: 'placements' must be a non-empty list of {{resource_id, replicas}}")
        merged: dict[str, int] = {}
        for j, p in enumerate(pls):
            pw = f"{where}.placements[{j}]"
            if not isinstance(p, dict) or p.get("resource_id") not in resources:
                raise SnapshotError(f"{pw}: 'resource_id' must name a resource in the snapshot")
            k = p.get("replicas", 1)
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise SnapshotError(f"{pw}: 'replicas' must be a positive integer")
            merged[p["resource_id"]] = merged.get(p["resource_id"], 0) + k
        end = d.get("expected_end")
        allocations.append(Allocation(
            id=aid, tier=tier, demand=demand, placements=tuple(sorted(merged.items())),  # type: ignore[arg-type]
            tags_required=_names(d, "tags_required", where), regions=_names(d, "regions", where),
            providers=_names(d, "providers", where), tenant=str(d.get("tenant", "")),
            expected_end=None if end is None else parse_time(end, f"{where}.expected_end")))
    forecast = []
    for i, f in enumerate(doc.get("forecast", []) or []):
        where = f"forecast[{i}]"
        if not isinstance(f, dict):
            raise SnapshotError(f"{where}: must be an object {{at, vcpu}}")
        forecast.append((parse_time(f.get("at"), f"{where}.at"), _number(f, "vcpu", where),
                         None if f.get("gpu") is None else _number(f, "gpu", where)))
    recent = []
    for i, m in enumerate(doc.get("recent_moves", []) or []):
        where = f"recent_moves[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("allocation_id"), str):
            raise SnapshotError(f"{where}: must be an object {{allocation_id, at}}")
        recent.append((m["allocation_id"], parse_time(m.get("at"), f"{where}.at")))
    snap = Snapshot(now=now, resources=tuple(resources.values()), allocations=tuple(allocations),
                    forecast=tuple(sorted(forecast, key=lambda f: f[0])), recent_moves=tuple(recent))
    over = overcommitted(snap)
    if over:
        raise SnapshotError(f"resource {over} holds more than its capacity; the snapshot's placements are inconsistent")
    return snap


def overcommitted(snap: Snapshot, placements: Mapping[str, Mapping[str, int]] | None = None) -> str | None:
    """The first resource whose placed replicas exceed its capacity (None if none).
    ``placements`` (allocation id -> resource id -> replicas) overrides the snapshot's."""
    used = {r.id: [0.0, 0.0, 0.0] for r in snap.resources}
    for a in snap.allocations:
        pls = placements[a.id].items() if placements is not None else a.placements
        for rid, k in pls:
            for d in range(3):
                used[rid][d] += a.demand[d] * k
    for r in snap.resources:
        if any(u > c * (1 + 1e-9) + 1e-9 for u, c in zip(used[r.id], r.capacity)):
            return r.id
    return None
