"""The scheduler worker: requests in, allocation events out, one writer per domain.

Why a plain aiokafka loop and not a Faust agent: the scheduler must (1) commit a request's
input offset only once that request is decided (a request waiting in the queue must be
redelivered after a crash), and (2) publish its decisions and those offsets atomically.
It does both with a Kafka transaction per batch, and its ``transactional_id`` (one per
placement domain) fences any older instance: if two schedulers for one domain run, the
older one can no longer write. Exactly one writer decides that capacity is taken.

On start it rebuilds its state: resources and health verdicts from their topics (read in
full, then tailed), decisions and capacity in use from its own committed output on the
allocations topic (``read_committed``). Redelivered requests that were already decided
are recognized by request id and skipped, so nothing is placed twice or lost.

Forecasts (``forecast`` events with ``tier=`` and ``dim=vcpu`` in the series) set the
headroom held back for higher tiers (tessera.scheduler.reservation), and when the vCPU
they forecast to arrive outgrows the free capacity in service, the worker publishes a
``provisioning.hint`` naming the cheapest resources to bring up ahead (in the same
transaction as its decisions; tessera.scheduler.provisioning). Hard usage-limit
alerts from the billing agent stop placement on that partner until its billing period
ends (read in full at start, then tailed).

Migrations (``migrations.v1``, read in full at start after the allocations, then tailed)
move capacity: the target is held from ``reserve_target``, the source freed at release.

Releases: an allocation is released when its ``expected_duration_seconds`` has elapsed, or
when an ``allocation.released`` event for it appears on the allocations topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tessera.agents.warmup import compiled_off_loop
from tessera.config import Settings
from tessera.pricing.agreements import Agreement
from tessera.pricing.book import PriceBook
from tessera.scheduler.core import Scheduler
from tessera.scheduler.domains import DomainError, DomainMap, resource_pool, single
from tessera.scheduler.tuning import QuantileTuner
from tessera.schemas import (
    TIERS,
    AgreementUpdated,
    AllocationPlaced,
    AllocationRejected,
    AllocationReleased,
    BillingLine,
    Checkpoint,
    Event,
    Forecast,
    HealthChanged,
    MigrationDone,
    MigrationFailed,
    MigrationProgress,
    RejectReason,
    ReleaseRequested,
    ResourceDiscovered,
    ResourceRemoved,
    ResourceUpdated,
    UsageLimitAlert,
    WorkloadRequest,
    utc_now,
)
from tessera.schemas.identity import REMEMBERED_IDS
from tessera.schemas.topics import topic_spec
from tessera.streams import collector, metrics
from tessera.streams.billing_feed import feed_records, tick_records
from tessera.streams.checkpoint import checkpoint_events, load_checkpoint
from tessera.streams.edge import dead_letter, decode_record
from tessera.streams.produce import event_record, producer_for, send_batched
from tessera.streams.reader import groupless_consumer, read_span, seek_on
from tessera.streams.security import aiokafka_security_kwargs
from tessera.streams.supervise import BrokerWatch, start_client, supervise

log = logging.getLogger(__name__)
AGENT = "scheduler"
#: How often at most the scheduler sends the billing feed's clock ticks (6 small records).
TICK_EVERY_S = 0.5
#: Topics the scheduler's state comes from: read at start (from the checkpoint's positions),
#: then tailed. (Forecasts are tailed from the moment it starts: only the newest matter.)
STATE_TOPICS = ("agreements", "billing-lines", "resources", "health", "alerts", "allocations", "migrations")


def _allocation_id(value: bytes) -> str | None:
    try:
        return orjson.loads(value).get("allocation_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


@dataclass
class SchedulerWorker:
    settings: Settings
    domain: str = "global"
    batch_max: int = 1000
    batch_wait_ms: int = 20
    aging_s: float = 60.0
    #: Partner agreements to price by (tessera.pricing); updates arrive on the agreements topic.
    agreements: dict[str, Agreement] = field(default_factory=dict)
    #: The placement domains (tessera.scheduler.domains); None: this scheduler's domain
    #: alone, owning every resource and placing every request.
    domains: DomainMap | None = None
    #: How often the tuner closes a window and chooses the headroom quantile again (s);
    #: 0 (the default) leaves the newsvendor levels alone (tessera.scheduler.tuning): a
    #: bandit explores, so turning it on is the operator's choice (`--tune-every`).
    tuning_interval_s: float = 0.0

    def __post_init__(self) -> None:
        s = self.settings
        if self.domains is None:
            self.domains = single(self.domain)
        if self.domain not in self.domains.names:
            raise DomainError(f"domain {self.domain!r} is not in the domains file ({', '.join(self.domains.names)})")
        self.group = f"{s.app_id}-scheduler-{self.domain}"
        self.core = Scheduler(batch_max=self.batch_max, aging_s=self.aging_s,
                              prices=PriceBook(dict(self.agreements)),
                              tuner=QuantileTuner() if self.tuning_interval_s > 0 else None)
        self.next_tuning = 0.0
        # The billing feed's clock: the latest allocation event time not yet ticked, and
        # when ticks may go next (at most every TICK_EVERY_S, a trailing one when idle).
        self.tick_pending: datetime | None = None
        self.tick_next = 0.0
        self.topic = {n: topic_spec(n).full_name(s.topic_prefix)
                      for n in ("requests", "resources", "health", "allocations", "forecasts", "alerts",
                                "provisioning", "dead-letters", "agreements", "billing-lines", "tuning",
                                "migrations", "checkpoints")}
        self.pending_offsets: dict[str, tuple[TopicPartition, int]] = {}  # request id -> its input offset
        # (wall time to release, allocation id), a min-heap: a batch looks at the due ones
        # only (a scan of every live allocation per batch cost ~4 % of the CPU at 3,000/s).
        # An allocation released otherwise meanwhile is skipped then: release is idempotent.
        self.release_at: list[tuple[float, str]] = []
        self.batches = 0
        self.owner = f"scheduler/{self.domain}"
        self.checkpoint_id = 0
        self.next_checkpoint = 0.0
        #: Next offset to read per (topic, partition) of the state topics: what a checkpoint includes.
        self.positions: dict[tuple[str, int], int] = {}
        self.arrived: dict[str, float] = {}     # request id -> when it reached this scheduler
        self.attempts = getattr(self, "attempts", 0)
        self.queue_counted_at = 0.0

    # -- recovery ---------------------------------------------------------------
    async def _read_span(self, name: str, start: dict[int, int] | None,
                         committed_only: bool = False) -> tuple[list[Event], dict[int, int]]:
        records, ends = await read_span(self.settings, self.topic[name], topic_spec(name).partitions,
                                        start=start, committed_only=committed_only)
        decoded = (decode_record(r, topic_spec(name), AGENT) for r in records)
        return [d.event for d in decoded if d.event is not None], ends

    async def recover(self) -> None:
        """State from the newest checkpoint (if any), then every state topic from the
        checkpoint's positions (or from the beginning) to its end; the tail goes on from there."""
        restored = await load_checkpoint(self.settings, self.owner, AGENT)
        start = restored.by_topic() if restored is not None else {}
        if restored is not None:
            saved = restored.state
            self.core, self.release_at, self.checkpoint_id = saved["core"], saved["release_at"], restored.checkpoint_id
            for agreement in self.agreements.values():      # the configured terms win over saved ones
                self.core.prices.set_agreement(agreement)
        # Prices first (terms, then each partner's month to date), so resources are priced once.
        self.core.reprice(int(time.time() * 1_000_000))
        # The topics are read side by side (each read opens its own consumer); applied in order.
        committed = {"billing-lines", "alerts", "allocations", "migrations", "tuning"}
        tuning = self.core.tuner is not None and restored is None   # a restored tuner holds its past
        names = [*STATE_TOPICS, *(["tuning"] if tuning else [])]
        reads = await asyncio.gather(*(self._read_span(n, start.get(self.topic[n]), n in committed) for n in names))
        got = dict(zip(names, reads))
        self.positions = {(self.topic[n], p): off for n in STATE_TOPICS for p, off in got[n][1].items()}
        if tuning:
            self.core.tuner.replay(sorted(got["tuning"][0], key=lambda e: e.event_time))
        for name in ("agreements", "billing-lines", "resources", "health", "alerts"):
            for e in got[name][0]:
                self._apply(e)
        own = got["allocations"][0]
        self.core.replay(own)             # idempotent: what the checkpoint holds is skipped
        for e in got["migrations"][0]:    # after the allocations they move
            self._apply(e)
        # Release timers of live allocations come back from their placed events.
        for e in own:
            if isinstance(e, AllocationPlaced) and e.expires_at is not None and e.allocation_id in self.core.allocations:
                self.release_at.append((e.expires_at.timestamp(), e.allocation_id))
        heapq.heapify(self.release_at)
        self.next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        log.info("scheduler %s recovered%s: %d resources, %d live allocations, %d decided requests, "
                 "%d events read since", self.domain,
                 f" from checkpoint {restored.checkpoint_id} ({restored.size_bytes} bytes)" if restored else "",
                 len(self.core.resources), len(self.core.allocations), len(self.core.decided),
                 sum(len(events) for events, _ in reads))

    def checkpoint(self) -> list[Checkpoint]:
        """The worker's state now and the positions it includes, as checkpoint events."""
        self.core.decided.trim(REMEMBERED_IDS)
        self.core.request_events.trim(REMEMBERED_IDS)
        self.checkpoint_id += 1
        self.next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        metrics.CHECKPOINTS.labels(AGENT).inc()
        return checkpoint_events(self.owner, self.checkpoint_id, {"core": self.core, "release_at": self.release_at},
                                 self.positions)

    # -- the loop ---------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, riding out broker faults (tessera.streams.supervise)."""
        await compiled_off_loop()           # before any client starts (tessera.agents.warmup says why)
        await supervise(AGENT, self._attempt, stop)

    async def _attempt(self, stop: asyncio.Event) -> None:
        if self.attempts:
            self.__post_init__()        # a fresh start: the state comes back from checkpoint and topics
        self.attempts += 1
        s = self.settings
        sec = aiokafka_security_kwargs(s)
        async with contextlib.AsyncExitStack() as stack:
            # Starting the transactional producer fences any older scheduler of this domain.
            producer = await start_client(stack, producer_for(s, transactional_id=self.group, linger_ms=2))
            metrics.PROBE.wait("rebuilding state from the checkpoint and topics")
            await self.recover()
            collector.settle_after_recovery()
            requests = await start_client(stack, AIOKafkaConsumer(
                self.topic["requests"], bootstrap_servers=s.bootstrap_servers, group_id=self.group,
                enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed", **sec))
            tail = await start_client(stack, groupless_consumer(s))
            tail_tps = [TopicPartition(self.topic[n], p) for n in (*STATE_TOPICS, "forecasts")
                        for p in range(topic_spec(n).partitions)]
            tail.assign(tail_tps)
            await seek_on(tail, tail_tps, self.positions)     # forecasts (not recovered): from now
            metrics.PROBE.ready()
            watch = BrokerWatch(producer.client)
            while not stop.is_set():
                await watch.tick()
                await self._tail(tail)
                batch = await requests.getmany(timeout_ms=self.batch_wait_ms, max_records=self.batch_max)
                await self._step(producer, requests, [r for recs in batch.values() for r in recs])
            if self.tick_pending is not None:
                # Stopping: billing's shards get the time of the last allocation events now,
                # not at the next start.
                self.tick_next = 0.0
                await self._commit(producer, [], [])

    def _apply(self, e: Event) -> None:
        if isinstance(e, (ResourceDiscovered, ResourceUpdated)):
            sp = e.spec
            if self.domains.owner(sp.region, sp.provider, resource_pool(sp.tags)) != self.domain:
                if e.resource_id in self.core.resources:     # moved to another domain: no longer ours
                    self.core.apply(ResourceRemoved(resource_id=e.resource_id, provider=sp.provider,
                                                    event_time=e.event_time))
                return
        refused = self.core.apply(e)
        if refused:
            metrics.RESOURCE_EVENTS_REFUSED.labels(AGENT).inc()
            log.warning("%s %s: %s", e.event_type, getattr(e, "resource_id", e.event_id), refused)

    async def _tail(self, tail: AIOKafkaConsumer) -> None:
        allocations = self.topic["allocations"]
        for recs in (await tail.getmany(timeout_ms=0, max_records=10_000)).values():
            for rec in recs:
                self.positions[(rec.topic, rec.partition)] = rec.offset + 1
                # Of the allocations topic only releases of live allocations matter; nearly all
                # of it is this scheduler's own output (placements, and releases it already
                # applied), not worth validating again.
                if rec.topic == allocations and (b'"allocation.released"' not in rec.value
                                                 or _allocation_id(rec.value) not in self.core.allocations):
                    continue
                name = rec.topic.split(".")[-2]
                d = decode_record(rec, topic_spec(name), AGENT)
                e = d.event
                if isinstance(e, (ResourceDiscovered, ResourceUpdated, ResourceRemoved, HealthChanged, Forecast,
                                  UsageLimitAlert, AgreementUpdated, BillingLine, MigrationProgress, MigrationDone,
                                  MigrationFailed)):
                    self._apply(e)
                elif isinstance(e, AllocationReleased) and e.allocation_id in self.core.allocations:
                    self.core.release(e.allocation_id, e.reason, time.time())

    async def _step(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, records: list[Any]) -> None:
        now, now_dt = time.time(), utc_now()
        out: list[tuple[str, Event]] = []
        for rec in records:
            d = decode_record(rec, topic_spec("requests"), AGENT)
            if d.dead_letter is not None:
                metrics.DEAD_LETTERS.labels(AGENT, rec.topic).inc()
                out.append(("dead-letters", d.dead_letter))
                continue
            metrics.child(metrics.EVENTS_CONSUMED, AGENT, rec.topic).inc()
            if isinstance(d.event, ReleaseRequested):
                out += [("allocations", e) for e in self.core.release_requested(d.event.request_id, d.event.reason)]
                continue
            req: WorkloadRequest = d.event  # type: ignore[assignment]
            home = self.domains.route(req.request_id, req.allowed_regions, req.allowed_providers, req.pool)
            if home is None and self.domain == self.domains.rejecter:
                out += [("allocations", e) for e in self.core.reject(
                    req, RejectReason.no_domain, "no placement domain holds resources this request may use "
                    f"(pool {req.pool!r}, regions {req.allowed_regions or 'any'}, providers "
                    f"{req.allowed_providers or 'any'}); domains: {', '.join(self.domains.names)}")]
                continue
            if home != self.domain:
                continue       # another domain's scheduler places it (the same function, the same file)
            conflict = self.core.identity_conflict(req)
            if conflict:
                metrics.DEAD_LETTERS.labels(AGENT, rec.topic).inc()
                out.append(("dead-letters", dead_letter(conflict, topic=rec.topic, partition=rec.partition,
                                                        offset=rec.offset, key=rec.key, value=rec.value,
                                                        consumer=AGENT, field="event_id")))
                continue
            self.arrived.setdefault(req.request_id, now)
            tp = TopicPartition(rec.topic, rec.partition)
            decided = self.core.submit(req, now, now_dt)
            if req.request_id in self.core.queue:
                self.pending_offsets.setdefault(req.request_id, (tp, rec.offset))
            out += [("allocations", e) for e in decided]
        while self.release_at and self.release_at[0][0] <= now:
            _, alloc_id = heapq.heappop(self.release_at)
            out += [("allocations", e) for e in self.core.release(alloc_id, "expected duration elapsed", now)]
        if self.tuning_interval_s > 0 and now >= self.next_tuning:
            self.next_tuning = now + self.tuning_interval_s
            decision = self.core.tuning_step(now, now_dt)
            if decision is not None:
                out.append(("tuning", decision))
        out += [("provisioning", h) for h in self.core.provisioning_hints(now_dt)]
        if len(self.core.queue):
            self.batches += 1
            metrics.SCHEDULER_BATCH_SIZE.observe(min(len(self.core.queue), self.core.batch_max))
            t0 = time.perf_counter()
            decided = self.core.run_batch(now, now_dt, batch_id=f"{self.domain}-{self.batches}")
            metrics.SCHEDULER_BATCH_SECONDS.observe(time.perf_counter() - t0)
            for e in decided:
                if isinstance(e, AllocationPlaced) and e.expires_at is not None:
                    heapq.heappush(self.release_at, (e.expires_at.timestamp(), e.allocation_id))
                out.append(("allocations", e))
        for name, e in out:
            if name == "allocations" and e.request_id not in self.core.queue:
                self.pending_offsets.pop(e.request_id, None)
        self._observe(out, now)
        if time.monotonic() >= self.next_checkpoint:
            # In the transaction with this batch's decisions: the saved state includes them.
            out += [("checkpoints", e) for e in self.checkpoint()]
        if not out and not records and not self._tick_due():
            return
        await self._commit(producer, records, out)

    def _tick_due(self) -> bool:
        return self.tick_pending is not None and time.monotonic() >= self.tick_next

    def _observe(self, out: list[tuple[str, Event]], now: float) -> None:
        """Decision metrics: latency from arrival, outcome and reason code; the queue by tier
        (counted at most once a second: it is a scan of the queue)."""
        for name, e in out:
            if isinstance(e, (AllocationPlaced, AllocationRejected)):
                arrived = self.arrived.pop(e.request_id, now)
                code = "placed" if isinstance(e, AllocationPlaced) else e.code.value
                metrics.child(metrics.SCHEDULER_DECISIONS, "placed" if code == "placed" else "rejected", code).inc()
                metrics.child(metrics.SCHEDULER_DECISION_SECONDS, e.sla_tier.value).observe(now - arrived)
        if now - self.queue_counted_at >= 1.0:
            self.queue_counted_at = now
            depth = Counter(q.request.sla_tier.value for q in self.core.queue)
            for tier in TIERS:
                metrics.child(metrics.SCHEDULER_QUEUE_DEPTH, tier).set(depth.get(tier, 0))
            metrics.SCHEDULER_LIVE_ALLOCATIONS.set(len(self.core.allocations))
            if len(self.arrived) > 2 * (len(self.core.queue) + 1000):   # withdrawn / expired requests
                self.arrived = {rid: t for rid, t in self.arrived.items() if rid in self.core.queue}

    async def _commit(self, producer: AIOKafkaProducer, records: list[Any], out: list[tuple[str, Event]]) -> None:
        """Publish the batch's decisions and advance input offsets, atomically."""
        # Offsets: past every record read, except not past a request still waiting.
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        for tp_, off in self.pending_offsets.values():
            if tp_ in offsets:
                offsets[tp_] = min(offsets[tp_], off)
        async with producer.transaction():
            records_out = []
            for name, e in out:
                records_out.append(event_record(self.topic[name], e))
                # Placements and releases also go to billing's feed, keyed by partner, in this transaction.
                if isinstance(e, (AllocationPlaced, AllocationReleased)):
                    records_out += feed_records(self.settings.topic_prefix, e, original=records_out[-1])
                    if self.tick_pending is None or e.event_time > self.tick_pending:
                        self.tick_pending = e.event_time
            if self._tick_due():
                # The feed's clock, to every shard: their month to date runs to the same time.
                records_out += tick_records(self.settings.topic_prefix, self.tick_pending)
                self.tick_pending, self.tick_next = None, time.monotonic() + TICK_EVERY_S
            futures = await send_batched(producer, records_out)
            # Every send is acknowledged before the offsets join the transaction: a send that
            # failed (a record too large, a broker error) raises here, the transaction aborts
            # and the batch is read again, instead of its requests being consumed unanswered.
            for f in futures:
                await f
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group)
