"""Demand series: requests and usage samples turned into demand per interval and group.

A *group* is a set of series that share their inputs (e.g. ``tier=gold``: its vCPU,
memory and GPU demand); a *series* is ``<group>/dim=<dimension>``.

- Requests: the capacity a request asks for (replicas x per-replica size) counts in the
  interval of its event time, per SLA tier: the demand that arrives.
- Usage samples: used capacity x sample length / interval length, summed over resources:
  the mean capacity in use during the interval (group ``source=usage``).

``GroupIntervals`` keeps a group's open intervals. Event time drives it: the watermark is
the latest event time seen minus the grace period; an interval closes once the watermark
passes its end, and late events inside the grace window still land in their interval.
Events for an already closed interval are refused as *late* (the agent dead-letters them
with that reason). Empty intervals close with zero demand - zero is an observation.
Every input is applied at most once: the state remembers the highest source offset applied
per source partition, so a replay after a restart changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from tessera.schemas import GIB, DemandObservation, UsageSample, WorkloadRequest

DIMENSIONS = ("vcpu", "memory_gib", "gpu")


def series_name(group: str, dim: str) -> str:
    return f"{group}/dim={dim}"


def observation_of_request(r: WorkloadRequest, topic: str, partition: int, offset: int) -> DemandObservation:
    c = r.per_replica
    return DemandObservation(
        group=f"tier={r.sla_tier.value}", observed_at=r.event_time,
        amounts={"vcpu": r.replicas * c.vcpu, "memory_gib": r.replicas * c.memory_bytes / GIB,
                 "gpu": float(r.replicas * c.gpu)},
        source_topic=topic, source_partition=partition, source_offset=offset)


def observation_of_usage(u: UsageSample, topic: str, partition: int, offset: int,
                         interval_s: int) -> DemandObservation:
    share = u.interval_seconds / interval_s
    return DemandObservation(
        group="source=usage", observed_at=u.event_time,
        amounts={"vcpu": u.used.vcpu * share, "memory_gib": u.used.memory_bytes / GIB * share,
                 "gpu": u.used.gpu * share},
        source_topic=topic, source_partition=partition, source_offset=offset)


@dataclass
class GroupIntervals:
    group: str
    interval_s: int
    grace_s: float
    open: dict[int, dict[str, float]] = field(default_factory=dict)   # interval index -> dim -> sum
    closed_through: int | None = None                                # index of the last closed interval
    max_event_time: float = float("-inf")
    applied: dict[str, int] = field(default_factory=dict)             # "topic:partition" -> last offset

    def observe(self, o: DemandObservation) -> str:
        """Apply one observation: 'applied', 'duplicate' (already applied) or 'late'."""
        src = f"{o.source_topic}:{o.source_partition}"
        if self.applied.get(src, -1) >= o.source_offset:
            return "duplicate"
        self.applied[src] = o.source_offset
        t = o.observed_at.timestamp()
        idx = int(t // self.interval_s)
        if self.closed_through is not None and idx <= self.closed_through:
            return "late"
        bucket = self.open.setdefault(idx, {})
        for dim, v in o.amounts.items():
            bucket[dim] = bucket.get(dim, 0.0) + v
        self.max_event_time = max(self.max_event_time, t)
        return "applied"

    def close_ready(self) -> list[tuple[float, dict[str, float]]]:
        """Intervals the watermark has passed, oldest first, as (start seconds, dim -> value)."""
        if self.closed_through is None and not self.open:
            return []
        # Inputs arrive from many source partitions, so not in event-time order: the first
        # interval is the earliest one seen, not the first to arrive.
        idx = self.closed_through + 1 if self.closed_through is not None else min(self.open)
        watermark = self.max_event_time - self.grace_s
        out = []
        while (idx + 1) * self.interval_s <= watermark:
            bucket = self.open.pop(idx, {})
            out.append((float(idx * self.interval_s), {d: bucket.get(d, 0.0) for d in DIMENSIONS}))
            self.closed_through = idx
            idx += 1
        return out


#: Where a quiet clock's observations say they come from (dedup key ``clock:0``, offset =
#: the observation time in microseconds, so each is applied once and in order).
QUIET_CLOCK = "clock"


def quiet_observation(g: GroupIntervals, now: float) -> DemandObservation | None:
    """A zero observation at ``now - interval`` for a group that has seen nothing newer.

    Intervals close when event time passes them, so a group whose inputs stop (the quiet
    end of a day, a tier nobody uses any more) would keep its last intervals open and its
    last forecast for ever: the planner would keep capacity for demand that is gone. The
    agent publishes this for such a group every interval; it is applied like any input (so
    it lies on the group's partition, in order with its real inputs), and it means what an
    empty interval means: nothing arrived. An input older than ``now - interval - grace``
    that turns up later is late, as it would be after any newer input."""
    at = now - g.interval_s
    if g.max_event_time >= at or (g.closed_through is None and not g.open):
        return None
    return DemandObservation(group=g.group, observed_at=datetime.fromtimestamp(at, tz=timezone.utc),
                             amounts=dict.fromkeys(DIMENSIONS, 0.0),
                             source_topic=QUIET_CLOCK, source_partition=0, source_offset=int(at * 1_000_000))
