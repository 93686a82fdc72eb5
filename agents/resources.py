"""The live resource table: resource events and health samples in, one row per resource.

* ``resource-events``  discovered / updated set the row's spec, removed deletes the row.
* ``health-samples``   heartbeats feed the health monitor (hysteresis); transitions are
                       published as ``health.changed`` on the health topic. A batch lane
                       (``streams.lane``), not a Faust agent: it reads the health partitions
                       this worker owns of the co-partitioned resources topic.
* ``heartbeat-expiry`` a timer marks silent heartbeating resources unhealthy, once.

The table is a Faust table keyed by resource id, backed by its changelog topic, so a
restarted worker recovers it. It uses the key partitioner (``use_partitioner``): the
resources and health topics are keyed by resource id with the same partition count,
so a key's changelog partition is its source partition, and batches and the timer can
write rows without a "current event". Rows are coalesced per batch: a burst of
heartbeats from one resource costs one changelog write.

``health.changed`` events arriving on the health topic are this agent's own verdicts
(already applied) and are skipped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tessera.agents.worker import worker_agent
from tessera.config import Settings
from tessera.resources import health
from tessera.resources.table import (
    LiveResourceTable,
    apply_allocation,
    decode_row,
    encode_row,
    new_row,
    set_reported_free,
    set_spec,
)
from tessera.schemas import (
    AllocationPlaced,
    AllocationReleased,
    HealthChanged,
    HealthSample,
    ResourceRemoved,
    encode,
    utc_now,
)
from tessera.schemas.topics import topic_spec
from tessera.storage.store import AnalyticsStore
from tessera.streams import cloudevents, metrics
from tessera.streams.deadletter import publish_dead_letters, publish_events
from tessera.streams.edge import decode_faust_event, decode_record
from tessera.streams.lane import PartitionLane
from tessera.streams.topics import Topics

log = logging.getLogger(__name__)

AGENT = "resources"
TABLE = "resources"


def table_name(settings: Settings) -> str:
    return f"{settings.topic_prefix}.{TABLE}"


def changelog_topic(settings: Settings, app_id: str | None = None) -> str:
    """Faust names a table's changelog ``<app id>-<table name>-changelog``."""
    return f"{app_id or settings.app_id}-{table_name(settings)}-changelog"


def policy_from(settings: Settings) -> health.HealthPolicy:
    return health.HealthPolicy(settings.health_heartbeat_timeout_s, settings.health_unhealthy_after,
                               settings.health_healthy_after)


@worker_agent("resources", "the live resource table, health state changes, demand routing")
def register(app: Any, topics: Topics, settings: Settings, store: AnalyticsStore | None = None) -> None:
    policy = policy_from(settings)
    partitions = topic_spec("resources").partitions
    assert topic_spec("health").partitions == partitions, "resources and health must be co-partitioned"
    table = app.Table(
        # Keys and values are raw bytes (the app's serializers): rows are orjson documents.
        table_name(settings), default=None, partitions=partitions, key_type=bytes, value_type=bytes,
        use_partitioner=True,
        help="live resource rows: spec, health, allocated, reported free",
    )
    # The read API for code in this worker (and tests); the scheduler keeps its own view.
    app.tessera_resources = LiveResourceTable(table)
    dlq, health_topic = topics["dead-letters"], topics["health"]
    started = time.time()
    #: resource id -> wall-clock time of its last heartbeat seen by this worker (not durable on purpose)
    last_heartbeat: dict[str, float] = {}

    def load(cache: dict[str, Any], rid: str) -> dict[str, Any]:
        if rid in cache and cache[rid][0] is not None:
            return cache[rid][0]
        raw = None if rid in cache else table.get(rid.encode())
        cache[rid] = (decode_row(raw) or new_row(rid), raw)
        return cache[rid][0]

    def store_rows(cache: dict[str, Any]) -> None:
        # Only rows whose durable content changed are written (each write is a changelog message).
        for rid, (row, raw) in cache.items():
            if row is None:
                table.pop(rid.encode(), None)
                continue
            data = encode_row(row)
            if data != raw:
                table[rid.encode()] = data

    @app.agent(topics["resources"], name=f"{settings.topic_prefix}.agent.resource-events")
    async def resource_events(stream: Any) -> None:
        async for batch in stream.take_events(1000, within=0.2):
            decoded = [decode_faust_event(e, topics.specs["resources"], AGENT) for e in batch]
            await publish_dead_letters(dlq, decoded, AGENT)
            cache: dict[str, Any] = {}
            for d in decoded:
                e = d.event
                if e is None:
                    continue
                metrics.child(metrics.EVENTS_CONSUMED, AGENT, d.topic).inc()
                if isinstance(e, ResourceRemoved):
                    cache[e.resource_id] = (None, None)
                    last_heartbeat.pop(e.resource_id, None)
                else:
                    set_spec(load(cache, e.resource_id), e.spec, e.event_time.isoformat())  # type: ignore[attr-defined]
            store_rows(cache)

    # Health samples are many and small: a batch lane reads them (streams.lane), for the
    # partitions of the health topic this worker owns of the table's resources topic (the
    # two are co-partitioned), past Faust's per-event stream machinery.
    health_spec = topics.specs["health"]

    async def health_samples(records: Any) -> None:
        decoded = [decode_record(r, health_spec, AGENT) for r in records]
        await publish_dead_letters(dlq, decoded, AGENT)
        cache: dict[str, Any] = {}
        verdicts: list[HealthChanged] = []
        now = time.time()
        for d in decoded:
            e = d.event
            if not isinstance(e, HealthSample):
                continue  # our own health.changed verdicts, already applied
            row = load(cache, e.resource_id)
            set_reported_free(row, e)
            last_heartbeat[e.resource_id] = now
            v = health.observe(row["health"], e, policy)
            if v is not None:
                verdicts.append(v)
        metrics.EVENTS_CONSUMED.labels(AGENT, "health").inc(len(decoded))
        store_rows(cache)
        if verdicts:
            await publish_events(health_topic, verdicts)

    lane = PartitionLane(settings, source=health_topic.get_topic_name(), follow=topics["resources"].get_topic_name(),
                         group_id=f"{app.conf.id}-health-lane", handle=health_samples)
    lane.attach(app)
    app.tessera_health_lane = lane

    @app.task
    async def health_lane() -> None:
        await lane.run()

    # Allocated capacity per resource: allocation events (keyed by request id) are re-keyed
    # by each placement's resource id onto an internal topic co-partitioned with the table.
    by_resource = topics["resource-allocations"]

    @app.agent(topics["allocations"], name=f"{settings.topic_prefix}.agent.allocations-by-resource")
    async def allocations_by_resource(stream: Any) -> None:
        async for batch in stream.take_events(1000, within=0.2):
            futures = []
            for fe in batch:
                d = decode_faust_event(fe, topics.specs["allocations"], AGENT)
                e = d.event
                if isinstance(e, (AllocationPlaced, AllocationReleased)):
                    for p in e.placements:
                        futures.append(await by_resource.send(
                            key=p.resource_id.encode(), value=encode(e),
                            headers=cloudevents.headers(e, by_resource.get_topic_name())))
            for f in futures:
                await f

    @app.agent(by_resource, name=f"{settings.topic_prefix}.agent.resource-allocations")
    async def resource_allocations(stream: Any) -> None:
        async for batch in stream.take_events(1000, within=0.2):
            cache: dict[str, Any] = {}
            for fe in batch:
                d = decode_faust_event(fe, topics.specs["resource-allocations"], AGENT)
                e = d.event
                if e is None or d.key is None:
                    continue
                rid = d.key.decode()
                row = load(cache, rid)
                apply_allocation(row, rid, e)  # type: ignore[arg-type]
            store_rows(cache)

    @app.timer(interval=settings.health_check_interval_s, name=f"{settings.topic_prefix}.timer.heartbeat-expiry")
    async def heartbeat_expiry() -> None:
        recovery = getattr(app.tables, "recovery", None)
        if recovery is not None and not recovery.completed.is_set():
            return  # the table is still being restored; silence is not yet meaningful
        now = time.time()
        verdicts = []
        for key, raw in list(table.items()):
            row = decode_row(raw)
            if row and health.expired(row["health"], last_heartbeat.get(row["resource_id"]), now, policy,
                                      not_before=started):
                v = health.missing_heartbeat(row["resource_id"], utc_now(), policy)
                health.apply_verdict(row["health"], v)
                table[key] = encode_row(row)
                verdicts.append(v)
        if verdicts:
            log.info("%d resource(s) missed heartbeats", len(verdicts))
            await publish_events(health_topic, verdicts)
