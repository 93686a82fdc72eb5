"""A Python client for producers: build workload requests, submit them, read their
outcomes, release them.

>>> req = TesseraClient.request("job-7", tenant="acme", tier="gold", replicas=2, vcpu=4, memory_gib=16)
>>> req.per_replica.memory_bytes == 16 << 30, req.sla_tier.value
(True, 'gold')

Usage (the settings' broker address and security apply, as for every Tessera client)::

    async with TesseraClient() as tessera:
        request_id = await tessera.submit(TesseraClient.request("job-7", tenant="acme", vcpu=4))
        outcome = await tessera.outcome(request_id)          # AllocationPlaced or AllocationRejected
        ...
        await tessera.release(request_id)                    # work with no expected duration ends

The client keeps one producer for its life. Outcomes are read from the allocations topic
with ``read_committed`` (a placement the scheduler rolled back never reaches it), from the
moment the client starts; ``outcome()`` for an older request reads that request's
partition from the start. Producers in other languages: docs/producers.md.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any, AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from tessera.config import Settings, load_settings
from tessera.schemas import (
    GIB,
    AllocationPlaced,
    AllocationRejected,
    Capacity,
    Event,
    ReleaseRequested,
    SchemaError,
    SlaTier,
    WorkloadRequest,
    decode,
    topic_spec,
)
from tessera.streams.partitioner import Murmur2Partitioner
from tessera.streams.produce import producer_for, send_events
from tessera.streams.reader import groupless_consumer, read_to_end

Outcome = AllocationPlaced | AllocationRejected


class TesseraClient:
    """Submit, follow and release workload requests (async context manager)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._producer: Any = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task | None = None
        self._outcomes: dict[str, Outcome] = {}
        self._waiters: dict[str, asyncio.Future] = {}
        self._subscribers: list[asyncio.Queue] = []
        self._allocations = topic_spec("allocations").full_name(self.settings.topic_prefix)

    # -- building requests ----------------------------------------------------
    @staticmethod
    def request(request_id: str, *, tenant: str, tier: str | SlaTier = "silver", replicas: int = 1,
                vcpu: float = 0.0, memory_gib: float = 0.0, gpu: int = 0, storage_gib: float = 0.0,
                tags: Iterable[str] = (), regions: Iterable[str] = (), providers: Iterable[str] = (),
                spread: int = 1, deadline: datetime | None = None, duration_s: float | None = None,
                max_price_per_hour: Decimal | str | None = None, pool: str = "default") -> WorkloadRequest:
        """A validated ``workload.request`` in the units people use (GiB, not bytes)."""
        return WorkloadRequest(
            request_id=request_id, tenant=tenant, sla_tier=SlaTier(tier), replicas=replicas,
            per_replica=Capacity(vcpu=vcpu, memory_bytes=int(memory_gib * GIB), gpu=gpu,
                                 storage_bytes=int(storage_gib * GIB)),
            required_tags=list(tags), allowed_regions=list(regions), allowed_providers=list(providers),
            spread_min=spread, deadline=deadline, expected_duration_seconds=duration_s,
            max_price_per_hour=Decimal(max_price_per_hour) if max_price_per_hour is not None else None, pool=pool)

    # -- lifecycle ------------------------------------------------------------
    async def __aenter__(self) -> "TesseraClient":
        self._producer = producer_for(self.settings)
        await self._producer.start()
        self._consumer = groupless_consumer(self.settings)
        await self._consumer.start()
        parts = [TopicPartition(self._allocations, p) for p in range(topic_spec("allocations").partitions)]
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:                      # resolve the end offsets now, before any submit
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    # -- the API --------------------------------------------------------------
    async def submit(self, request: WorkloadRequest) -> str:
        """Publish the request (keyed by its id); returns its id once the broker has it."""
        await send_events(self._producer, self.settings, "requests", [request])
        return request.request_id

    async def release(self, request_id: str, reason: str = "released by its producer") -> None:
        """End the request's work: the scheduler releases its allocation (an
        ``allocation.released`` follows), or withdraws it if it still waits."""
        await send_events(self._producer, self.settings, "requests",
                          [ReleaseRequested(request_id=request_id, reason=reason)])

    async def outcome(self, request_id: str, timeout: float = 60.0) -> Outcome:
        """The request's final outcome: placed or rejected (``asyncio.TimeoutError`` if none
        comes within ``timeout``)."""
        if request_id in self._outcomes:
            return self._outcomes[request_id]
        waiter = self._waiters.setdefault(request_id, asyncio.get_running_loop().create_future())
        earlier = asyncio.create_task(self._look_back(request_id))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        finally:
            earlier.cancel()

    async def outcomes(self) -> AsyncIterator[Event]:
        """Every allocation event from now on (placed, queued, rejected, released)."""
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    # -- reading --------------------------------------------------------------
    def _seen(self, event: Event, *, live: bool = True) -> None:
        if isinstance(event, (AllocationPlaced, AllocationRejected)):
            self._outcomes.setdefault(event.request_id, event)
            waiter = self._waiters.pop(event.request_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        if live:
            for queue in self._subscribers:
                queue.put_nowait(event)

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    try:
                        event = decode(rec.value)
                    except SchemaError:
                        continue        # not an allocation event (the scheduler's consumers dead-letter it)
                    self._seen(event)

    async def _look_back(self, request_id: str) -> None:
        """An outcome from before the client started: read the request's partition (its key
        decides it) from the start."""
        parts = list(range(topic_spec("allocations").partitions))
        partition = Murmur2Partitioner()(request_id.encode(), parts, parts)
        key = request_id.encode()
        for rec in await read_to_end(self.settings, self._allocations, [partition], committed_only=True):
            if rec.key != key:
                continue
            try:
                event = decode(rec.value)
            except SchemaError:
                continue
            if isinstance(event, (AllocationPlaced, AllocationRejected)):
                self._seen(event, live=False)
                return
