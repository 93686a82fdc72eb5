"""The migration agent: plans moves on the live table and runs them, one durable step at a time.

It keeps the same capacity view the scheduler keeps (a ``Scheduler`` core fed the resources,
health, allocations and migrations topics; it never places anything) and:

* on a resource turning unhealthy or being removed, plans at once (evacuation);
* every ``consolidate_every_s``, plans consolidation and rebalance (keeping free the
  headroom the scheduler holds ahead of forecast demand), and a few seconds after
  a price falls (new terms, a partner's month to date making it cheaper at the margin, an
  unmet commitment, a resource repriced lower): cheaper capacity is what rebalance is for;
* runs each planned move through the executor with the resumable state machine
  (tessera.migration.machine): every step's event is published in its own Kafka transaction
  and committed before the next step begins; the transactional id fences an older agent.

On start it folds the migrations topic (``read_committed``) and resumes every unfinished
migration at its first step without an event, before planning anything new. A move is
never planned for an allocation that has one in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from aiokafka import TopicPartition

from tessera.agents.warmup import compiled_off_loop
from tessera.config import Settings
from tessera.migration.budget import DisruptionBudget
from tessera.migration.live import live_snapshot
from tessera.migration.machine import Executor, Migration, MigrationLog, drive, planned
from tessera.migration.planner import Plan, plan
from tessera.migration.snapshot import Snapshot
from tessera.pricing.agreements import Agreement
from tessera.pricing.book import PriceBook
from tessera.scheduler.core import ResourceState, Scheduler
from tessera.schemas import (
    AgreementUpdated,
    AllocationPlaced,
    AllocationReleased,
    BillingLine,
    Event,
    HealthChanged,
    HealthStatus,
    MigrationDone,
    MigrationFailed,
    MigrationPlanned,
    MigrationProgress,
    ResourceDiscovered,
    ResourceRemoved,
    ResourceUpdated,
    utc_now,
)
from tessera.schemas.topics import topic_spec
from tessera.streams import metrics
from tessera.streams.billing_feed import feed_records
from tessera.streams.checkpoint import load_checkpoint
from tessera.streams.edge import decode_record
from tessera.streams.produce import event_record, producer_for, send_batched
from tessera.streams.reader import groupless_consumer, read_span, seek_on
from tessera.streams.supervise import BrokerWatch, start_client, supervise

log = logging.getLogger(__name__)
AGENT = "migration"
STATE_TOPICS = ("agreements", "billing-lines", "resources", "health", "allocations", "migrations")
#: Read committed transactions only (their writers are transactional).
COMMITTED = ("billing-lines", "allocations", "migrations")
#: After a price change, wait this long for others to arrive before re-planning (s).
REPRICE_SETTLE_S = 5.0


@dataclass
class MigrationWorker:
    settings: Settings
    executor: Executor
    budget: DisruptionBudget = field(default_factory=DisruptionBudget)
    #: The placement domain whose scheduler's checkpoint it starts from.
    domain: str = "global"
    #: Plan consolidation and rebalance this often (s); 0 = only evacuations.
    consolidate_every_s: float = 300.0
    #: Seconds to wait after each committed step (a drill knob: lets fault tests kill the
    #: agent mid-migration; 0 in production).
    step_pause_s: float = 0.0
    #: Partner agreements to price by (the scheduler's and billing's); updates arrive on the
    #: agreements topic, each partner's month to date on the billing-lines topic.
    agreements: dict[str, Agreement] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.core = Scheduler(prices=PriceBook(dict(self.agreements)))
        self.reprice_at: float | None = None     # a price fell or terms changed: re-plan then
        self.log = MigrationLog()
        self.gone: dict[str, ResourceState] = {}      # removed resources, while work may still sit on them
        self.topic = {n: topic_spec(n).full_name(s.topic_prefix) for n in (*STATE_TOPICS, "forecasts", "dead-letters")}
        self.transactional_id = f"{s.app_id}-migration"
        self.plans: list[tuple[bool, Plan]] = []      # (a consolidation pass?, the plan), for reports
        self.urgent = asyncio.Event()
        self.positions: dict[tuple[str, int], int] = {}
        self.attempts = getattr(self, "attempts", 0)

    # -- state -------------------------------------------------------------------
    def _prices(self, provider: str | None) -> dict[str, Decimal]:
        return {rid: st.price for rid, st in self.core.resources.items() if provider is None or st.provider == provider}

    def _apply(self, e: Event) -> None:
        # Rebalance triggers: new terms, a partner's month to date moving its marginal price
        # (an unmet commitment makes it free), a resource repriced lower.
        watch = (None if isinstance(e, AgreementUpdated) else e.partner_id if isinstance(e, BillingLine)
                 else "" if isinstance(e, ResourceUpdated) else False)
        before = self._prices(watch or None) if watch is not False else None
        if isinstance(e, ResourceRemoved) and e.resource_id in self.core.resources:
            self.gone[e.resource_id] = self.core.resources[e.resource_id]
        if isinstance(e, (ResourceDiscovered, ResourceUpdated)):
            self.gone.pop(e.resource_id, None)
        if isinstance(e, (AllocationPlaced, AllocationReleased)):
            self.core.replay([e])        # the scheduler's own output: rebuilds what it holds
        else:
            self.core.apply(e)
        if isinstance(e, (MigrationPlanned, MigrationProgress, MigrationDone, MigrationFailed)):
            self.log.apply(e)
        if isinstance(e, ResourceRemoved) or (isinstance(e, HealthChanged) and e.status != HealthStatus.healthy):
            self.urgent.set()
        if before is not None:
            after = self._prices(watch or None)
            if any(after.get(rid, p) < p for rid, p in before.items()) or isinstance(e, AgreementUpdated):
                self.reprice_at = self.reprice_at or time.monotonic() + REPRICE_SETTLE_S

    async def recover(self) -> None:
        """Capacity and allocations from the scheduler's newest checkpoint when there is one
        (the inputs on from its positions: retention may have deleted the older records),
        else from the beginning; migrations always from the beginning (they are short-lived,
        and the log must see every unfinished one)."""
        restored = await load_checkpoint(self.settings, f"scheduler/{self.domain}", AGENT)
        start = restored.by_topic() if restored is not None else {}
        start.pop(self.topic["migrations"], None)
        if restored is not None:
            self.core = restored.state["core"]
            self.core.queue = type(self.core.queue)(self.core.batch_max, self.core.aging_s)   # not ours to place
            for agreement in self.agreements.values():
                self.core.prices.set_agreement(agreement)
        self.core.reprice(int(time.time() * 1_000_000))
        reads = await asyncio.gather(*(read_span(self.settings, self.topic[n], topic_spec(n).partitions,
                                                 start=start.get(self.topic[n]), committed_only=n in COMMITTED)
                                       for n in STATE_TOPICS))
        self.positions = {(self.topic[n], p): off for n, (_, ends) in zip(STATE_TOPICS, reads)
                          for p, off in ends.items()}
        for name, (records, _) in zip(STATE_TOPICS, reads):
            for r in records:
                d = decode_record(r, topic_spec(name), AGENT)
                if d.event is not None:
                    self._apply(d.event)
        log.info("migration agent recovered%s: %d resources, %d allocations, %d unfinished migrations",
                 f" from the scheduler's checkpoint {restored.checkpoint_id}" if restored else "",
                 len(self.core.resources), len(self.core.allocations), len(self.log.unfinished()))

    def forecast(self, now: datetime) -> tuple[tuple[datetime, float, float | None], ...]:
        """What a consolidation must leave free: the vCPU and GPUs the scheduler holds as
        headroom ahead of forecast demand (each protected tier's forecast quantile over the
        next intervals, less what it uses), as the simulator's planner does with its warm
        target. Where no GPU forecast covers every protected tier, GPU capacity is kept
        (None). (Summing the forecast arrivals over the horizon instead counted short-lived
        work as if it all ran at once: at the demo's quiet end it kept every partner VM.)"""
        gpus: dict[str, float] = {}
        for a in self.core.allocations.values():
            gpus[a.tier] = gpus.get(a.tier, 0.0) + a.demand[2] * sum(k for _, k in a.placements)
        vcpu, gpu = self.core.reservations.held_free(self.core.vcpu_in_use_by_tier(), gpus)
        return ((now, vcpu, gpu),)

    def snapshot(self, now: datetime) -> Snapshot:
        busy = {m.allocation_id for m in self.log.unfinished()}
        return live_snapshot(self.core, now, busy=busy, gone=self.gone, forecast=self.forecast(now))

    # -- acting ------------------------------------------------------------------
    async def _publish(self, producer, e: Event) -> None:
        async with producer.transaction():
            own = event_record(self.topic["migrations"], e)
            records = [own, *feed_records(self.settings.topic_prefix, e, original=own)]
            for f in await send_batched(producer, records):
                await f
        self._apply(e)
        if self.step_pause_s:
            await asyncio.sleep(self.step_pause_s)

    async def _run(self, producer, m: Migration) -> None:
        async def publish(e: Event) -> None:
            await self._publish(producer, e)

        # The state machine works on its own copy; the log follows the published events.
        done = await drive(copy.deepcopy(m), self.executor, publish)
        metrics.MIGRATIONS.labels(done.reason, done.status).inc()
        log.info("migration %s (%s %s -> %s): %s", m.migration_id, m.reason, m.source, m.target, done.status)

    def _billing_fields(self, allocation_id: str, source: str, target: str, replicas: int) -> dict:
        """What the target partner's billing shard needs to bill the move without the
        allocation's placement event (``tessera.streams.billing_feed``)."""
        a = self.core.allocations.get(allocation_id)
        st = self.core.resources.get(target)
        if a is None or st is None:
            return {}
        source_provider = next((p.provider for p in a.placement_events if p.resource_id == source), "")
        return dict(source_provider=source_provider, tenant=a.tenant, per_replica=a.per_replica,
                    target_instance_type=st.offer.instance_type if st.offer else "",
                    target_price_per_hour=self.core.placement_price(target, a.per_replica, replicas))

    async def plan_and_run(self, producer, consolidate: bool) -> Plan:
        budget = self.budget if consolidate else self.budget.evacuations_only()
        self.core.reprice(int(time.time() * 1_000_000))    # month to date and terms as of now
        t0 = time.perf_counter()
        snap = self.snapshot(utc_now())
        p = plan(snap, budget)
        log.info("%s plan over %d resources and %d allocations: %d moves, saving %s per hour (%.2f s)",
                 "consolidation" if consolidate else "evacuation", len(snap.resources), len(snap.allocations),
                 len(p.moves), p.savings_per_hour, time.perf_counter() - t0)
        for skip in p.skipped[:10]:         # why the candidates stayed (an operator's first question)
            log.info("  left alone: %s (%s: %s)", skip.resource_id, skip.reason, skip.detail)
        self.plans.append((consolidate, p))
        del self.plans[:-100]
        for u in p.unplaced:
            metrics.MIGRATION_STRANDED.labels(u.reason).inc(u.replicas)
            log.warning("cannot evacuate %s from %s: %s (%s)", u.allocation_id, u.resource_id, u.reason, u.detail)
        for mv in p.moves:
            n = sum(1 for m in self.log.migrations.values() if m.allocation_id == mv.allocation_id)
            mid = f"mig:{mv.allocation_id}:{n + 1}"
            target = self.core.resources.get(mv.to_resource)
            m = Migration(mid, mv.allocation_id, mv.from_resource, mv.to_resource,
                          target.provider if target else "", mv.replicas, mv.reason,
                          billing=self._billing_fields(mv.allocation_id, mv.from_resource, mv.to_resource,
                                                       mv.replicas))
            saving = p.savings_per_hour if mv is p.moves[0] else 0
            await self._publish(producer, planned(m, saving))
            await self._run(producer, m)
        return p

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, riding out broker faults (tessera.streams.supervise); a
        migration cut short resumes from its last published step, as after a crash."""
        await compiled_off_loop()           # before any client starts (tessera.agents.warmup says why)
        await supervise(AGENT, self._attempt, stop)

    async def _attempt(self, stop: asyncio.Event) -> None:
        if self.attempts:
            plans = self.plans
            self.__post_init__()        # a fresh start: state and the migration log from the topics
            self.plans = plans
        self.attempts += 1
        async with contextlib.AsyncExitStack() as stack:
            # Starting the transactional producer fences an older agent.
            producer = await start_client(stack, producer_for(self.settings, transactional_id=self.transactional_id,
                                                              linger_ms=0))
            metrics.PROBE.wait("rebuilding state from the scheduler's checkpoint and topics")
            await self.recover()
            tail = await start_client(stack, groupless_consumer(self.settings))
            # Forecasts are tailed, not recovered: only the latest per tier matters.
            tps = [TopicPartition(self.topic[n], p) for n in (*STATE_TOPICS, "forecasts") if n != "migrations"
                   for p in range(topic_spec(n).partitions)]
            tail.assign(tps)
            await seek_on(tail, tps, self.positions)
            for m in self.log.unfinished():
                log.info("resuming migration %s at %s", m.migration_id, m.next_step or "done")
                await self._run(producer, m)
            next_consolidation = time.monotonic() + self.consolidate_every_s
            self.urgent.set()   # look for stranded work once at start
            metrics.PROBE.ready()
            watch = BrokerWatch(producer.client)
            while not stop.is_set():
                await watch.tick()
                for recs in (await tail.getmany(timeout_ms=200, max_records=10_000)).values():
                    for r in recs:
                        name = r.topic.split(".")[-2]
                        d = decode_record(r, topic_spec(name), AGENT)
                        if d.event is not None:
                            self._apply(d.event)
                now = time.monotonic()
                repriced = self.reprice_at is not None and now >= self.reprice_at
                consolidate = (self.consolidate_every_s > 0 and now >= next_consolidation) or repriced
                if self.urgent.is_set() or consolidate:
                    self.urgent.clear()
                    self.reprice_at = None
                    await self.plan_and_run(producer, consolidate)
                    if consolidate:
                        next_consolidation = time.monotonic() + self.consolidate_every_s
