"""The billing agent: allocations, migrations and usage samples in; month-to-date billing lines
and limit alerts out.

Agreements come from a file at start and then from the compacted ``agreements`` topic
(``agreement.updated``, latest per partner): new terms re-rate the partner's open periods;
an invalid document goes to the dead-letter topic with the field named, and the old terms
stay. It reads the allocations topic with ``read_committed`` (the scheduler writes it in Kafka
transactions; an aborted placement is never billed), the migrations topic (a migration
moves a placement's billing to the target partner, see ``tessera.billing.lifecycle``) and
the usage topic (rated only for partners whose agreement has ``"basis": "measured"``). On
start it rebuilds the ledger by replaying those topics from the beginning in event-time
order (rating is deterministic, so the same events give the same ledger) and learns from the alerts topic which thresholds were
already announced, so a restart neither loses usage, nor bills it twice, nor repeats an
alert. Then it tails new events and, per batch, publishes the billing lines of
every partner and period that changed (``revision`` grows with the usage included, so a
consumer keeps the highest revision of each ``line_id``) and any newly crossed threshold.

Running allocations count provisionally (up to the latest event time) in the lines and in
the limits, so a hard limit stops placement before the allocations end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tessera.billing.state import BillingState
from tessera.config import Settings
from tessera.pricing.agreements import Agreement, AgreementError, parse_agreement
from tessera.schemas import AgreementUpdated, BillingLine, Checkpoint, DeadLetter, Event, UsageLimitAlert, encode
from tessera.schemas.identity import REMEMBERED_IDS
from tessera.schemas.topics import topic_spec
from tessera.streams import collector, metrics
from tessera.streams.batching import take_batch
from tessera.streams.checkpoint import checkpoint_events, load_checkpoint
from tessera.streams.edge import decode_record
from tessera.streams.produce import event_record, producer_for, send_batched
from tessera.streams.reader import groupless_consumer, read_span
from tessera.streams.supervise import BrokerWatch, start_client, supervise
from tessera.streams.webhook import WebhookNotifier

log = logging.getLogger(__name__)
AGENT = "billing"
#: The billing agent's name on the checkpoints topic.
OWNER = "billing"
#: Where usage comes from: the allocation lifecycle, migrations moving it, measured samples.
USAGE_TOPICS = ("allocations", "migrations", "usage")
#: A batch: up to this many records, or what arrives within this long of its first one.
BATCH_MAX = 5000
BATCH_WITHIN_S = 0.25


@dataclass
class BillingWorker:
    settings: Settings
    agreements: dict[str, Agreement]

    def __post_init__(self) -> None:
        self.webhook: WebhookNotifier | None = None
        self.state = BillingState(self.agreements, self.settings.billing_grace_s, on_unrated=self._unrated)
        self.owner = OWNER
        self.attempts = getattr(self, "attempts", 0)
        self.checkpoint_id = 0
        self.next_checkpoint = 0.0
        self.topic = {n: topic_spec(n).full_name(self.settings.topic_prefix)
                      for n in (*USAGE_TOPICS, "billing-lines", "alerts", "agreements", "dead-letters",
                                "checkpoints")}
        self.names = {v: k for k, v in self.topic.items()}

    async def _read(self, name: str, start: dict[int, int] | None) -> tuple[list[tuple[Event, int, int]], dict]:
        recs, ends = await read_span(self.settings, self.topic[name], topic_spec(name).partitions, start=start,
                                     committed_only=True)
        out = []
        for r in recs:
            d = decode_record(r, topic_spec(name), AGENT)
            if d.event is not None:
                out.append((d.event, r.partition, r.offset))
        return out, ends

    def _apply_agreement(self, e: AgreementUpdated, partition: int, offset: int) -> tuple[set, DeadLetter | None]:
        try:
            a = parse_agreement(e.agreement)
        except AgreementError as exc:
            metrics.DEAD_LETTERS.labels(AGENT, self.topic["agreements"]).inc()
            return set(), DeadLetter(reason=str(exc), field=str(exc).split(":")[0], consumer=AGENT,
                                     source_topic=self.topic["agreements"], source_partition=partition,
                                     source_offset=offset, original_b64=base64.b64encode(encode(e)).decode())
        return self.state.update_agreement(a), None

    async def recover(self) -> dict[tuple[str, int], int]:
        """State from the newest checkpoint (if any), then the topics from its positions (or
        from their beginning) to their end; returns the next offset per (topic name, partition)."""
        self._agreement_pos = -1
        self._dead: list[DeadLetter] = []
        restored = await load_checkpoint(self.settings, self.owner, AGENT)
        start = restored.by_topic() if restored is not None else {}
        touched: set[tuple[str, str]] = set()
        if restored is not None:
            self.state, self.checkpoint_id = restored.state, restored.checkpoint_id
            self.state.on_unrated = self._unrated
            for partner, a in self.agreements.items():      # the configured terms win over saved ones
                if self.state.agreements.get(partner) != a:
                    touched |= self.state.update_agreement(a)
        # The topics are read concurrently: each read is a consumer start-up and a fetch.
        names = ("agreements", "alerts", "billing-lines", *USAGE_TOPICS)
        reads = dict(zip(names, await asyncio.gather(*(self._read(n, start.get(self.topic[n])) for n in names))))
        # Lines published before: revisions continue above them (a consumer keeps the highest).
        for e, _, _ in reads["billing-lines"][0]:
            if isinstance(e, BillingLine):
                self.state.remember_line(e)
        self._agreement_pos = start.get(self.topic["agreements"], {}).get(0, 0) - 1
        for e, part, off in reads["agreements"][0]:
            if isinstance(e, AgreementUpdated):
                _, dl = self._apply_agreement(e, part, off)
                if dl is not None:
                    self._dead.append(dl)
            self._agreement_pos = max(self._agreement_pos, off)
        for e, _, _ in reads["alerts"][0]:
            if isinstance(e, UsageLimitAlert):
                self.state.remember_alert(e)
        positions: dict[tuple[str, int], int] = {}
        events = []
        for name in USAGE_TOPICS:
            events.extend(e for e, _, _ in reads[name][0])
            for part, end in reads[name][1].items():
                positions[(name, part)] = end - 1
        self._pending = touched | self.state.replay(events)
        self.next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        self._unsaved = bool(events) or restored is None    # a first checkpoint even of nothing
        log.info("billing recovered%s: %d usage events read, %d partner-periods",
                 f" from checkpoint {restored.checkpoint_id} ({restored.size_bytes} bytes)" if restored else "",
                 len(events), len(self._pending))
        return positions

    def _unrated(self, partner: str) -> None:
        metrics.BILLING_UNRATED.labels(partner).inc()

    async def _checkpoint(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> list[Event]:
        """The state now, the positions it includes (its inputs: next offset read; its own
        outputs: their end, since everything published so far is in the state)."""
        self.checkpoint_id += 1
        self.next_checkpoint = time.monotonic() + self.settings.checkpoint_interval_s
        self.state.forget_oldest(REMEMBERED_IDS)
        positions = {(tp.topic, tp.partition): await consumer.position(tp) for tp in tps}
        outputs = [TopicPartition(self.topic[n], p) for n in ("billing-lines", "alerts")
                   for p in range(topic_spec(n).partitions)]
        positions.update({(tp.topic, tp.partition): off
                          for tp, off in (await consumer.end_offsets(outputs)).items()})
        metrics.CHECKPOINTS.labels(AGENT).inc()
        return checkpoint_events(self.owner, self.checkpoint_id, self.state, positions)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``, riding out broker faults (tessera.streams.supervise)."""
        if not self.settings.alert_webhook_url:
            return await supervise(AGENT, self._attempt, stop)
        async with WebhookNotifier(self.settings.alert_webhook_url, source=f"tessera/{AGENT}",
                                   token=self.settings.alert_webhook_token) as self.webhook:
            await supervise(AGENT, self._attempt, stop)

    async def _attempt(self, stop: asyncio.Event) -> None:
        if self.attempts:
            webhook, owner = self.webhook, self.owner
            self.__post_init__()        # a fresh start: the ledger comes back from checkpoint and topics
            self.webhook, self.owner = webhook, owner
        self.attempts += 1
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            # Transactional: a checkpoint's chunks land all or none (a partial one must never
            # replace, under compaction, the complete one before it), and a second billing agent
            # fences this one instead of billing beside it.
            producer = await start_client(stack, producer_for(s, transactional_id=f"{s.app_id}-{AGENT}"))
            metrics.PROBE.wait("rebuilding the ledger from the checkpoint and topics")
            positions = await self.recover()
            collector.settle_after_recovery()
            consumer = await start_client(stack, groupless_consumer(s))
            tps = [TopicPartition(self.topic[n], p) for n in USAGE_TOPICS for p in range(topic_spec(n).partitions)]
            agreements_tp = TopicPartition(self.topic["agreements"], 0)
            consumer.assign([*tps, agreements_tp])
            positions[("agreements", 0)] = self._agreement_pos
            fresh = []
            for tp in [*tps, agreements_tp]:
                at = positions.get((self.names[tp.topic], tp.partition), -1)
                if at >= 0:
                    consumer.seek(tp, at + 1)
                else:
                    fresh.append(tp)
            if fresh:
                await consumer.seek_to_beginning(*fresh)      # one request for all, not one per partition
            await self._publish(producer, self.state.outputs(self._pending))
            metrics.PROBE.ready()
            watch = BrokerWatch(producer.client)
            while not stop.is_set():
                await watch.tick()
                # Batches by time (BATCH_WITHIN_S), not by fetch: each batch re-rates every
                # running allocation month to date, so one per fetch (dozens a second at low
                # rates) cost a third of a core whatever the load.
                records = sorted(await take_batch(consumer, BATCH_MAX, BATCH_WITHIN_S, idle_s=0.2),
                                 key=lambda r: r.timestamp)
                touched: set[tuple[str, str]] = set()
                dead: list[DeadLetter] = self._dead
                self._dead = []
                for r in records:
                    name = self.names[r.topic]
                    d = decode_record(r, topic_spec(name), AGENT)
                    if isinstance(d.event, AgreementUpdated):
                        changed, dl = self._apply_agreement(d.event, r.partition, r.offset)
                        touched |= changed
                        if dl is not None:
                            dead.append(dl)
                    elif d.event is not None:
                        touched |= self.state.apply(d.event)
                    elif d.dead_letter is not None and name == "agreements":
                        dead.append(d.dead_letter)
                out: list[Event] = [*self.state.outputs(touched), *dead] if touched or dead else []
                self._unsaved |= bool(records)
                if self._unsaved and time.monotonic() >= self.next_checkpoint:
                    self._unsaved = False
                    out += await self._checkpoint(consumer, [*tps, agreements_tp])
                if out:
                    await self._publish(producer, out)

    async def _publish(self, producer: AIOKafkaProducer, events: list[Event]) -> None:
        records = []
        for e in events:
            name = ("alerts" if isinstance(e, UsageLimitAlert) else "dead-letters" if isinstance(e, DeadLetter)
                    else "checkpoints" if isinstance(e, Checkpoint) else "billing-lines")
            key = e.source_topic.encode() if isinstance(e, DeadLetter) else None
            records.append(event_record(self.topic[name], e, key))
            metrics.child(metrics.BILLING_EVENTS, name).inc()
        async with producer.transaction():
            futures = await send_batched(producer, records)
            for f in futures:
                await f
        if self.webhook is not None:      # once the alerts are on their topic
            for e in events:
                if isinstance(e, UsageLimitAlert):
                    self.webhook.notify(e)
