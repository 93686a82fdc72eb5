"""The event-log agent: every valid event into ClickHouse ``events``, every invalid one
to the dead-letter topic; and the dead-letter topic itself into ``dead_letters``.

Delivery: at-least-once. A batch's offsets are acknowledged only after its rows are
durably written (Faust acks take_events batches when the loop body finishes), and
writes retry with backoff until ClickHouse takes them, so nothing valid is dropped.
Duplicates from redelivery are removed by the insert deduplication token of each
batch (one insert per batch) and by ReplacingMergeTree on event_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable

from streams.deadletter import publish_dead_letters
from streams.edge import Decoded, decode_faust_event
from streams.topics import Topics
from tessera import metrics
from tessera.config import Settings
from tessera.eventlog import batch_token, dead_letter_row, event_row
from tessera.storage import AnalyticsStore, StorageError

log = logging.getLogger(__name__)

AGENT = "event-log"
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.5


async def write_until_durable(store: AnalyticsStore, table: str, rows: list[dict[str, Any]], token: str) -> None:
    """Insert, retrying with capped exponential backoff; returns only once written."""
    delay = 0.2
    metrics.SINK_PENDING.labels(table).inc(len(rows))
    times = [r["event_time"] for r in rows if isinstance(r.get("event_time"), datetime)]
    oldest = min(times).timestamp() if times else time.time()
    while True:
        # Lag: how old the oldest event waiting for ClickHouse is (grows during an outage).
        metrics.SINK_LAG_SECONDS.labels(table).set(max(time.time() - oldest, 0.0))
        try:
            with metrics.SINK_BATCH_SECONDS.labels(table).time():
                await asyncio.to_thread(store.insert, table, rows, dedup_token=token)
            metrics.SINK_ROWS.labels(table).inc(len(rows))
            metrics.SINK_PENDING.labels(table).dec(len(rows))
            metrics.SINK_LAG_SECONDS.labels(table).set(0.0)
            return
        except StorageError as exc:
            metrics.SINK_FAILURES.labels(table).inc()
            log.warning("write to %s failed (%s); retrying in %.1fs", table, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def by_partition(decoded: Iterable[Decoded]) -> dict[tuple[str, int], list[Decoded]]:
    groups: dict[tuple[str, int], list[Decoded]] = defaultdict(list)
    for d in decoded:
        groups[(d.topic, d.partition)].append(d)
    return groups


def register(app: Any, topics: Topics, settings: Settings, store: AnalyticsStore) -> None:
    db = store.database
    # Internal re-keyed copies (resource-allocations, demand) would only duplicate their sources.
    inputs = [n for n in topics.by_name if n not in ("dead-letters", "resource-allocations", "demand")]
    source = app.topic(*[t for n in inputs for t in topics[n].topics], key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    dlq = topics["dead-letters"]

    @app.agent(source, name=f"{settings.topic_prefix}.agent.event-log")
    async def event_log(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            decoded = [decode_faust_event(e, topics.spec_of_topic(e.message.topic), AGENT) for e in batch]
            await publish_dead_letters(dlq, decoded, AGENT)
            # One insert per batch, whatever the topics and partitions in it: every insert
            # makes a MergeTree part, and one per partition (dozens per batch across all
            # topics) kept the engine merging at most of a core.
            rows, spans = [], []
            for (topic, partition), group in by_partition(decoded).items():
                part = [event_row(d.event, topic=topic, partition=partition, offset=d.offset, key=d.key)
                        for d in group if d.event is not None]
                metrics.child(metrics.EVENTS_CONSUMED, AGENT, topic).inc(len(part))
                rows += part
                spans.append((topic, partition, group[0].offset, group[-1].offset))
            if rows:
                await write_until_durable(store, f"{db}.events", rows, batch_token("events", spans))

    @app.agent(dlq, name=f"{settings.topic_prefix}.agent.dead-letter-log")
    async def dead_letter_log(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            decoded = [decode_faust_event(e, topics.specs["dead-letters"], "dead-letter-log") for e in batch]
            rows, spans = [], []
            for (topic, partition), group in by_partition(decoded).items():
                for d in group:
                    if d.event is None:
                        # A malformed dead letter cannot be dead-lettered again (it would loop).
                        log.error("malformed dead letter at %s/%s@%s: %s", topic, partition, d.offset,
                                  d.dead_letter.reason if d.dead_letter else "?")
                        continue
                    rows.append(dead_letter_row(d.event))  # type: ignore[arg-type]
                spans.append((topic, partition, group[0].offset, group[-1].offset))
            if rows:
                await write_until_durable(store, f"{db}.dead_letters", rows, batch_token("dead_letters", spans))
