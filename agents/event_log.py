"""The event-log sink: every valid event into ClickHouse ``events``, every invalid one
to the dead-letter topic; and the dead-letter topic itself into ``dead_letters``.

Delivery: at-least-once. A batch's offsets are committed only after its rows are
durably written and its dead letters acknowledged, and writes retry with backoff until
ClickHouse takes them, so nothing valid is dropped. Duplicates from redelivery are
removed by the insert deduplication token of each batch (one insert per batch) and by
ReplacingMergeTree on event_id.

Why the main sink is a batch consumer and not a Faust stream agent: it reads every
topic, the busiest stream in the system (each request becomes a request, a placed and a
released event, plus health, usage and billing), and does nothing per event that needs
Faust (no table, no re-keying). Faust's per-event stream machinery topped out near 4,500
events/s here and took most of a core at the pipeline's 2,000 requests/s. A plain
aiokafka consumer in the same worker (a Faust app task; its own consumer group, so sinks
scale out by partition like any group) reads in batches at a fraction of that CPU. The
dead-letter log stays a Faust agent: it is low-volume and gives the worker its Faust
assignment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from tessera.agents.worker import worker_agent
from tessera.config import Settings
from tessera.schemas.topics import topic_spec
from tessera.storage.rows import batch_token, dead_letter_row, event_row
from tessera.storage.store import AnalyticsStore, StorageError
from tessera.streams import metrics
from tessera.streams.batching import take_batch
from tessera.streams.deadletter import publish_dead_letters
from tessera.streams.edge import Decoded, decode_record
from tessera.streams.security import aiokafka_security_kwargs
from tessera.streams.topics import Topics

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


def rows_and_spans(decoded: Iterable[Decoded]) -> tuple[list[dict[str, Any]], list[tuple[str, int, int, int]]]:
    """The ``events`` rows of a decoded batch, and its (topic, partition, first, last) spans.

    One insert per batch, whatever the topics and partitions in it: every insert makes a
    MergeTree part, and one per partition (dozens per batch across all topics) kept the
    engine merging at most of a core."""
    rows, spans = [], []
    for (topic, partition), group in by_partition(decoded).items():
        part = [event_row(d.event, topic=topic, partition=partition, offset=d.offset, key=d.key)
                for d in group if d.event is not None]
        metrics.child(metrics.EVENTS_CONSUMED, AGENT, topic).inc(len(part))
        rows += part
        spans.append((topic, partition, group[0].offset, group[-1].offset))
    return rows, spans


class EventLogSink:
    """Every topic but the dead letters (and internal re-keyed copies) into ``events``."""

    def __init__(self, settings: Settings, store: AnalyticsStore, topic_names: list[str], dlq: Any):
        self.settings, self.store, self.dlq = settings, store, dlq   # dlq: the worker's dead-letter topic
        self.spec_of = {topic_spec(n).full_name(settings.topic_prefix): topic_spec(n) for n in topic_names}

    @property
    def group(self) -> str:
        return f"{self.settings.app_id}-event-log"

    async def run(self) -> None:
        s = self.settings
        # read_committed: events of a scheduler transaction that aborted never happened.
        consumer = AIOKafkaConsumer(*self.spec_of, bootstrap_servers=s.bootstrap_servers,
                                    group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    **aiokafka_security_kwargs(s))
        await consumer.start()
        try:
            while True:
                # Batches by time, not by fetch: every insert makes a MergeTree part for the
                # engine to merge, and a fetch at low rates brings a handful of records.
                records = await take_batch(consumer, BATCH_MAX, BATCH_WITHIN_S, idle_s=BATCH_WITHIN_S)
                if not records:
                    continue
                await self._write(records)
                await self._commit(consumer, records)
        finally:
            await consumer.stop()

    async def _write(self, records: list[Any]) -> None:
        decoded = [decode_record(r, self.spec_of[r.topic], AGENT) for r in records]
        await publish_dead_letters(self.dlq, decoded, AGENT)
        rows, spans = rows_and_spans(decoded)
        if rows:
            await write_until_durable(self.store, f"{self.store.database}.events", rows, batch_token("events", spans))

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, records: list[Any]) -> None:
        # Records of a partition arrive in offset order: the last one of each is its position.
        offsets = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while this batch was written: its new owner reads it again
            # and the duplicates go (insert token, ReplacingMergeTree). Nothing is lost.
            log.warning("event-log offsets not committed (%s); the batch will be read again", exc)


class DeadLetterLogSink(EventLogSink):
    """The dead-letter topic into ``dead_letters``: the same batch consumer as the event log
    (a Faust agent here wrote about ten rows a second: per-event stream overhead and one
    small insert after another), its own consumer group."""

    @property
    def group(self) -> str:
        return f"{self.settings.app_id}-dead-letter-log"

    async def _write(self, records: list[Any]) -> None:
        spec = topic_spec("dead-letters")
        decoded = [decode_record(r, spec, "dead-letter-log") for r in records]
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
            await write_until_durable(self.store, f"{self.store.database}.dead_letters", rows,
                                      batch_token("dead_letters", spans))


@worker_agent("event-log", "every topic into ClickHouse (a batch consumer), and the dead-letter log")
def register(app: Any, topics: Topics, settings: Settings, store: AnalyticsStore) -> None:
    # Internal re-keyed copies (resource-allocations, demand) would only duplicate their
    # sources; checkpoints are saved worker state, not events anyone queries.
    inputs = [n for n in topics.by_name if n not in ("dead-letters", "resource-allocations", "demand", "checkpoints",
                                                      "billing-feed")]
    dlq = topics["dead-letters"]
    sink = EventLogSink(settings, store, inputs, dlq)

    dead_letter_log = DeadLetterLogSink(settings, store, ["dead-letters"], None)

    for name, each in (("event-log", sink), ("dead-letter-log", dead_letter_log)):
        app.task(_keep_running(name, each))


def _keep_running(name: str, sink: EventLogSink) -> Any:
    async def task() -> None:
        # A Faust app task that raises just ends, quietly: keep the sink running instead.
        # It resumes from its committed offsets, so a failed batch is read again.
        while True:
            try:
                await sink.run()
            except Exception:
                log.exception("the %s sink failed; restarting it in 1 s", name)
                await asyncio.sleep(1.0)

    task.__name__ = task.__qualname__ = name.replace("-", "_")
    return task
