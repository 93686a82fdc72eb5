"""Rows of the live resource table and the scheduler's read API over them.

A row holds a resource's normalized spec, its health state, what is allocated on it
and the free capacity last reported by its heartbeat. Rows are plain dicts encoded with
orjson (the Faust table stores bytes), so they survive the changelog unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import orjson

from tessera.schemas import Capacity, HealthSample, ResourceSpec
from tessera.schemas.codec import json_default

from . import health

DIMS = ("vcpu", "memory_bytes", "storage_bytes", "network_gbps", "gpu")


def new_row(resource_id: str) -> dict[str, Any]:
    return {"resource_id": resource_id, "spec": None, "health": health.new_state(),
            "allocated": Capacity().model_dump(), "reported_free": None, "updated_at": None}


def encode_row(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(row, default=json_default)


def decode_row(data: bytes | None) -> dict[str, Any] | None:
    return None if data is None else orjson.loads(data)


def set_spec(row: dict[str, Any], spec: ResourceSpec, at: str) -> None:
    row["spec"] = spec.model_dump(mode="json")
    row["updated_at"] = at


def apply_allocation(row: dict[str, Any], resource_id: str, event: Any) -> None:
    """Add (placed) or remove (released) one allocation's share of this resource.

    Idempotent: the row remembers which allocations it holds, so a redelivered event
    changes nothing.
    """
    held = row.setdefault("allocations", {})
    alloc_id = event.allocation_id
    per = event.per_replica
    replicas = sum(p.replicas for p in event.placements if p.resource_id == resource_id)
    if per is None or replicas == 0:
        return
    sign = 0
    if event.event_type == "allocation.placed" and alloc_id not in held:
        held[alloc_id] = replicas
        sign = 1
    elif event.event_type == "allocation.released" and alloc_id in held:
        replicas = held.pop(alloc_id)
        sign = -1
    if sign:
        alloc = row["allocated"]
        for d in DIMS:
            alloc[d] = max(alloc.get(d, 0) + sign * replicas * getattr(per, d), 0)


def set_reported_free(row: dict[str, Any], sample: HealthSample) -> None:
    if sample.free is not None:
        row["reported_free"] = sample.free.model_dump()


@dataclass(frozen=True)
class ResourceView:
    """A read-only, typed view of one row for the scheduler."""

    resource_id: str
    spec: ResourceSpec
    healthy: bool
    allocated: Capacity
    free: Capacity

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ResourceView | None":
        if not row.get("spec"):
            return None
        spec = ResourceSpec.model_validate(row["spec"])
        alloc = row.get("allocated") or {}
        allocated = Capacity(vcpu=float(alloc.get("vcpu", 0)), memory_bytes=int(alloc.get("memory_bytes", 0)),
                             storage_bytes=int(alloc.get("storage_bytes", 0)),
                             network_gbps=float(alloc.get("network_gbps", 0)), gpu=int(alloc.get("gpu", 0)))
        cap = spec.capacity
        free = {d: max(getattr(cap, d) - getattr(allocated, d), 0) for d in DIMS}
        rep = row.get("reported_free")
        if rep:  # the node's own report can only lower what we think is free
            free = {d: min(free[d], rep.get(d, free[d])) if d in ("vcpu", "memory_bytes") else free[d] for d in DIMS}
        return cls(row["resource_id"], spec, row["health"]["status"] == "healthy", allocated, Capacity(**free))


@dataclass(frozen=True)
class ResourceFilter:
    """What a placement needs; empty collections mean "any"."""

    min_free: Capacity = Capacity()
    required_tags: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    healthy_only: bool = True
    #: Tags that make a resource unplaceable unless the request tolerates them (taints).
    exclude_tag_prefixes: tuple[str, ...] = ("taint:",)

    def admits(self, v: ResourceView) -> bool:
        if self.healthy_only and not v.healthy:
            return False
        s = v.spec
        if self.regions and s.region not in self.regions:
            return False
        if self.providers and s.provider not in self.providers:
            return False
        tags = set(s.tags)
        if not self.required_tags <= tags:
            return False
        if any(t.startswith(self.exclude_tag_prefixes) for t in tags - self.required_tags):
            return False
        return all(getattr(v.free, d) >= getattr(self.min_free, d) for d in DIMS)


def views(rows: Iterable[Mapping[str, Any] | bytes]) -> Iterator[ResourceView]:
    for row in rows:
        r = decode_row(row) if isinstance(row, (bytes, bytearray)) else row
        v = ResourceView.from_row(r) if r else None
        if v is not None:
            yield v


def available(rows: Iterable[Mapping[str, Any] | bytes], flt: ResourceFilter = ResourceFilter()) -> list[ResourceView]:
    """Resources a placement may use, cheapest first (ties by id, for determinism)."""
    out = [v for v in views(rows) if flt.admits(v)]
    out.sort(key=lambda v: (v.spec.price_per_hour, v.resource_id))
    return out


class LiveResourceTable:
    """The scheduler's in-process read API over the live table (any bytes -> bytes mapping,
    e.g. the Faust table of ``agents.resources``)."""

    def __init__(self, mapping: Mapping[Any, bytes]) -> None:
        self._rows = mapping

    def get(self, resource_id: str) -> ResourceView | None:
        raw = self._rows.get(resource_id.encode())
        row = decode_row(raw)
        return ResourceView.from_row(row) if row else None

    def available(self, flt: ResourceFilter = ResourceFilter()) -> list[ResourceView]:
        return available(list(self._rows.values()), flt)

    def __len__(self) -> int:
        return len(self._rows)
