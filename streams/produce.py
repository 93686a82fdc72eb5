"""Publish events to Kafka with the right key, validated first (used by the workers, the CLI and the demo)."""

from __future__ import annotations

import contextlib
import sys
from typing import AsyncIterator, BinaryIO, Iterable

import aiokafka.producer.sender as aiokafka_sender
from aiokafka import AIOKafkaProducer

from tessera.config import Settings
from tessera.schemas import Event, SchemaError, decode, encode
from tessera.schemas.topics import topic_spec
from tessera.streams import cloudevents
from tessera.streams.partitioner import Murmur2Partitioner
from tessera.streams.security import aiokafka_security_kwargs

#: After a commit the broker answers CONCURRENT_TRANSACTIONS to the next transaction until
#: the previous one's markers are written, and aiokafka retries after a fixed 20 ms. Back to
#: back transactions (the scheduler's steady state) paid it every time: p50 31 ms per
#: transaction, 12 ms with a 2 ms retry.
TXN_RETRY_S = 0.002


def _retry_concurrent_transactions_sooner() -> None:
    # aiokafka reads this module constant for every transactional producer in the process;
    # there is no per-producer option. Every Tessera transactional producer wants the short
    # retry, so it is set here, where such producers are made, and nowhere else.
    aiokafka_sender.BACKOFF_OVERRIDE = TXN_RETRY_S


def producer_for(settings: Settings, **kw) -> AIOKafkaProducer:
    options = dict(bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5,
                   partitioner=Murmur2Partitioner())
    options.update(aiokafka_security_kwargs(settings))
    options.update(kw)
    return AIOKafkaProducer(**options)


@contextlib.asynccontextmanager
async def started_producer(settings: Settings, **kw) -> AsyncIterator[AIOKafkaProducer]:
    """``producer_for(settings, **kw)``, started, and stopped on exit."""
    producer = producer_for(settings, **kw)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def send_events(producer: AIOKafkaProducer, settings: Settings, topic: str, events: Iterable[Event]) -> int:
    """Send events keyed per their contract; returns once all are acknowledged by the broker."""
    spec = topic_spec(topic)
    name = spec.full_name(settings.topic_prefix)
    futures = []
    for e in events:
        if e.event_type not in spec.event_types:
            raise ValueError(f"{e.event_type!r} does not belong on topic {topic!r}")
        futures.append(await producer.send(name, encode(e), key=e.key(), headers=cloudevents.headers(e, name)))
    for f in futures:
        await f
    return len(futures)


def event_record(topic: str, event: Event, key: bytes | None = None) -> tuple[str, bytes | None, bytes, list]:
    """``(topic, key, value, headers)`` for ``send_batched``: the event encoded, keyed per its
    contract unless ``key`` says otherwise, with its CloudEvents headers."""
    return topic, event.key() if key is None else key, encode(event), cloudevents.headers(event, topic)


async def publish(settings: Settings, topic: str, events: Iterable[Event]) -> int:
    """Send events with a producer of their own, for one-off publishing; returns once the
    broker has them all."""
    async with started_producer(settings) as producer:
        return await send_events(producer, settings, topic, events)


async def send_batched(producer: AIOKafkaProducer, records: Iterable[tuple[str, bytes | None, bytes]]) -> list:
    """Send ``(topic, key, value)`` records as one record batch per partition.

    Same partitions as ``producer.send`` (the murmur2 partitioner over the topic's
    partitions) and the same order within each partition, for about half the client CPU:
    ``send`` pays a metadata check, a partition lookup and a future per record
    (``python -m load.bench_produce``). Inside a transaction the commit flushes the
    batches; outside one, await the returned futures (one per batch) for delivery.
    """
    choose = Murmur2Partitioner()
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], object] = {}
    futures = []
    for topic, key, value, *rest in records:
        headers = rest[0] if rest else []
        parts = partitions.get(topic)
        if parts is None:
            parts = partitions[topic] = sorted(await producer.partitions_for(topic))
        tp = (topic, choose(key, parts, parts))
        batch = open_batches.get(tp)
        if batch is None:
            batch = open_batches[tp] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:   # full: send, start another
            futures.append(await producer.send_batch(batch, topic, partition=tp[1]))
            batch = open_batches[tp] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in an empty batch; "
                                 "raise the producer's max_batch_size")
    for (topic, partition), batch in open_batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def send_raw(producer: AIOKafkaProducer, settings: Settings, topic: str, payloads: Iterable[bytes],
                   key: bytes | None = None) -> int:
    name = topic_spec(topic).full_name(settings.topic_prefix)
    futures = [await producer.send(name, p, key=key) for p in payloads]
    for f in futures:
        await f
    return len(futures)


async def produce_lines(settings: Settings, topic: str, stream: BinaryIO | Iterable, validate: bool = True
                        ) -> tuple[int, int]:
    """Publish one JSON event per line. Invalid lines are reported on stderr and skipped."""
    spec = topic_spec(topic)
    good: list[Event] = []
    raw: list[bytes] = []
    rejected = 0
    for lineno, line in enumerate(stream, 1):
        line = line.encode() if isinstance(line, str) else line
        if not line.strip():
            continue
        if not validate:
            raw.append(line.strip())
            continue
        try:
            good.append(decode(line, allowed=spec.event_types))
        except SchemaError as exc:
            rejected += 1
            print(f"line {lineno}: {exc}", file=sys.stderr)
    async with started_producer(settings) as producer:
        sent = await send_events(producer, settings, topic, good) + await send_raw(producer, settings, topic, raw)
    return sent, rejected
