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
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tessera.schemas import (AgreementUpdated, AllocationPlaced, BillingLine, DeadLetter, Event, UsageLimitAlert, UsageSample,
                     encode)
from tessera.schemas.topics import topic_spec
from tessera.streams.app import aiokafka_security_kwargs
from tessera.streams.batching import take_batch
from tessera.streams.edge import decode_message
from tessera.streams.reader import read_to_end
from tessera.streams import collector, metrics
from tessera.billing.agreements import Agreement, AgreementError, parse_agreement, parse_agreements
from tessera.billing.ledger import Ledger, SeenOverlay
from tessera.billing.lifecycle import Lifecycle, sample_record
from tessera.billing.usage import US, month_segments, period_bounds, period_of
from tessera.config import Settings
from tessera.streams.produce import producer_for, send_batched

log = logging.getLogger(__name__)
AGENT = "billing"
#: Where usage comes from: the allocation lifecycle, migrations moving it, measured samples.
USAGE_TOPICS = ("allocations", "migrations", "usage")
#: A batch: up to this many records, or what arrives within this long of its first one.
BATCH_MAX = 5000
BATCH_WITHIN_S = 0.25


def load_agreements(path: str) -> dict[str, Agreement]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"agreements file {path!r} not found (set TESSERA_BILLING_AGREEMENTS)")
    return parse_agreements(orjson.loads(p.read_bytes()))


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / US, tz=timezone.utc)


@dataclass
class BillingState:
    """Pure: ledger + lifecycle + what was published; the worker only moves bytes."""

    agreements: dict[str, Agreement]
    grace_s: float = 3 * 86400.0
    ledger: Ledger = field(init=False)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    revisions: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.agreements)
        self._closed_through = ""

    def apply(self, e: Event) -> set[tuple[str, str]]:
        """Apply one allocation, migration or usage event; returns the (partner, period)s it
        touched. (Open segments add their provisional usage in ``outputs``, once per batch.)"""
        touched = set()
        records = self.lifecycle.apply(e)
        if isinstance(e, UsageSample):
            records = self._measured(e)
        else:
            records = [r for r in records if self._basis(r.partner) != "measured"]
        self._close_periods()
        for r in records:
            if r.partner not in self.agreements:
                metrics.BILLING_UNRATED.labels(r.partner).inc()
                continue
            if self.ledger.add(r):
                touched |= {(r.partner, p) for p, _, _ in month_segments(r.start_us, r.end_us)}
        if isinstance(e, AllocationPlaced):
            period = period_of(self.lifecycle.watermark_us)
            touched |= {(p.provider, period) for p in e.placements if p.provider in self.agreements}
        return touched

    def _basis(self, partner: str) -> str:
        a = self.agreements.get(partner)
        return "allocated" if a is None else a.basis

    def _measured(self, e: UsageSample) -> list:
        """A sample of one allocation's use on a partner that bills on measured use. Samples of
        a whole resource (no allocation) include others' work and are not billed; samples on
        partners billing reserved capacity feed forecasting only."""
        partner = e.provider or self.lifecycle.providers.get(e.resource_id, "")
        if not e.allocation_id or self._basis(partner) != "measured":
            return []
        return [sample_record(e, partner)]

    def _close_periods(self) -> None:
        """Months that ended more than the grace period before the latest event time are
        closed: usage for them from now on is an adjustment in the next open month.
        (Checked when the horizon enters a new month, not per event.)"""
        horizon = self.lifecycle.watermark_us - int(self.grace_s * US)
        month = period_of(max(horizon, 0))
        if month == self._closed_through:
            return
        self._closed_through = month
        for partner in self.agreements:
            for p, period in self.ledger.periods(partner):
                if (p, period) not in self.ledger.closed and period_bounds(period)[1] <= horizon:
                    self.ledger.close_period(p, period)

    def _provisional(self) -> list:
        """Open segments up to the watermark, of partners billed on capacity held."""
        return [r for r in self.lifecycle.provisional()
                if r.partner in self.agreements and self._basis(r.partner) != "measured"]

    def view(self, provisional: list | None = None) -> Ledger:
        """The ledger plus still-running allocations up to the watermark (month to date)."""
        view = Ledger(self.agreements, seen=SeenOverlay(self.ledger.seen),
                      cells={k: list(v) for k, v in self.ledger.cells.items()},
                      closed=set(self.ledger.closed), alerted=self.ledger.alerted, blocked=self.ledger.blocked)
        for r in self._provisional() if provisional is None else provisional:
            view.add(r)
        return view

    def outputs(self, touched: set[tuple[str, str]]) -> list[Event]:
        provisional = self._provisional()        # built once per batch: the touched set and the view
        for r in provisional:                    # running allocations accrue month to date
            touched = touched | {(r.partner, p) for p, _, _ in month_segments(r.start_us, r.end_us)}
        if not touched:
            return []
        view = self.view(provisional)
        out: list[Event] = []
        for partner, period in sorted(touched):
            inv = view.invoice(partner, period)
            lo, hi = period_bounds(period)
            rev = self.revisions.get((partner, period), 0) + 1
            self.revisions[(partner, period)] = rev
            for line in inv.lines:
                out.append(BillingLine(
                    line_id=line.line_id, partner_id=partner, period_start=_utc(lo), period_end=_utc(hi),
                    charge_category=line.charge_category, sku=line.sku, unit=line.unit,
                    quantity=line.quantity, rate=Decimal(line.rate_micro).scaleb(-6),
                    amount=Decimal(inv.money(line.amount_minor)), currency=inv.currency, revision=rev))
            for a in [*view.lift_block(partner, period), *view.check_limits(partner, period)]:
                out.append(UsageLimitAlert(partner_id=partner, period_start=_utc(lo), limit_name=a.limit_name,
                                           threshold_pct=a.threshold_pct, used=a.used, limit=a.limit,
                                           enforcement=a.enforcement, lifted=a.lifted))
        return out

    def update_agreement(self, a: Agreement) -> set[tuple[str, str]]:
        """New terms for a partner: its open periods are re-rated at them on the next output."""
        self.agreements[a.partner] = a
        self.ledger.agreements[a.partner] = a
        return {(p, period) for p, period in self.ledger.periods(a.partner) if (p, period) not in self.ledger.closed}

    def remember_alert(self, a: UsageLimitAlert) -> None:
        period = f"{a.period_start.year:04d}-{a.period_start.month:02d}"
        if a.lifted:
            self.ledger.blocked.pop(a.partner_id, None)
            for key in [k for k in self.ledger.alerted if k[:3] == (a.partner_id, period, a.limit_name)
                        and k[3] > a.threshold_pct]:
                self.ledger.alerted.discard(key)
            return
        self.ledger.alerted.add((a.partner_id, period, a.limit_name, a.threshold_pct))
        if a.enforcement == "hard":
            self.ledger.blocked[a.partner_id] = period


@dataclass
class BillingWorker:
    settings: Settings
    agreements: dict[str, Agreement]

    def __post_init__(self) -> None:
        self.state = BillingState(self.agreements, self.settings.billing_grace_s)
        self.topic = {n: topic_spec(n).full_name(self.settings.topic_prefix)
                      for n in (*USAGE_TOPICS, "billing-lines", "alerts", "agreements", "dead-letters")}
        self.names = {v: k for k, v in self.topic.items()}

    async def _read(self, name: str) -> list[tuple[Event, int, int]]:
        recs = await read_to_end(self.settings, self.topic[name], topic_spec(name).partitions, committed_only=True)
        out = []
        for r in recs:
            d = decode_message(r.value, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                               spec=topic_spec(name), consumer=AGENT)
            if d.event is not None:
                out.append((d.event, r.partition, r.offset))
        return out

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
        self._agreement_pos = -1
        self._dead: list[DeadLetter] = []
        # The five topics are read concurrently: each read is a consumer start-up and a fetch.
        reads = dict(zip(("agreements", "alerts", *USAGE_TOPICS), await asyncio.gather(
            *(self._read(n) for n in ("agreements", "alerts", *USAGE_TOPICS)))))
        for e, part, off in reads["agreements"]:
            if isinstance(e, AgreementUpdated):
                _, dl = self._apply_agreement(e, part, off)
                if dl is not None:
                    self._dead.append(dl)
            self._agreement_pos = max(self._agreement_pos, off)
        for e, _, _ in reads["alerts"]:
            if isinstance(e, UsageLimitAlert):
                self.state.remember_alert(e)
        positions: dict[tuple[str, int], int] = {}
        touched: set[tuple[str, str]] = set()
        events = [(e, name, part, off) for name in USAGE_TOPICS for e, part, off in reads[name]]
        events.sort(key=lambda x: x[0].event_time)        # lifecycle order across topics and partitions
        for e, name, part, off in events:
            touched |= self.state.apply(e)
            positions[(name, part)] = max(positions.get((name, part), -1), off)
        self._pending = touched
        log.info("billing recovered: %d usage events, %d partner-periods", len(events), len(touched))
        return positions

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        sec = aiokafka_security_kwargs(s)
        producer = producer_for(s)
        await producer.start()
        positions = await self.recover()
        collector.settle_after_recovery()
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers, group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed", **sec)
        await consumer.start()
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
        try:
            await self._publish(producer, self.state.outputs(self._pending))
            while not stop.is_set():
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
                    d = decode_message(r.value, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                                       spec=topic_spec(name), consumer=AGENT)
                    if isinstance(d.event, AgreementUpdated):
                        changed, dl = self._apply_agreement(d.event, r.partition, r.offset)
                        touched |= changed
                        if dl is not None:
                            dead.append(dl)
                    elif d.event is not None:
                        touched |= self.state.apply(d.event)
                    elif d.dead_letter is not None and name == "agreements":
                        dead.append(d.dead_letter)
                if touched or dead:
                    await self._publish(producer, [*self.state.outputs(touched), *dead])
        finally:
            await consumer.stop()
            await producer.stop()

    async def _publish(self, producer: AIOKafkaProducer, events: list[Event]) -> None:
        records = []
        for e in events:
            name = ("alerts" if isinstance(e, UsageLimitAlert)
                    else "dead-letters" if isinstance(e, DeadLetter) else "billing-lines")
            key = e.source_topic.encode() if isinstance(e, DeadLetter) else e.key()
            records.append((self.topic[name], key, encode(e)))
            metrics.child(metrics.BILLING_EVENTS, name).inc()
        futures = await send_batched(producer, records)
        for f in futures:
            await f
