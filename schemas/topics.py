"""Which events travel on which topic, keyed how, with how many partitions.

This table is the contract for producers (also exported as ``schemas/json/topics.json``).
Keys are chosen for ordering and for ownership:

* resources / health / usage are keyed by ``resource_id``: one resource's history is
  ordered, and one worker owns a resource's live row.
* requests and allocations are keyed by ``request_id``: a consumer sees a request's
  outcome events in order (queued -> placed -> released).
* billing lines and alerts are keyed by ``partner_id``: a partner's ledger is ordered; so is
  the internal billing feed, so that one billing worker owns each partner's ledger.
* dead letters are keyed by source topic.

Topic names are ``<prefix>.<name>.v<major>``; the prefix is a setting so that several
installs (and every test) can share one broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import events as ev
from .base import Event


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name, e.g. "requests"
    version: int
    key: str
    partitions: int
    events: tuple[type[Event], ...]
    description: str
    compacted: bool = False
    #: Further topic settings at creation, e.g. how soon a compacted topic rolls its segments.
    configs: tuple[tuple[str, str], ...] = ()

    def full_name(self, prefix: str) -> str:
        return f"{prefix}.{self.name}.v{self.version}"

    @cached_property      # asked on every decode at the edge: computed once
    def event_types(self) -> tuple[str, ...]:
        return tuple(e.model_fields["event_type"].default for e in self.events)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("resources", 1, "resource_id", 6,
              (ev.ResourceDiscovered, ev.ResourceUpdated, ev.ResourceRemoved),
              "resource lifecycle from discovery adapters (compacted: the latest event per resource)",
              compacted=True),
    TopicSpec("health", 1, "resource_id", 6, (ev.HealthSample, ev.HealthChanged),
              "heartbeats and health verdicts"),
    TopicSpec("usage", 1, "resource_id", 6, (ev.UsageSample,), "measured use per resource"),
    TopicSpec("requests", 1, "request_id", 6, (ev.WorkloadRequest, ev.ReleaseRequested),
              "workload requests from producers, and their requests to release"),
    TopicSpec("allocations", 1, "request_id", 6,
              (ev.AllocationPlaced, ev.AllocationQueued, ev.AllocationRejected, ev.AllocationReleased),
              "one outcome per request, then its release"),
    TopicSpec("forecasts", 1, "series", 3, (ev.Forecast, ev.DemandSpike, ev.DemandInterval),
              "demand quantiles per series, realised demand per interval, spikes"),
    TopicSpec("provisioning", 1, "pool", 3, (ev.ProvisioningHint,),
              "capacity to bring up ahead of forecast demand (scheduler's hints)"),
    TopicSpec("tuning", 1, "knob", 1, (ev.TuningDecision,),
              "the scheduler's tuned knobs: each choice and the reward of the one before"),
    TopicSpec("external-events", 1, "scope", 1, (ev.ExternalEvent,), "campaigns, releases, holidays"),
    TopicSpec("migrations", 1, "migration_id", 3,
              (ev.MigrationPlanned, ev.MigrationProgress, ev.MigrationDone, ev.MigrationFailed),
              "migration state machine steps"),
    TopicSpec("billing-lines", 1, "partner_id", 3, (ev.BillingLine,), "rated partner usage"),
    TopicSpec("alerts", 1, "partner_id", 1, (ev.UsageLimitAlert,), "usage-limit threshold crossings"),
    TopicSpec("agreements", 1, "partner_id", 1, (ev.AgreementUpdated,), "partner agreements, latest per partner",
              compacted=True),
    TopicSpec("dead-letters", 1, "source_topic", 1, (ev.DeadLetter,), "inputs that failed validation"),
    # Internal: workers' saved state (tessera.streams.checkpoint), compacted on owner#chunk
    # so that a restart reads the newest checkpoint and the inputs after it, not all history.
    TopicSpec("checkpoints", 1, "owner", 1, (ev.Checkpoint,),
              "internal: each worker's newest saved state and input positions", compacted=True,
              # Segments roll every 10 minutes so that compaction, which leaves the active
              # segment alone, keeps about one checkpoint per owner rather than a week of them.
              configs=(("segment.ms", "600000"), ("min.cleanable.dirty.ratio", "0.1"))),
    # Internal: allocation events re-keyed by each placement's resource id, so that the
    # resources agent (co-partitioned by resource id) keeps allocated capacity per resource.
    TopicSpec("resource-allocations", 1, "resource_id", 6, (ev.AllocationPlaced, ev.AllocationReleased),
              "internal: allocation events re-keyed by resource id (one message per placement)"),
    # Internal: allocation and migration events re-keyed by partner (a copy per partner
    # shard an event concerns), written by the scheduler and the migration agent in the
    # transaction of the original, so that billing workers share partners through a consumer
    # group (tessera.streams.billing_feed).
    TopicSpec("billing-feed", 1, "partner_id", 6,
              (ev.AllocationPlaced, ev.AllocationReleased, ev.MigrationProgress, ev.MigrationDone,
               ev.MigrationFailed, ev.FeedTick),
              "internal: allocation and migration events re-keyed by partner (a copy per partner shard), "
              "and the clock ticks that keep every shard's month to date moving"),
    # Internal: requests and usage turned into demand, re-keyed by series group so that one
    # forecast worker owns each group's intervals whatever the number of workers.
    TopicSpec("demand", 1, "group", 3, (ev.DemandObservation,),
              "internal: demand observations keyed by series group"),
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


def topic_spec(name: str) -> TopicSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_NAME)}") from None
