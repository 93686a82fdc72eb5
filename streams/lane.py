"""A batch lane beside a Faust app: a plain aiokafka consumer that reads one topic in
large batches, for the partitions the app owns of a co-partitioned topic.

Faust delivers events one at a time through its stream machinery: about 4,500 events/s
on this machine for an agent that does nothing, far below what the broker delivers
(``load/bench_health_ingest.py``). A topic whose events are small and many (health
samples) and that updates a Faust table co-partitioned with another topic can be read
here instead, ``getmany`` at a time, while the table's ownership stays Faust's:

* the lane reads partition *p* of ``source`` exactly while the app owns partition *p* of
  ``follow`` (the table's topic), so the worker that owns a table row is the one that
  updates it;
* on a rebalance the app's ``on_partitions_revoked`` signal waits for the batch in flight
  and commits the lane's offsets before Faust hands the partitions on; the lane resumes
  on ``on_partitions_assigned`` once table recovery is over;
* offsets are committed in a group of the lane's own (``group_id``, no membership: the
  app's group decides the assignment) after each batch is handled: at least once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from tessera.config import Settings

from .security import aiokafka_security_kwargs

log = logging.getLogger(__name__)
Handler = Callable[[Sequence[Any]], Awaitable[None]]


class PartitionLane:
    def __init__(self, settings: Settings, *, source: str, follow: str, group_id: str, handle: Handler,
                 max_records: int = 5000, poll_ms: int = 100) -> None:
        self.settings, self.source, self.follow, self.group_id = settings, source, follow, group_id
        self.handle, self.max_records, self.poll_ms = handle, max_records, poll_ms
        self.owned: frozenset[int] = frozenset()
        self._reading: frozenset[int] | None = None     # what the consumer is assigned now
        self._active = asyncio.Event()                    # clear while a rebalance is under way
        self._batch = asyncio.Lock()                      # held while a batch is read and handled
        self._consumer: AIOKafkaConsumer | None = None
        self.handled = 0

    def attach(self, app: Any) -> None:
        """Follow ``app``'s assignment (connects to its rebalance signals)."""
        self._app = app
        app.on_partitions_revoked.connect(self._revoked)
        app.on_partitions_assigned.connect(self._assigned)

    async def _revoked(self, sender: Any = None, revoked: Any = None, **_: Any) -> None:
        self._active.clear()
        async with self._batch:      # the batch in flight finishes and its offsets are committed
            await self._commit()

    async def _assigned(self, sender: Any = None, assigned: Any = None, **_: Any) -> None:
        self.owned = frozenset(tp.partition for tp in (assigned or ()) if tp.topic == self.follow)
        self._active.set()

    async def _commit(self) -> None:
        if self._consumer is not None and self._reading:
            try:
                await self._consumer.commit()
            except KafkaError as exc:       # the next batch commits again; at least once
                log.warning("lane %s: commit failed: %s", self.source, exc)

    async def run(self) -> None:
        """Read and handle batches until cancelled."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.max_records,
            **aiokafka_security_kwargs(self.settings))
        await self._consumer.start()
        try:
            while True:
                await self._active.wait()
                if getattr(self._app, "in_recovery", False):      # table rows not rebuilt yet
                    await asyncio.sleep(0.05)
                    continue
                async with self._batch:
                    if not self._active.is_set():
                        continue
                    if self._reading != self.owned:
                        self._consumer.assign([TopicPartition(self.source, p) for p in sorted(self.owned)])
                        self._reading = self.owned
                    if not self._reading:
                        self._active.clear()       # nothing owned: wait for the next assignment
                        continue
                    got = await self._consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
                    records = [r for part in got.values() for r in part]
                    if records:
                        await self.handle(records)
                        self.handled += len(records)
                        await self._commit()
        finally:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
