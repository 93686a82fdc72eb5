"""Allocation lifecycle -> usage records: what the live billing agent rates.

An allocation is billed as *segments*: a run of some replicas on one resource from a start
time to an end time. Placement opens one segment per placement; release closes them all.
A migration moves the allocation's whole placement on the source resource to the target:

* ``migration.progress`` step ``reserve_target`` opens the target segment (the partner is
  paid for capacity held while data syncs, as it would bill it);
* ``migration.done`` closes the source segment at ``cut_over_at`` (and opens the target
  segment there if no reservation was seen);
* ``migration.failed`` closes a reserved target segment (rolled back: the source never
  stopped).

A closed segment becomes one final usage record whose id is ``<allocation>/<resource>``
for a placement segment and ``<allocation>/<resource>/<migration>`` for a migration
target, so a replayed event rates nothing twice. Segments on own resources ('own') are
tracked (an allocation may migrate between own and partner capacity) and never billed;
their records, priced at the placement's price per hour, feed tenant chargeback.
Open segments count *provisionally* up to the latest event time seen, for month-to-date
views and limits, and are rated for good when they close.

Partners that bill on measured use instead of reserved capacity are rated from usage
samples (:func:`sample_record`), not from segments; the billing agent picks per agreement.

A partner whose agreement rates a resource's instance type per instance-hour bills the
whole VM, not what allocations hold: the VM is open from the first segment that lands on
it until the last one on it closes, and that span becomes one instance-hour record
(``vm:<resource>:<start>``); its allocations' segments are tracked but not billed per unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Callable, Iterable

from tessera.pricing.agreements import MICRO
from tessera.schemas import (
    GIB,
    AllocationPlaced,
    AllocationReleased,
    Event,
    MigrationDone,
    MigrationFailed,
    MigrationProgress,
    UsageSample,
)
from tessera.schemas.identity import RecentIds

from .usage import EPOCH, US, UsageRecord

OWN = "own"


def _us(dt) -> int:
    d = dt - EPOCH
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


def _milli_per_replica(c) -> tuple[int, int, int]:
    """Per-replica capacity in thousandths (vCPU, GiB, GPU): normalised once, here."""
    return round(c.vcpu * 1000), round(c.memory_bytes * 1000 / GIB), c.gpu * 1000


@dataclass(slots=True)
class Segment:
    record_id: str
    partner: str
    allocation_id: str
    resource_id: str
    start_us: int
    replicas: int
    per_replica_milli: tuple[int, int, int]
    instance_type: str = ""     # set when the whole VM is billed instead (see the module doc)
    tenant: str = ""
    #: The placement's price per hour, micro-units (own capacity's cost for chargeback; a
    #: segment a migration opens keeps the price of the placement it came from).
    price_micro: int = 0

    def record(self, end_us: int) -> UsageRecord:
        v, m, g = self.per_replica_milli
        return UsageRecord(
            event_id=self.record_id, partner=self.partner, allocation_id=self.allocation_id,
            resource_id=self.resource_id, start_us=self.start_us, end_us=max(end_us, self.start_us),
            vcpu_milli=v * self.replicas, memory_milli=m * self.replicas, gpu_milli=g * self.replicas,
            tenant=self.tenant, price_micro=self.price_micro)

    def weight(self, end_us: int) -> int:
        """How much of a shared VM this segment used up to ``end_us``: its vCPU (or, without
        vCPU, its memory and GPU) thousandths times microseconds."""
        v, m, g = self.per_replica_milli
        return (v or m + g) * self.replicas * max(end_us - self.start_us, 0)


@dataclass(slots=True)
class OpenVm:
    partner: str
    instance_type: str
    start_us: int
    segments: int = 0
    #: tenant -> weight of its closed segments on this VM (see ``Segment.weight``).
    used: dict[str, int] = field(default_factory=dict)

    def record(self, resource_id: str, end_us: int, running: Iterable[Segment] = ()) -> UsageRecord:
        """The VM's span as one instance-hour record, its cost shared by the tenants that
        ran on it in proportion to their use (``running``: segments still open on it)."""
        used = dict(self.used)
        for seg in running:
            used[seg.tenant] = used.get(seg.tenant, 0) + seg.weight(end_us)
        return UsageRecord(event_id=f"vm:{resource_id}:{self.start_us}", partner=self.partner, allocation_id="",
                           resource_id=resource_id, start_us=self.start_us, end_us=max(end_us, self.start_us),
                           vcpu_milli=0, memory_milli=0, gpu_milli=0, instance_type=self.instance_type,
                           shares=tuple(sorted((t, w) for t, w in used.items() if w)))


def _never(partner: str, instance_type: str) -> bool:
    return False


def _every(partner: str) -> bool:
    return True


@dataclass
class Lifecycle:
    #: Whether a partner bills this instance type per instance-hour (the whole VM).
    bills_whole_vm: Callable[[str, str], bool] = field(default=_never, repr=False)
    #: Whether this lifecycle bills a partner: a shard of the billing feed tracks only its
    #: own partners' segments (``tessera.streams.billing_feed``).
    keeps: Callable[[str], bool] = field(default=_every, repr=False)
    vms: dict[str, OpenVm] = field(default_factory=dict)                # resource -> VM billed whole
    running: dict[str, list[Segment]] = field(default_factory=dict)     # allocation -> open segments
    reserved: dict[str, Segment] = field(default_factory=dict)          # migration -> target held, not cut over
    finished_migrations: set[str] = field(default_factory=set)
    released: RecentIds = field(default_factory=RecentIds)   # a redelivered placement must not reopen them
    providers: dict[str, str] = field(default_factory=dict)             # resource -> partner, as placed
    regions: dict[str, str] = field(default_factory=dict)               # resource -> region, as placed
    watermark_us: int = 0
    unknown_migrations: int = 0      # for an allocation not running here (released, or never placed)

    def __getstate__(self) -> dict:
        # The callback is the billing state's bound method, re-attached when that loads; a
        # checkpoint that had to name a method would need getattr in its unpickler.
        state = self.__dict__.copy()
        state["bills_whole_vm"] = _never
        state["keeps"] = _every
        return state

    def apply(self, e: Event) -> list[UsageRecord]:
        """Feed one allocation or migration event; returns the usage that became final."""
        t = _us(e.event_time)
        if t > self.watermark_us:
            self.watermark_us = t
        if isinstance(e, AllocationPlaced):
            if e.allocation_id not in self.running and e.allocation_id not in self.released:
                per = _milli_per_replica(e.per_replica)
                segs = [Segment(f"{e.allocation_id}/{p.resource_id}", p.provider, e.allocation_id, p.resource_id, t,
                                p.replicas, per, p.instance_type if self.bills_whole_vm(p.provider, p.instance_type)
                                else "", e.tenant, int(p.price_per_hour * MICRO) if p.provider == OWN else 0)
                        for p in e.placements if self.keeps(p.provider)]
                self.running[e.allocation_id] = segs
                for p in e.placements:
                    self.providers[p.resource_id] = p.provider
                    if p.region:
                        self.regions[p.resource_id] = p.region
                for seg in segs:
                    self._vm_in(seg, t)
            return []
        if isinstance(e, AllocationReleased):
            self.released.add(e.allocation_id)
            segs = self.running.pop(e.allocation_id, [])
            held = [m for m, s in self.reserved.items() if s.allocation_id == e.allocation_id]
            segs = segs + [self.reserved.pop(m) for m in held]
            return self._close(segs, t)
        if isinstance(e, MigrationProgress) and e.step == "reserve_target":
            if e.migration_id in self.reserved or e.migration_id in self.finished_migrations:
                return []
            target = self._target(e, t)
            if target is not None:
                self.reserved[e.migration_id] = target
                self._vm_in(target, t)
            return []
        if isinstance(e, MigrationDone):
            if e.migration_id in self.finished_migrations:
                return []
            cut = _us(e.cut_over_at)
            target = self.reserved.pop(e.migration_id, None)
            if target is None:
                target = self._target(e, cut)
                if target is not None:
                    self._vm_in(target, cut)
            self.finished_migrations.add(e.migration_id)
            segs = self.running.get(e.allocation_id)
            if segs is None:
                if target is None or e.allocation_id in self.released:
                    return [] if target is None else self._close([target], cut)
                # Placed on another shard's partner: from here on it runs on one of ours.
                self.running[e.allocation_id] = [target]
                return []
            # The work left the source at cut-over whether or not the target's partner is
            # known (if not, the target is counted in ``unknown_migrations`` and not billed).
            moved = [s for s in segs if s.resource_id == e.source_resource_id]
            segs[:] = [s for s in segs if s.resource_id != e.source_resource_id] + ([target] if target else [])
            held = sum(s.replicas for s in moved)
            if moved and 0 < e.replicas < held:
                # Part of the source's replicas moved: the rest run on from cut-over as a segment of their own.
                segs.append(replace(moved[0], record_id=f"{e.allocation_id}/{e.source_resource_id}/{e.migration_id}"
                                    "/rest", start_us=cut, replicas=held - e.replicas))
                if moved[0].instance_type:
                    self._vm_in(segs[-1], cut)
            if not segs:
                # All of it left for another shard's partner: a redelivered placement must
                # not reopen it here.
                del self.running[e.allocation_id]
                self.released.add(e.allocation_id)
            return self._close(moved, cut)
        if isinstance(e, MigrationFailed):
            self.finished_migrations.add(e.migration_id)
            held = self.reserved.pop(e.migration_id, None)
            return [] if held is None else self._close([held], t)
        return []

    def _vm_in(self, seg: Segment, t: int) -> None:
        """A segment lands on a VM billed whole: the VM opens with the first one."""
        if not seg.instance_type:
            return
        vm = self.vms.get(seg.resource_id)
        if vm is None:
            vm = self.vms[seg.resource_id] = OpenVm(seg.partner, seg.instance_type, t)
        vm.segments += 1

    def _regioned(self, records: list[UsageRecord]) -> list[UsageRecord]:
        for r in records:
            r.region = self.regions.get(r.resource_id, "")
        return records

    def _close(self, segments: list[Segment], end_us: int) -> list[UsageRecord]:
        """Closed segments as final usage: per unit, or, for VMs billed whole, the VM's span
        when its last segment leaves."""
        return self._regioned(self._closed(segments, end_us))

    def _closed(self, segments: list[Segment], end_us: int) -> list[UsageRecord]:
        out = []
        for s in segments:
            if not s.instance_type:     # own segments too: billing keeps them apart, for chargeback
                out.append(s.record(end_us))
                continue
            vm = self.vms.get(s.resource_id)
            if vm is None:
                continue
            vm.used[s.tenant] = vm.used.get(s.tenant, 0) + s.weight(end_us)
            vm.segments -= 1
            if vm.segments <= 0:
                del self.vms[s.resource_id]
                out.append(vm.record(s.resource_id, end_us))
        return out

    def _target(self, e, start_us: int) -> Segment | None:
        """The segment a migration opens on its target: the source placement's replicas
        (None when the target is another shard's partner)."""
        partner = e.target_provider or self.providers.get(e.target_resource_id, "")
        if partner and not self.keeps(partner):
            return None
        source = [s for s in self.running.get(e.allocation_id, ()) if s.resource_id == e.source_resource_id]
        if source:
            per, tenant, replicas = source[0].per_replica_milli, source[0].tenant, sum(s.replicas for s in source)
            if 0 < e.replicas < replicas:
                replicas = e.replicas
        elif e.per_replica is not None and e.replicas and e.allocation_id not in self.released:
            # The placement was on another shard's partner: the event says what moved.
            per, tenant, replicas = _milli_per_replica(e.per_replica), e.tenant, e.replicas
        else:
            self.unknown_migrations += 1
            return None
        if not partner:
            self.unknown_migrations += 1
            return None
        self.providers[e.target_resource_id] = partner
        whole = e.target_instance_type if self.bills_whole_vm(partner, e.target_instance_type) else ""
        return Segment(f"{e.allocation_id}/{e.target_resource_id}/{e.migration_id}", partner, e.allocation_id,
                       e.target_resource_id, start_us, replicas, per, whole, tenant,
                       int(e.target_price_per_hour * MICRO) if partner == OWN else 0)

    def provisional(self) -> list[UsageRecord]:
        """Usage of still-open segments up to the watermark."""
        open_segments = [s for segs in self.running.values() for s in segs]
        open_segments += self.reserved.values()
        on_vm: dict[str, list[Segment]] = {}
        for s in open_segments:
            if s.instance_type:
                on_vm.setdefault(s.resource_id, []).append(s)
        return self._regioned(
            [s.record(self.watermark_us) for s in open_segments if not s.instance_type]
            + [vm.record(rid, self.watermark_us, on_vm.get(rid, ())) for rid, vm in self.vms.items()])


def sample_record(e: UsageSample, partner: str, tenant: str = "") -> UsageRecord:
    """A measured-use sample as a usage record: its interval ends at the sample's event time.
    Quantities are the average use over the interval, rounded to thousandths."""
    end = e.event_time
    start = end - timedelta(seconds=e.interval_seconds)
    v, m, g = _milli_per_replica(e.used)
    return UsageRecord(event_id=e.event_id, partner=partner, allocation_id=e.allocation_id,
                       resource_id=e.resource_id, start_us=_us(start), end_us=_us(end),
                       vcpu_milli=v, memory_milli=m, gpu_milli=g, tenant=tenant)
