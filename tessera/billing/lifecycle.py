"""Allocation lifecycle -> usage records: what the live billing agent rates.

A placement on a partner's resource starts accruing when it is placed and stops when it
is released; the record's id is ``<allocation id>/<resource id>`` so a replayed release
rates nothing twice. Own resources ('own') are not billed by partners. Allocations still
running count *provisionally* up to the latest event time seen, for month-to-date views
and limits, and are rated for good on release.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import AllocationPlaced, AllocationReleased, Event

from .usage import EPOCH, US, UsageRecord

GIB = 1024 ** 3


def _us(dt) -> int:
    d = dt - EPOCH
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


@dataclass
class Lifecycle:
    running: dict[str, AllocationPlaced] = field(default_factory=dict)
    watermark_us: int = 0

    def apply(self, e: Event) -> list[UsageRecord]:
        """Feed one allocation event; returns the usage that became final."""
        if isinstance(e, (AllocationPlaced, AllocationReleased)):
            self.watermark_us = max(self.watermark_us, _us(e.event_time))
        if isinstance(e, AllocationPlaced):
            if any(p.provider != "own" for p in e.placements):
                self.running[e.allocation_id] = e
            return []
        if isinstance(e, AllocationReleased):
            placed = self.running.pop(e.allocation_id, None)
            return [] if placed is None else records(placed, _us(e.event_time))
        return []

    def provisional(self) -> list[UsageRecord]:
        """Usage of still-running allocations up to the watermark."""
        return [r for p in self.running.values() for r in records(p, self.watermark_us)]


def records(placed: AllocationPlaced, end_us: int) -> list[UsageRecord]:
    start = _us(placed.event_time)
    end = max(end_us, start)
    c = placed.per_replica
    out = []
    for p in placed.placements:
        if p.provider == "own":
            continue
        out.append(UsageRecord(
            event_id=f"{placed.allocation_id}/{p.resource_id}", partner=p.provider,
            allocation_id=placed.allocation_id, resource_id=p.resource_id, start_us=start, end_us=end,
            vcpu_milli=round(c.vcpu * 1000) * p.replicas, memory_milli=round(c.memory_bytes * 1000 / GIB) * p.replicas,
            gpu_milli=c.gpu * 1000 * p.replicas))
    return out
