"""The billing agent: allocations, migrations and usage samples in; month-to-date billing lines
and limit alerts out. Several run side by side, sharing partners through a consumer group.

Input: the billing feed (``tessera.streams.billing_feed``), the scheduler's and the migration
agent's allocation and migration events re-keyed by partner, read with ``read_committed``
(they are written in Kafka transactions; an aborted placement is never billed). Its
partitions are *shards* of partners; the agents' consumer group gives each shard to one
agent, which keeps the shard's own state (a ``BillingState`` billing only that shard's
partners), checkpoint (``billing/<partition>`` on the checkpoints topic) and transactional
producer (``<app>-billing-<partition>``: a new owner fences the old one, so a shard never has
two writers). Usage samples (keyed by resource: a partner billing on measured use) and
agreements (``agreement.updated``, latest per partner) are read whole by every agent and
applied to each shard it holds, which rates only its own partners.

When a shard is assigned, the agent loads its newest checkpoint and reads the feed partition,
usage and agreements from the checkpoint's positions to their end (rating is deterministic,
so the same events give the same ledger; redelivered records are recognised by id), learns
from the alerts and billing-lines topics what its partners were already told, and tails
on. When a shard is revoked, the agent saves it in a checkpoint first, so that its next
owner starts from there. Per batch, each shard publishes, in its own transaction, the
billing lines of every partner and period that changed (``revision`` grows with the usage
included, so a consumer keeps the highest revision of each ``line_id``) and any newly
crossed threshold. Running allocations count provisionally (up to the latest event time
seen) in the lines and in the limits, so a hard limit stops placement before the
allocations end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from tessera.agents.warmup import compiled_off_loop
from tessera.billing.ledger import Ledger, merge_views
from tessera.billing.state import BillingState
from tessera.config import Settings
from tessera.pricing.agreements import Agreement, AgreementError, parse_agreement
from tessera.schemas import AgreementUpdated, BillingLine, Checkpoint, DeadLetter, Event, UsageLimitAlert, encode
from tessera.schemas.identity import REMEMBERED_IDS
from tessera.schemas.topics import topic_spec
from tessera.streams import collector, metrics
from tessera.streams.batching import in_time_order, take_batch
from tessera.streams.billing_feed import FEED, owned_by
from tessera.streams.checkpoint import checkpoint_events, load_checkpoints
from tessera.streams.edge import decode_record
from tessera.streams.produce import event_record, producer_for, send_batched
from tessera.streams.reader import groupless_consumer, read_span
from tessera.streams.security import aiokafka_security_kwargs
from tessera.streams.supervise import BrokerWatch, start_client, supervise
from tessera.streams.webhook import WebhookNotifier

log = logging.getLogger(__name__)
AGENT = "billing"
#: Topics every agent reads whole (keyed otherwise than by partner) and applies to each shard.
SHARED_TOPICS = ("usage", "agreements")
#: A batch: up to this many records, or what arrives within this long of its first one.
BATCH_MAX = 5000
BATCH_WITHIN_S = 0.25


@dataclass
class Shard:
    """One partition of the billing feed held by this agent: its partners' state."""

    partition: int
    state: BillingState
    checkpoint_id: int = 0
    next_checkpoint: float = 0.0
    unsaved: bool = True
    producer: AIOKafkaProducer | None = None
    #: Per input (topic, partition): the next offset its state takes in, which is what a
    #: checkpoint records and where a hand-over resumes. The consumers' own positions can be
    #: ahead, by records fetched and not yet applied when a rebalance takes the shard away.
    next: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Lines and alerts owed since recovery (published with the first batch).
    pending: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class BillingWorker:
    settings: Settings
    agreements: dict[str, Agreement]

    def __post_init__(self) -> None:
        self.webhook: WebhookNotifier | None = None
        self.shards: dict[int, Shard] = {}
        self.attempts = getattr(self, "attempts", 0)
        self.partitions = topic_spec(FEED).partitions
        self.topic = {n: topic_spec(n).full_name(self.settings.topic_prefix)
                      for n in (FEED, "usage", "billing-lines", "alerts", "agreements", "dead-letters", "checkpoints")}
        self.names = {v: k for k, v in self.topic.items()}
        self.group = f"{self.settings.app_id}-{AGENT}"
        self._dead: list[DeadLetter] = []
        self._standby: dict[int, Shard] = {}
        #: Shard hand-overs (revocations and assignments) so far: a batch fetched across one
        #: may be partly stale (see ``run``).
        self.generation = 0
        self._fault: BaseException | None = None
        self.owner = getattr(self, "owner", AGENT)

    # -- state -------------------------------------------------------------------
    def owner_of(self, shard: int) -> str:
        """A shard's name on the checkpoints topic."""
        return f"{self.owner}/{shard}"

    @property
    def state(self) -> BillingState:
        """The one shard's state when this agent holds exactly one (tests, single shard)."""
        if len(self.shards) != 1:
            raise ValueError(f"this agent holds {len(self.shards)} shards; use .shards")
        return next(iter(self.shards.values())).state

    async def _read(self, name: str, start: dict[int, int] | None, partitions=None) -> tuple[list, dict]:
        recs, ends = await read_span(self.settings, self.topic[name],
                                     topic_spec(name).partitions if partitions is None else partitions,
                                     start=start, committed_only=True)
        out = []
        for r in recs:
            d = decode_record(r, topic_spec(name), AGENT)
            if d.event is not None:
                out.append((d.event, r.partition, r.offset))
        return out, ends

    def _apply_agreement(self, state: BillingState, e: AgreementUpdated, partition: int,
                         offset: int) -> tuple[set, DeadLetter | None]:
        try:
            a = parse_agreement(e.agreement)
        except AgreementError as exc:
            return set(), DeadLetter(reason=str(exc), field=str(exc).split(":")[0], consumer=AGENT,
                                     source_topic=self.topic["agreements"], source_partition=partition,
                                     source_offset=offset, original_b64=base64.b64encode(encode(e)).decode())
        return state.update_agreement(a), None

    async def recover_shards(self, partitions: list[int]) -> list[Shard]:
        """Shards' states from their newest checkpoints (if any), then their feed partitions
        and the shared topics from each checkpoint's positions (or the beginning) to their
        end, with the next offset of each input each state includes. Each topic is read once for all
        the shards, from the earliest position any of them needs."""
        restored = await load_checkpoints(self.settings, [self.owner_of(p) for p in partitions], AGENT)
        starts = {p: (r.by_topic() if r is not None else {}) for p, r in
                  ((p, restored[self.owner_of(p)]) for p in partitions)}
        shards: dict[int, Shard] = {}
        touched: dict[int, set[tuple[str, str]]] = {}
        for p in partitions:
            r = restored[self.owner_of(p)]
            owns = owned_by({p}, self.partitions)
            touched[p] = set()
            if r is not None:
                state = r.state
                state.bill_only(owns)
                for partner, a in self.agreements.items():      # the configured terms win over saved ones
                    if state.agreements.get(partner) != a:
                        touched[p] |= state.update_agreement(a)
            else:
                state = BillingState(dict(self.agreements), self.settings.billing_grace_s, owns=owns)
            state.on_unrated = self._unrated
            shards[p] = Shard(p, state, r.checkpoint_id if r is not None else 0,
                              time.monotonic() + self.settings.checkpoint_interval_s, unsaved=r is None)

        def earliest(name: str) -> dict[int, int]:
            """Per partition, the lowest position any shard starts from (0: one has none)."""
            out: dict[int, int] = {}
            for p in partitions:
                own = starts[p].get(self.topic[name], {})
                for part in range(topic_spec(name).partitions):
                    out[part] = min(out.get(part, own.get(part, 0)), own.get(part, 0))
            return out

        names = ("agreements", "alerts", "billing-lines", "usage")
        feed_start = {p: starts[p].get(self.topic[FEED], {}).get(p, 0) for p in partitions}
        # The topics are read concurrently: each read is a consumer start-up and a fetch.
        reads = await asyncio.gather(*(self._read(n, earliest(n)) for n in names),
                                     self._read(FEED, feed_start, partitions))
        got = dict(zip((*names, FEED), reads))

        def new_to(p: int, name: str):
            """The records of ``name`` shard ``p``'s state does not include yet."""
            own = starts[p].get(self.topic[name], {})
            return [(e, part, off) for e, part, off in got[name][0] if off >= own.get(part, 0)]

        for p, sh in shards.items():
            owns, state = sh.state.owns, sh.state
            # Lines published before: revisions continue above them (a consumer keeps the highest).
            for e, _, _ in new_to(p, "billing-lines"):
                if isinstance(e, BillingLine) and owns(e.partner_id):
                    state.remember_line(e)
            for e, part, off in new_to(p, "agreements"):
                if isinstance(e, AgreementUpdated):
                    changed, dl = self._apply_agreement(state, e, part, off)
                    touched[p] |= changed
                    if dl is not None and p == 0:      # one shard's owner reports bad agreements
                        self._dead.append(dl)
            for e, _, _ in new_to(p, "alerts"):
                if isinstance(e, UsageLimitAlert) and owns(e.partner_id):
                    state.remember_alert(e)
            events = [e for e, _, _ in new_to(p, "usage")]
            events += [e for e, part, _ in got[FEED][0] if part == p]
            sh.unsaved |= bool(events)
            sh.pending = touched[p] | state.replay(events)
            sh.next = {(self.topic[n], part): off for n in SHARED_TOPICS for part, off in got[n][1].items()}
            sh.next[(self.topic[FEED], p)] = got[FEED][1].get(p, feed_start[p])
            r = restored[self.owner_of(p)]
            log.info("billing shard %d recovered%s: %d events read, %d partner-periods", p,
                     f" from checkpoint {r.checkpoint_id} ({r.size_bytes} bytes)" if r else "",
                     len(events), len(sh.pending))
        return [shards[p] for p in partitions]

    async def recover(self, partitions: list[int] | None = None) -> dict[int, Shard]:
        """Recover shards (all by default) without running: for reports and tests."""
        parts = list(range(self.partitions)) if partitions is None else partitions
        for shard in await self.recover_shards(parts):
            self.shards[shard.partition] = shard
        return self.shards

    def running(self) -> set[str]:
        """The allocations billed as running, over every shard held."""
        return {aid for sh in self.shards.values() for aid in sh.state.lifecycle.running}

    def view(self, detail: bool = False) -> Ledger:
        """Month to date over every shard held (each bills its own partners: they merge)."""
        return merge_views([sh.state.view(detail=detail) for sh in self.shards.values()])

    def _unrated(self, partner: str) -> None:
        metrics.BILLING_UNRATED.labels(partner).inc()

    # -- running -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, riding out broker faults (tessera.streams.supervise)."""
        await compiled_off_loop(packing=False)   # the key partitioner (tessera.agents.warmup says why)
        if not self.settings.alert_webhook_url:
            return await supervise(AGENT, self._attempt, stop)
        async with WebhookNotifier(self.settings.alert_webhook_url, source=f"tessera/{AGENT}",
                                   token=self.settings.alert_webhook_token) as self.webhook:
            await supervise(AGENT, self._attempt, stop)

    async def _attempt(self, stop: asyncio.Event) -> None:
        if self.attempts:
            webhook = self.webhook
            self.__post_init__()        # a fresh start: the shards come back from checkpoints and topics
            self.webhook = webhook
        self.attempts += 1
        s = self.settings
        self._lock = asyncio.Lock()       # a batch and a rebalance never interleave
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            stack.push_async_callback(self._close_shards)
            self._side = await start_client(stack, producer_for(s))           # dead letters
            metrics.PROBE.wait("joining the billing group and recovering its shards")
            self._shared = await start_client(stack, groupless_consumer(s))
            shared_tps = [TopicPartition(self.topic[n], p) for n in SHARED_TOPICS
                          for p in range(topic_spec(n).partitions)]
            self._shared.assign(shared_tps)
            await self._shared.seek_to_end(*shared_tps)     # a shard's recovery reads what came before
            self._feed = await start_client(stack, AIOKafkaConsumer(
                bootstrap_servers=s.bootstrap_servers, group_id=self.group, enable_auto_commit=False,
                isolation_level="read_committed", auto_offset_reset="earliest",
                session_timeout_ms=10_000, heartbeat_interval_ms=3_000, **aiokafka_security_kwargs(s)))
            self._feed.subscribe([self.topic[FEED]], listener=_Rebalance(self))
            collector.settle_after_recovery()
            watch = BrokerWatch(self._side.client)
            while not stop.is_set():
                if self._fault is not None:
                    # Taking shards over failed (aiokafka only logs a listener's error): start
                    # over, or the shards it left out would be assigned here and billed nowhere.
                    raise self._fault
                await watch.tick()
                generation = self.generation
                # Batches by time (BATCH_WITHIN_S), not by fetch: each batch re-rates every
                # running allocation month to date, so one per fetch cost a third of a core.
                records = await take_batch(self._feed, BATCH_MAX, BATCH_WITHIN_S, idle_s=0.2)
                for recs in (await self._shared.getmany(timeout_ms=0, max_records=BATCH_MAX)).values():
                    records += recs
                async with self._lock:
                    if generation != self.generation:
                        # A rebalance came during the fetch or since: some of these records may
                        # predate it (for a shard recovered meanwhile, a gap or a repeat). They
                        # are dropped, and every shard held re-reads from its own next offsets.
                        records = []
                        self._rewind()
                    await self._step(in_time_order(records))
                if self.shards:
                    metrics.PROBE.ready()

    async def _step(self, records: list) -> None:
        touched: dict[int, set[tuple[str, str]]] = {p: sh.pending for p, sh in self.shards.items()}
        # A shard whose clock moved (a tick, a sample) re-rates its running work to it.
        clock = {p: sh.state.lifecycle.watermark_us for p, sh in self.shards.items()}
        for sh in self.shards.values():
            sh.pending = set()
        dead, self._dead = self._dead, []
        for r in records:
            name = self.names[r.topic]
            d = decode_record(r, topic_spec(name), AGENT)
            at = (r.topic, r.partition)
            if name == FEED:
                shard = self.shards.get(r.partition)
                if shard is None or r.offset < shard.next.get(at, 0):
                    continue         # revoked since it was fetched (its next owner reads it), or in already
                if d.event is not None:
                    touched[r.partition] |= shard.state.apply(d.event)
                shard.next[at] = r.offset + 1
                shard.unsaved = True
                continue
            # A shard recovered from the topics already holds what its recovery read.
            held = {p: sh for p, sh in self.shards.items() if r.offset >= sh.next.get(at, 0)}
            if isinstance(d.event, AgreementUpdated):
                for p, sh in held.items():
                    changed, dl = self._apply_agreement(sh.state, d.event, r.partition, r.offset)
                    touched[p] |= changed
                    if dl is not None and p == 0:
                        metrics.DEAD_LETTERS.labels(AGENT, self.topic["agreements"]).inc()
                        dead.append(dl)
            elif d.event is not None:
                for p, sh in held.items():
                    touched[p] |= sh.state.apply(d.event)
            elif d.dead_letter is not None and name == "agreements" and 0 in held:
                dead.append(d.dead_letter)
            for sh in held.values():
                sh.next[at] = r.offset + 1
                sh.unsaved = True
        for p, sh in sorted(self.shards.items()):
            moved = sh.state.lifecycle.watermark_us > clock.get(p, sh.state.lifecycle.watermark_us)
            out: list[Event] = sh.state.outputs(touched[p]) if touched[p] or moved else []
            if sh.unsaved and time.monotonic() >= sh.next_checkpoint:
                out += await self._checkpoint(sh)
            if out:
                await self._publish(sh, out)
        if dead:
            await self._publish_dead(dead)

    def _rewind(self) -> None:
        """Point the consumers at what the shards held have not taken in: each feed partition
        at its shard's next offset, each shared partition at the lowest next offset of any
        shard (a shard skips what it has). Records read while no shard was held (between a
        revocation and an assignment) or fetched before a rebalance are so read again."""
        shared: dict[TopicPartition, int] = {}
        for p, sh in self.shards.items():
            self._feed.seek(TopicPartition(self.topic[FEED], p), sh.next.get((self.topic[FEED], p), 0))
            for tp in self._shared.assignment():
                at = sh.next.get((tp.topic, tp.partition), 0)
                shared[tp] = min(shared.get(tp, at), at)
        for tp, at in shared.items():
            self._shared.seek(tp, at)

    async def _checkpoint(self, sh: Shard) -> list[Event]:
        """A shard's state now, with the positions it includes (its inputs: the next offset
        it has taken in; its outputs: their end, since everything it published is in the state)."""
        sh.checkpoint_id += 1
        sh.unsaved = False
        sh.next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        sh.state.forget_oldest(REMEMBERED_IDS)
        positions = dict(sh.next)
        outputs = [TopicPartition(self.topic[n], p) for n in ("billing-lines", "alerts")
                   for p in range(topic_spec(n).partitions)]
        positions.update({(tp.topic, tp.partition): off
                          for tp, off in (await self._shared.end_offsets(outputs)).items()})
        metrics.CHECKPOINTS.labels(AGENT).inc()
        return checkpoint_events(self.owner_of(sh.partition), sh.checkpoint_id, sh.state, positions)

    async def _publish(self, sh: Shard, events: list[Event]) -> None:
        records = []
        for e in events:
            name = ("alerts" if isinstance(e, UsageLimitAlert) else "checkpoints" if isinstance(e, Checkpoint)
                    else "billing-lines")
            records.append(event_record(self.topic[name], e))
            metrics.child(metrics.BILLING_EVENTS, name).inc()
        async with sh.producer.transaction():
            for f in await send_batched(sh.producer, records):
                await f
        if self.webhook is not None:      # once the alerts are on their topic
            for e in events:
                if isinstance(e, UsageLimitAlert):
                    self.webhook.notify(e)

    async def _publish_dead(self, dead: list[DeadLetter]) -> None:
        records = [event_record(self.topic["dead-letters"], e, e.source_topic.encode()) for e in dead]
        for f in await send_batched(self._side, records):
            await f
        metrics.child(metrics.BILLING_EVENTS, "dead-letters").inc(len(dead))

    # -- the group's rebalances --------------------------------------------------
    async def adopt(self, assigned: set[TopicPartition]) -> None:
        """Shards given to this agent: those it held before this rebalance go on where they
        were (nobody else held them meanwhile: every member gives up all its partitions
        before any is assigned); the others are recovered. Each gets its own producer
        (starting it fences any earlier owner), and the feed is pointed where its state is."""
        async with self._lock:
            parts = sorted(tp.partition for tp in assigned if tp.topic == self.topic[FEED])
            kept, self._standby = {p: self._standby[p] for p in parts if p in self._standby}, {}
            fresh = [p for p in parts if p not in kept]
            if fresh:
                metrics.PROBE.wait(f"recovering billing shards {fresh}")
            for shard in [*kept.values(), *(await self.recover_shards(fresh) if fresh else [])]:
                shard.producer = producer_for(self.settings,
                                              transactional_id=f"{self.settings.app_id}-{AGENT}-{shard.partition}")
                await shard.producer.start()
                self.shards[shard.partition] = shard
                out = shard.state.outputs(shard.pending)
                shard.pending = set()
                if out:
                    await self._publish(shard, out)
            self._rewind()
            self.generation += 1
            log.info("billing shards held: %s (%d recovered)", sorted(self.shards), len(fresh))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Shards taken from this agent (at every rebalance, all of them): each saved in a
        checkpoint for whoever gets it next, and kept at hand in case that is this agent.
        Only a shard whose checkpoint could be published is kept: if this agent had been
        dropped from the group and another had taken the shard meanwhile, that agent's
        producer for the shard (the same transactional id) has fenced this one, the
        publish fails, and the next owner, this agent too, recovers from the newer
        checkpoint; so kept state never misses what another agent billed or alerted."""
        async with self._lock:
            self.generation += 1
            for p in sorted(tp.partition for tp in revoked if tp.partition in self.shards):
                sh = self.shards.pop(p)
                try:
                    await self._publish(sh, await self._checkpoint(sh))
                    self._standby[p] = sh
                except Exception as exc:      # the next owner reads on from the older checkpoint
                    log.warning("billing shard %d: no checkpoint at hand-over (%s)", p, exc)
                await sh.producer.stop()
                sh.producer = None

    async def _close_shards(self) -> None:
        """At the end of an attempt: the producers stop; ``shards`` keeps what this agent
        held last (for reports and tests; the next attempt starts over)."""
        for sh in self._standby.values():
            self.shards.setdefault(sh.partition, sh)
        self._standby = {}
        for sh in self.shards.values():
            if sh.producer is not None:
                with contextlib.suppress(Exception):
                    await sh.producer.stop()
                sh.producer = None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: BillingWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        await self.worker.release(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        try:
            await self.worker.adopt(set(assigned))
        except Exception as exc:      # the agent's loop raises it, and supervise starts over
            log.warning("billing: taking shards %s over failed (%s); starting over",
                        sorted(tp.partition for tp in assigned), exc)
            self.worker._fault = exc
