"""Billing's state machine: the ledger, the allocation lifecycle, closed periods, the
month-to-date view and the memory of alerts already sent (no Kafka: the billing agent
feeds it events and publishes what it returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable, Iterable

from tessera.pricing.agreements import Agreement
from tessera.schemas import AllocationPlaced, BillingLine, Event, UsageLimitAlert, UsageSample
from tessera.schemas.identity import RecentIds

from .ledger import Ledger, SeenOverlay
from .lifecycle import OWN, Lifecycle, sample_record
from .usage import US, month_segments, period_bounds, period_of


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / US, tz=timezone.utc)


@dataclass
class BillingState:
    """Billing's live state: the ledger, the allocation lifecycle and what was published.

    The worker (``tessera.agents.billing``) only decodes events, calls ``apply`` /
    ``update_agreement`` / ``remember_alert``, and publishes what ``outputs`` returns.
    Rating is deterministic, so replaying the same events (``replay``) rebuilds the same
    state after a restart.
    """

    agreements: dict[str, Agreement]
    grace_s: float = 3 * 86400.0
    #: Told the partner of every usage record with no agreement (it is not rated).
    on_unrated: Callable[[str], None] = field(default=lambda partner: None, repr=False)
    ledger: Ledger = field(init=False)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    revisions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: The latest published line per line id, per (partner, period): a line that drops out
    #: of a later invoice (a shortfall the usage came to cover) is published again at zero,
    #: or a consumer keeping the highest revision of each line would keep it.
    published: dict[tuple[str, str], dict[str, BillingLine]] = field(default_factory=dict)
    #: Own capacity used, for tenant chargeback (never billed): (period, tenant) -> price
    #: micro-units x microseconds, exact; ``own_seen``: the own records counted.
    own_cost: dict[tuple[str, str], int] = field(default_factory=dict)
    own_seen: RecentIds = field(default_factory=RecentIds)
    #: The partners this state bills: a shard of the billing feed bills its own only (see
    #: ``tessera.streams.billing_feed``); everything by default.
    owns: Callable[[str], bool] = field(default=lambda partner: True, repr=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.agreements)
        self.lifecycle.bills_whole_vm = self._bills_whole_vm
        self.lifecycle.keeps = self.owns
        self._closed_through = ""
        self._month_checked_until_us = 0     # the watermark below which the horizon's month is known

    def __getstate__(self) -> dict:
        # The callbacks belong to the process (a metric, the shard map), not to the saved state.
        state = self.__dict__.copy()
        state.pop("on_unrated", None)
        state.pop("owns", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_month_checked_until_us", 0)     # a checkpoint from before it existed
        self.on_unrated = lambda partner: None
        self.lifecycle.bills_whole_vm = self._bills_whole_vm
        self.bill_only(lambda partner: True)

    def bill_only(self, owns: Callable[[str], bool]) -> None:
        """Bill only the partners ``owns`` says are this state's (a restored shard)."""
        self.owns = self.lifecycle.keeps = owns

    def apply(self, e: Event) -> set[tuple[str, str]]:
        """Apply one allocation, migration or usage event; returns the (partner, period)s it
        touched. (Open segments add their provisional usage in ``outputs``, once per batch.)"""
        touched = set()
        records = self.lifecycle.apply(e)
        if isinstance(e, UsageSample):
            records = self._measured(e)
        elif records:
            records = [r for r in records if self._basis(r.partner) != "measured"]
        self._close_periods()
        for r in records:
            if r.partner == OWN:
                if r.event_id not in self.own_seen:
                    self.own_seen.add(r.event_id)
                    self._own(r, self.own_cost)
                continue
            if r.partner not in self.agreements:
                self.on_unrated(r.partner)
                continue
            if self.ledger.add(r):
                for period, _, _ in month_segments(r.start_us, r.end_us):
                    touched.add((r.partner, period))
        if isinstance(e, AllocationPlaced):
            period = period_of(self.lifecycle.watermark_us)
            touched |= {(p.provider, period) for p in e.placements
                        if p.provider in self.agreements and self.owns(p.provider)}
        return touched

    def forget_oldest(self, keep: int) -> None:
        """Bound the memories that stop a redelivered record being rated twice (the ids of
        rated records, of released allocations) to their newest ``keep`` entries: a
        redelivery is recent, and a checkpoint must not grow with history."""
        if isinstance(self.ledger.seen, RecentIds):
            self.ledger.seen.trim(keep)
        self.lifecycle.released.trim(keep)
        self.own_seen.trim(keep)

    @staticmethod
    def _own(r, into: dict[tuple[str, str], int]) -> None:
        for period, s, e in month_segments(r.start_us, r.end_us):
            key = (period, r.tenant)
            into[key] = into.get(key, 0) + r.price_micro * (e - s)

    def own_costs(self, period: str) -> dict[str, int]:
        """Own capacity's cost per tenant in ``period`` (price micro-units x microseconds),
        still-running allocations counted up to the watermark: what chargeback adds to the
        partners' bills."""
        cost = dict(self.own_cost)
        for r in self.lifecycle.provisional():
            if r.partner == OWN and r.event_id not in self.own_seen:
                self._own(r, cost)
        return {tenant: n for (p, tenant), n in cost.items() if p == period and n}

    def remember_line(self, e: BillingLine) -> None:
        """A line published before a restart: revisions continue above it, and a line that
        drops out later is published again at zero."""
        key = (e.partner_id, period_of(int(e.period_start.timestamp() * US)))
        self.revisions[key] = max(self.revisions.get(key, 0), e.revision)
        lines = self.published.setdefault(key, {})
        if e.line_id not in lines or lines[e.line_id].revision <= e.revision:
            lines[e.line_id] = e

    def replay(self, events: Iterable[Event]) -> set[tuple[str, str]]:
        """Apply recovered allocation, migration and usage events in event-time order (the
        lifecycle's order across topics and partitions); returns the periods touched."""
        touched: set[tuple[str, str]] = set()
        for e in sorted(events, key=lambda e: e.event_time):
            touched |= self.apply(e)
        return touched

    def _bills_whole_vm(self, partner: str, instance_type: str) -> bool:
        a = self.agreements.get(partner)
        return bool(instance_type) and a is not None and instance_type in a.instance_rates

    def _basis(self, partner: str) -> str:
        a = self.agreements.get(partner)
        return "allocated" if a is None else a.basis

    def _measured(self, e: UsageSample) -> list:
        """A sample of one allocation's use on a partner that bills on measured use. Samples of
        a whole resource (no allocation) include others' work and are not billed; samples on
        partners billing reserved capacity feed forecasting only."""
        partner = e.provider or self.lifecycle.providers.get(e.resource_id, "")
        if not e.allocation_id or self._basis(partner) != "measured" or not self.owns(partner):
            return []
        running = self.lifecycle.running.get(e.allocation_id)
        return [sample_record(e, partner, running[0].tenant if running else "")]

    def _close_periods(self) -> None:
        """Months that ended more than the grace period before the latest event time are
        closed: usage for them from now on is an adjustment in the next open month.
        (Checked when the horizon enters a new month, not per event.)"""
        watermark = self.lifecycle.watermark_us
        if watermark < self._month_checked_until_us:     # every event asks; a month's end answers
            return
        grace_us = int(self.grace_s * US)
        horizon = watermark - grace_us
        month = period_of(max(horizon, 0))
        self._month_checked_until_us = period_bounds(month)[1] + grace_us
        if month == self._closed_through:
            return
        self._closed_through = month
        for partner in self.agreements:
            for p, period in self.ledger.periods(partner):
                if (p, period) not in self.ledger.closed and period_bounds(period)[1] <= horizon:
                    self.ledger.close_period(p, period)

    def _provisional(self) -> list:
        """Open segments up to the watermark, of partners billed on capacity held (own
        capacity is not billed)."""
        return [r for r in self.lifecycle.provisional()
                if r.partner in self.agreements and self._basis(r.partner) != "measured"]

    def view(self, provisional: list | None = None, detail: bool = False) -> Ledger:
        """The ledger plus still-running allocations up to the watermark (month to date);
        with ``detail``, also per day and tenant (for FOCUS rows and chargeback)."""
        days = self.ledger.detail
        view = Ledger(self.agreements, seen=SeenOverlay(self.ledger.seen),
                      cells={k: list(v) for k, v in self.ledger.cells.items()},
                      closed=set(self.ledger.closed), alerted=self.ledger.alerted, blocked=self.ledger.blocked,
                      detail={k: {d: list(v) for d, v in per_day.items()} for k, per_day in days.items()}
                      if detail and days is not None else None)
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
            before = self.published.setdefault((partner, period), {})
            now: dict[str, BillingLine] = {}
            for line in inv.lines:
                now[line.line_id] = BillingLine(
                    line_id=line.line_id, partner_id=partner, period_start=_utc(lo), period_end=_utc(hi),
                    charge_category=line.charge_category, sku=line.sku, unit=line.unit,
                    quantity=line.quantity, rate=Decimal(line.rate_micro).scaleb(-6),
                    amount=Decimal(inv.money(line.amount_minor)), currency=inv.currency, revision=rev)
            for line_id, old in before.items():
                if line_id not in now and old.amount != 0:
                    kept = old.model_dump(exclude={"event_id", "event_time", "quantity", "amount", "revision"})
                    now[line_id] = BillingLine(**kept, quantity=Decimal(0), amount=Decimal(0), revision=rev)
            out.extend(now.values())
            before.update(now)
            for a in [*view.lift_block(partner, period), *view.check_limits(partner, period)]:
                out.append(UsageLimitAlert(partner_id=partner, period_start=_utc(lo), limit_name=a.limit_name,
                                           threshold_pct=a.threshold_pct, used=a.used, limit=a.limit,
                                           enforcement=a.enforcement, lifted=a.lifted))
        return out

    def update_agreement(self, a: Agreement) -> set[tuple[str, str]]:
        """New terms for a partner, from their ``effective_from`` (or, undated, for all time):
        its open periods are re-rated on the next output; usage before an effective date
        keeps the terms it ran under."""
        a = a.superseding(self.agreements.get(a.partner))
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
