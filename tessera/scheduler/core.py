"""The scheduler's state machine (pure): capacity view, queue, decisions, releases.

It owns the free capacity of one placement domain (docs/design.md, question 1): every
change of that capacity goes through ``run_batch`` and ``release`` here, one at a time.

Idempotency, so that restarts and redeliveries neither double-place nor lose:

* a request id that is already decided (placed or rejected) or queued is ignored;
* the state can be rebuilt from the scheduler's own output (``replay``): placed minus
  released allocations give the capacity in use, decided request ids the dedup set;
* the worker commits input offsets only below the oldest request still queued, so a
  queued request is redelivered after a crash, and recognized if it was decided.

Free capacity is never negative: the kernel only places what fits, and the view applies
placements by subtracting exactly what the kernel subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterable

import numpy as np

from tessera.pricing.agreements import AgreementError, parse_agreement
from tessera.pricing.book import PriceBook, PricedResource
from tessera.pricing.periods import period_of
from tessera.schemas import (
    GIB,
    TIER_RANK,
    TRANSIENT_REJECTIONS,
    AgreementUpdated,
    AllocationPlaced,
    AllocationQueued,
    AllocationRejected,
    AllocationReleased,
    BillingLine,
    Capacity,
    Event,
    Forecast,
    HealthChanged,
    HealthStatus,
    MigrationDone,
    MigrationFailed,
    MigrationProgress,
    Placement,
    PricingModel,
    ProvisioningHint,
    RejectReason,
    ResourceDiscovered,
    ResourceRemoved,
    ResourceUpdated,
    TuningDecision,
    UsageLimitAlert,
    WorkloadRequest,
)
from tessera.schemas.base import built, utc_now
from tessera.schemas.identity import RecentIds

from .packing import (
    NO_SEARCH,
    QUICK,
    PackingError,
    PackRequest,
    PackResource,
    PackResult,
    Rejection,
    ResourceTable,
    SearchEffort,
    pack_batch,
)
from .provisioning import HintGate, Offer, plan_hint
from .queue import Queued, SchedulingQueue
from .reservation import Reservations, parse_series
from .tuning import KNOB, QuantileTuner

#: Longest acceptable queue wait per tier, seconds (the simulator's default targets too).
DEFAULT_SLA_TARGETS = {"platinum": 30.0, "gold": 120.0, "silver": 600.0, "bronze": 3600.0}

DIMS = ("vcpu", "memory_gib", "gpu", "storage_gib")
#: Distinct regions, and distinct providers, one scheduler places onto (the packer's
#: constraint bitsets are int64; bit 62 means "nowhere").
MAX_PLACES = 62


def _period_end(period_start: datetime) -> float:
    """End of the calendar month (UTC) that starts at or contains ``period_start``."""
    y, m = period_start.year, period_start.month
    y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return datetime(y, m, 1, tzinfo=timezone.utc).timestamp()


#: Bound on the placement values kept for reuse (``Scheduler._placement_events``).
PLACEMENTS_KEPT = 65_536


def _vec(c: Capacity) -> tuple[float, ...]:
    return (c.vcpu, c.memory_bytes / GIB, float(c.gpu), c.storage_bytes / GIB)


@dataclass
class ResourceState:
    resource_id: str
    provider: str
    region: str
    capacity: tuple[float, ...]
    price: Decimal          # what opening it costs per hour, from the price book
    tags: frozenset[str]
    healthy: bool = True
    used: list[float] = field(default_factory=lambda: [0.0] * len(DIMS))
    offer: PricedResource | None = None

    @property
    def free(self) -> tuple[float, ...]:
        return tuple(max(c - u, 0.0) for c, u in zip(self.capacity, self.used))

    @property
    def open(self) -> bool:
        return any(u > 1e-9 for u in self.used)


@dataclass
class Allocation:
    allocation_id: str
    request_id: str
    demand: tuple[float, ...]
    placements: list[tuple[str, int]]
    tier: str
    #: As they were published when placed; the release event repeats them.
    per_replica: Capacity
    placement_events: list[Placement]
    # What a migration needs to keep: the request's constraints, its owner, its end.
    tenant: str = ""
    tags: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    expires_at: datetime | None = None

    @property
    def vcpu(self) -> float:
        replicas = 0
        for _, k in self.placements:        # (asked twice per allocation: a loop, not a generator)
            replicas += k
        return self.demand[0] * replicas

    def __reduce__(self) -> tuple:
        # For checkpoints: the event models as plain dicts, rebuilt without validation (they
        # were validated when they arrived); pickling the pydantic objects themselves made
        # saving and loading a 50,000-allocation scheduler several times slower.
        return (_allocation, (self.allocation_id, self.request_id, self.demand, self.placements, self.tier,
                              self.per_replica.model_dump(), [p.model_dump() for p in self.placement_events],
                              self.tenant, self.tags, self.regions, self.providers, self.expires_at))


def _allocation(allocation_id, request_id, demand, placements, tier, per_replica, placement_events, *rest):  # noqa: ANN001
    return Allocation(allocation_id, request_id, demand, placements, tier, Capacity.model_construct(**per_replica),
                      [Placement.model_construct(**p) for p in placement_events], *rest)


@dataclass
class Scheduler:
    batch_max: int = 1000
    aging_s: float = 60.0
    resources: dict[str, ResourceState] = field(default_factory=dict)
    allocations: dict[str, Allocation] = field(default_factory=dict)
    decided: RecentIds = field(default_factory=RecentIds)
    #: The identity rule: an ``event_id`` names one event. Request event ids seen -> the
    #: request id each named; a different request reusing one is refused (the worker
    #: dead-letters it), since ClickHouse and every consumer keep one event per event id.
    request_events: RecentIds = field(default_factory=RecentIds)
    reservations: Reservations = field(default_factory=Reservations)
    #: provider -> end of the billing period (epoch s) until which a hard usage limit blocks it
    blocked_until: dict[str, float] = field(default_factory=dict)
    queue: SchedulingQueue = field(init=False)
    hint_gate: HintGate = field(default_factory=HintGate)
    #: Extra search per small batch: quick by default, every request in a batch waits for it.
    effort: SearchEffort = QUICK
    #: Batches larger than this get the greedy only: a large batch means requests arrive
    #: fast, and then the search's milliseconds are latency for all of them.
    search_batch_max: int = 32
    #: The one price truth (tessera.pricing.book): agreements and each partner's month to date.
    prices: PriceBook = field(default_factory=PriceBook)
    #: The time prices are read at (epoch microseconds): the latest batch's.
    _now_us: int = field(default=0, init=False, repr=False)
    #: Learning-driven tuning of the headroom quantile (None: the newsvendor levels).
    tuner: QuantileTuner | None = None
    #: Longest acceptable queue wait per tier (s): a longer wait is an SLA miss for tuning.
    sla_targets: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLA_TARGETS))
    #: What one SLA miss costs in the tuner's reward (base currency).
    miss_penalty: Decimal = Decimal("1.00")
    #: The packer's view of ``resources`` (arrays), kept between batches: rebuilt when
    #: resources or their health change, and row by row when capacity is used or freed.
    #: Resources already running (paid for) even while empty: opening them costs nothing
    #: more. (Resources holding work always count as running.)
    running: set[str] = field(default_factory=set)
    _table: ResourceTable | None = field(default=None, init=False, repr=False)
    _rows: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _healthy: np.ndarray | None = field(default=None, init=False, repr=False)
    #: ``free`` where healthy, 0 where not: what the packer may use when no partner is
    #: blocked, kept row by row with the table (every batch reads it)
    _usable: np.ndarray | None = field(default=None, init=False, repr=False)
    _dirty: set[str] = field(default_factory=set, init=False, repr=False)  # rows to refresh
    #: (table, usable, the table's view with that usable capacity): ``_available``'s answer
    _usable_view: tuple | None = field(default=None, init=False, repr=False)
    _vcpu_by_tier: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    #: Migrations holding capacity on their target (reserved, not yet released at the
    #: source): migration id -> (allocation, source, target, replicas); and those finished.
    moving: dict[str, tuple[str, str, str, int]] = field(default_factory=dict)
    moved: set[str] = field(default_factory=set)
    #: Waiting requests whose ``allocation.queued`` is out (also from before a restart: at
    #: most one per request, as the contract says); a request leaves it when decided.
    announced: set[str] = field(default_factory=set)
    _regions: dict[str, int] = field(default_factory=dict, init=False, repr=False)    # region -> resources
    _providers: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # provider -> resources
    #: Placement values already built, by what they say: the same replicas on the same
    #: resource at the same price make the same (immutable) value, and most placements
    #: of a fleet repeat one (building one took a fifteenth of a simulated request).
    _placement_events: dict[tuple, Placement] = field(default_factory=dict, init=False, repr=False)

    def __getstate__(self) -> dict:
        # The packer's arrays are a cache of ``resources``: rebuilt on first use after a load.
        state = self.__dict__.copy()
        state.update(_table=None, _rows={}, _healthy=None, _usable=None, _dirty=set(), _placement_events={},
                     _usable_view=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_placement_events", {})     # a checkpoint from before they existed
        self.__dict__.setdefault("_usable_view", None)

    def __post_init__(self) -> None:
        self.queue = SchedulingQueue(self.batch_max, self.aging_s)
        #: Bumped whenever capacity may have grown (a release, a resource or its health, a
        #: price, a lifted limit): a request that failed for want of capacity is tried
        #: again only after it changes (SchedulingQueue.next_batch).
        self.epoch = 0
        self._cost_rate = Decimal(0)           # price per hour of the live allocations
        self._window = (None, Decimal(0), 0)   # tuning window: (start, cost so far, misses)
        self._rate_since: float | None = None
        self._forecast_pool: str | None = None     # set when a forecast arrived since the last hint check

    # -- inputs ----------------------------------------------------------------
    def apply(self, event: Event) -> str | None:
        """Resource lifecycle and health verdicts update the capacity view. Returns why an
        event was refused (it then changes nothing), or None."""
        if isinstance(event, (ResourceDiscovered, ResourceUpdated)):
            refused = self._beyond_places(event.resource_id, event.spec.region, event.spec.provider)
            if refused:
                return refused
        self.epoch += 1          # any input may give a waiting request room or a new price
        if isinstance(event, (ResourceDiscovered, ResourceUpdated, ResourceRemoved)):
            self._table = None
        if isinstance(event, (ResourceDiscovered, ResourceUpdated)):
            sp = event.spec
            old = self.resources.get(event.resource_id)
            c = sp.capacity
            offer = PricedResource(sp.provider, sp.instance_type, c.vcpu, c.memory_bytes / GIB, float(c.gpu),
                          sp.price_per_hour, sp.marginal_price_per_hour)
            st = ResourceState(event.resource_id, sp.provider, sp.region, _vec(sp.capacity),
                               self.prices.opening_price(offer, self._now_us),
                               frozenset(t for t in sp.tags if not t.startswith("taint:")),
                               healthy=old.healthy if old else True,
                               used=old.used if old else [0.0] * len(DIMS), offer=offer)
            if any(t.startswith("taint:") for t in sp.tags):
                st.healthy = False  # tainted nodes take no new work
            if sp.pricing_model == PricingModel.own or sp.provider == "own":
                # Own capacity is in service whether or not it holds work: filling it opens
                # nothing. (Partner VMs open with their first placement.)
                self.running.add(event.resource_id)
            self._count_places(old, -1)
            self._count_places(st, +1)
            self.resources[event.resource_id] = st
        elif isinstance(event, ResourceRemoved):
            self._count_places(self.resources.pop(event.resource_id, None), -1)
            self.running.discard(event.resource_id)
        elif isinstance(event, Forecast):
            self.reservations.observe(event)
            self._forecast_pool = parse_series(event.series).get("pool", "default")
        elif isinstance(event, HealthChanged):
            st = self.resources.get(event.resource_id)
            if st is not None:
                st.healthy = event.status == HealthStatus.healthy
                # A verdict changes one row of the packer's table, not its shape: partner VMs
                # opening and closing would otherwise rebuild the whole table each time.
                if self._table is not None:
                    row = self._rows[event.resource_id]
                    self._healthy[row] = st.healthy
                    self._usable[row] = self._table.free[row] if st.healthy else 0.0
        elif isinstance(event, AgreementUpdated):
            try:
                self.prices.set_agreement(parse_agreement(event.agreement))
            except AgreementError as exc:
                return f"refused: {exc}"
            self.reprice(self._now_us)
        elif isinstance(event, BillingLine):
            if self.prices.observe_line(event):
                self.reprice(self._now_us, event.partner_id)
        elif isinstance(event, (MigrationProgress, MigrationDone, MigrationFailed)):
            self._migration(event)
        elif isinstance(event, UsageLimitAlert) and event.lifted:
            self.blocked_until.pop(event.partner_id, None)     # the limit was raised
        elif isinstance(event, UsageLimitAlert) and event.enforcement == "hard":
            # A partner over its hard limit takes no new work until its billing period ends.
            end = _period_end(event.period_start)
            self.blocked_until[event.partner_id] = max(self.blocked_until.get(event.partner_id, 0.0), end)

    def _migration(self, e: MigrationProgress | MigrationDone | MigrationFailed) -> None:
        """The capacity view follows a migration: the target is held from ``reserve_target``,
        the source freed (and the allocation's placement moved) at ``release_source`` or
        ``done``, the target let go if it failed. Each migration id acts once."""
        mid = e.migration_id
        if mid in self.moved:
            return
        if isinstance(e, MigrationFailed):
            self.moved.add(mid)
            held = self.moving.pop(mid, None)
            if held is not None and held[0] in self.allocations:
                self._use(held[2], held[3], self.allocations[held[0]].demand, -1.0)
            return
        a = self.allocations.get(e.allocation_id)
        if a is None:
            return
        on_source = sum(k for r, k in a.placements if r == e.source_resource_id)
        k = min(e.replicas, on_source) if e.replicas else on_source
        if isinstance(e, MigrationProgress) and e.step == "reserve_target":
            if mid not in self.moving and k > 0:
                self._use(e.target_resource_id, k, a.demand, +1.0)
                self.moving[mid] = (a.allocation_id, e.source_resource_id, e.target_resource_id, k)
            return
        if isinstance(e, MigrationDone) or (isinstance(e, MigrationProgress) and e.step == "release_source"):
            held = self.moving.pop(mid, None)
            self.moved.add(mid)
            if held is not None:
                k = held[3]
            elif k > 0:
                self._use(e.target_resource_id, k, a.demand, +1.0)
            if k <= 0:
                return
            self._use(e.source_resource_id, k, a.demand, -1.0)
            placements: dict[str, int] = {}
            for r, n in a.placements:
                placements[r] = placements.get(r, 0) + n
            placements[e.source_resource_id] -= k
            placements[e.target_resource_id] = placements.get(e.target_resource_id, 0) + k
            a.placements = [(r, n) for r, n in placements.items() if n > 0]
            self._move_placement_event(a, e.source_resource_id, e.target_resource_id, k)
            self.epoch += 1

    def _move_placement_event(self, a: Allocation, source: str, target: str, k: int) -> None:
        """The allocation's placements as its release will report them: ``k`` replicas off
        ``source`` onto ``target``, at the target's price (billing's feed routes the release
        to the partners it names, and the resources agent frees what it lists)."""
        before = sum((p.price_per_hour for p in a.placement_events), Decimal(0))
        events: list[Placement] = []
        for p in a.placement_events:
            if p.resource_id == source:
                left = p.replicas - k
                if left > 0:
                    events.append(p.model_copy(update={"replicas": left,
                                                       "price_per_hour": p.price_per_hour * left / p.replicas}))
            elif p.resource_id != target:
                events.append(p)
        st = self.resources.get(target)
        if st is not None:
            held = k + sum(p.replicas for p in a.placement_events if p.resource_id == target)
            events.append(Placement(resource_id=target, provider=st.provider, replicas=held,
                                    price_per_hour=self.placement_price(target, a.per_replica, held),
                                    instance_type=st.offer.instance_type if st.offer else "", region=st.region))
        a.placement_events = events
        self._cost_rate += sum((p.price_per_hour for p in events), Decimal(0)) - before

    def reprice(self, t_us: int, provider: str | None = None) -> None:
        """Read opening prices from the price book again (all, or one provider's) at ``t_us``;
        the packer's table is rebuilt when any changed."""
        self._now_us = t_us
        changed = False
        for st in self.resources.values():
            if st.offer is not None and (provider is None or st.provider == provider):
                price = self.prices.opening_price(st.offer, t_us)
                if price != st.price:
                    st.price, changed = price, True
        if changed:
            self._table = None
            self.epoch += 1

    def set_running(self, resource_id: str, running: bool) -> None:
        """Mark a resource as running (paid for whether or not it holds work) or not."""
        self.epoch += 1
        if running:
            self.running.add(resource_id)
        else:
            self.running.discard(resource_id)
        self._dirty.add(resource_id)

    def placement_price(self, resource_id: str, per_replica: Capacity, replicas: int) -> Decimal:
        """What ``replicas`` of ``per_replica`` on the resource cost per hour (what billing charges)."""
        return self._price_on(self.resources[resource_id], _vec(per_replica)[:3], replicas)

    def _price_on(self, st: ResourceState, per_replica: tuple[float, float, float], replicas: int) -> Decimal:
        if st.offer is None:
            return st.price
        return self.prices.replicas_price(st.offer, per_replica, replicas, self._now_us)

    def identity_conflict(self, request: WorkloadRequest) -> str | None:
        """Why ``request`` breaks the identity rule (its event id already named another
        request), or None; a first sighting is remembered."""
        owner = self.request_events.setdefault(request.event_id, request.request_id)
        if owner != request.request_id:
            return (f"event_id {request.event_id!r} already identifies request {owner!r}; an event id names one "
                    f"event: give the new request {request.request_id!r} a new event_id (a resend keeps both ids)")
        return None

    def submit(self, request: WorkloadRequest, now: float, now_dt: datetime) -> list[Event]:
        if request.request_id in self.decided or request.request_id in self.queue:
            return []  # a redelivery: already decided or waiting
        if request.deadline is not None and request.deadline < now_dt:
            self.decided.add(request.request_id)
            return [self._rejected(request, Rejection(RejectReason.deadline_passed,
                                                      "deadline passed before the request arrived"))]
        self.queue.push(request, now)
        return []

    def provisioning_hints(self, now_dt: datetime) -> list[ProvisioningHint]:
        """After new forecasts: a hint when forecast arrivals outgrow the capacity in service."""
        pool, self._forecast_pool = self._forecast_pool, None
        if pool is None:
            return []
        blocked = self._blocked(now_dt)
        offers = [Offer(r.resource_id, r.provider, r.free[0] if r.open else r.capacity[0], r.price, r.open)
                  for r in self.resources.values() if r.healthy and r.provider not in blocked]
        hint = plan_hint(self.reservations.forecasts, self.reservations.levels(), offers, pool)
        return [hint] if self.hint_gate.admit(hint) else []

    def _blocked(self, now_dt: datetime) -> set[str]:
        if not self.blocked_until:           # the usual case, asked at every batch
            return set()
        wall = now_dt.timestamp()
        return {p for p, until in self.blocked_until.items() if until > wall}

    # -- decisions --------------------------------------------------------------
    def run_batch(self, now: float, now_dt: datetime, batch_id: str = "",
                  stamp: datetime | None = None) -> list[Event]:
        """Decide the next batch. Placements are stamped ``stamp`` (a simulation's virtual
        time) or, by default, the wall clock when they are made: a live batch's ``now_dt`` was
        read before the releases of the same step, and a placement must not look older than
        the release whose capacity it takes."""
        out: list[Event] = []
        for q in self.queue.expired(now_dt):
            self.decided.add(q.request.request_id)
            out.append(self._rejected(q.request, Rejection(RejectReason.deadline_passed, "deadline passed while queued")))
        batch = self.queue.next_batch(now, self.epoch)
        if not batch:
            return out
        t_us = int(now_dt.timestamp() * 1_000_000)
        if period_of(t_us) != period_of(self._now_us):
            self.reprice(t_us)          # a new month: tiers and commitments start again
        self._now_us = t_us
        pack_res = self._available(self._blocked(now_dt))
        uncapped: list[PackRequest] = []
        capped: list[PackRequest] = []          # with a max_price_per_hour: packed after the rest
        by_id: dict[str, Queued] = {}
        for q in batch:
            rq = q.request
            by_id[rq.request_id] = q
            (uncapped if rq.max_price_per_hour is None else capped).append(
                PackRequest(rq.request_id, q.aged_tier(now, self.aging_s), rq.replicas, _vec(rq.per_replica),
                            frozenset(rq.required_tags), frozenset(rq.allowed_regions),
                            frozenset(rq.allowed_providers), rq.spread_min, seq=q.seq))
        self._accrue(now)
        result = self._pack_or_split(uncapped, pack_res) if uncapped else PackResult()
        if capped:
            self._pack_capped(capped, by_id, _after(pack_res, uncapped, result), result)
        for rid, placements in result.placements.items():
            q = by_id[rid]
            out.append(self._place(q.request, placements, now - q.enqueued_at, batch_id, now_dt, stamp))
            if now - q.enqueued_at > self.sla_targets.get(q.request.sla_tier.value, float("inf")):
                self._missed()
        queued = False
        for rid, rejection in result.rejected.items():
            q = by_id[rid]
            if rejection.code not in TRANSIENT_REJECTIONS:     # no later capacity change can fix it
                self.queue.remove(rid)
                self.decided.add(rid)
                out.append(self._rejected(q.request, rejection))
                if rejection.code in (RejectReason.too_large, RejectReason.spread_impossible):
                    self._missed()
            else:
                q.failed_at = (self.epoch, q.aged_tier(now, self.aging_s))
            if rejection.code in TRANSIENT_REJECTIONS and not q.notified and rid not in self.announced:
                q.notified = queued = True
                self.announced.add(rid)
                out.append(built(AllocationQueued, event_id=f"queued:{rid}", request_id=rid, tenant=q.request.tenant,
                                            sla_tier=q.request.sla_tier, position=0, reason=rejection.text[:256]))
        if not queued:
            return out
        positions = self.queue.positions(now)
        return [e.model_copy(update={"position": positions.get(e.request_id, 0)})
                if isinstance(e, AllocationQueued) else e for e in out]

    def _missed(self) -> None:
        start, cost, misses = self._window
        self._window = (start, cost, misses + 1)

    def tuning_step(self, now: float, now_dt: datetime) -> TuningDecision | None:
        """Close the tuning window: score the last choice (minus the cost of the capacity
        held, minus the penalty per SLA miss), choose the headroom quantile for the next
        window, and say so as an event. None without a tuner."""
        if self.tuner is None:
            return None
        self._accrue(now)
        start, cost, misses = self._window
        previous = self.tuner.last_choice
        reward = None
        if previous is not None and start is not None:
            reward = -float(cost + self.miss_penalty * misses)
            self.tuner.reward(reward)
        level = self.tuner.choose(now_dt)
        self.reservations.level_override = level
        self._window = (now, Decimal(0), 0)
        context = self.tuner.last_choice[0]
        return TuningDecision(event_id=f"tuning:{KNOB}:{int(now * 1000)}", event_time=now_dt, knob=KNOB,
                              context=context, arm=format(level, "g"),
                              previous_arm=format(previous[1], "g") if previous else "", reward=reward,
                              window_cost=cost.quantize(Decimal("0.000001")) if start is not None else Decimal(0),
                              window_misses=misses if start is not None else 0,
                              window_seconds=max(now - start, 0.0) if start is not None else 0.0)

    def vcpu_in_use_by_tier(self) -> dict[str, float]:
        return dict(self._vcpu_by_tier)

    def _accrue(self, now: float | None) -> None:
        """Integrate the live allocations' price over time into the tuning window's cost."""
        if now is None or self.tuner is None:
            return
        if self._rate_since is not None and now > self._rate_since:
            start, cost, misses = self._window
            cost += self._cost_rate * Decimal(repr(now - self._rate_since)) / 3600
            self._window = (start, cost, misses)
        self._rate_since = now

    def _hold(self, a: Allocation) -> None:
        """A live allocation: its replicas take capacity and count toward its tier's use."""
        for p in a.placement_events:
            self._cost_rate += p.price_per_hour
        self.allocations[a.allocation_id] = a
        for res_id, k in a.placements:
            self._use(res_id, k, a.demand, +1.0)
        self._vcpu_by_tier[a.tier] = self._vcpu_by_tier.get(a.tier, 0.0) + a.vcpu

    def _drop(self, allocation_id: str) -> Allocation | None:
        a = self.allocations.pop(allocation_id, None)
        if a is not None:
            self.epoch += 1
            for mid, (aid, _, target, k) in list(self.moving.items()):
                if aid == allocation_id:      # released mid-migration: the held target goes too
                    del self.moving[mid]
                    self._use(target, k, a.demand, -1.0)
            for p in a.placement_events:
                self._cost_rate -= p.price_per_hour
            for res_id, k in a.placements:
                self._use(res_id, k, a.demand, -1.0)
            left = self._vcpu_by_tier.get(a.tier, 0.0) - a.vcpu
            self._vcpu_by_tier[a.tier] = left if left > 1e-9 else 0.0   # no float dust
        return a

    def table(self) -> ResourceTable:
        """The packer's arrays for ``resources`` (real free capacity, healthy or not)."""
        if self._table is None:
            # Rows in resource-id order: the packer breaks ties by row, and the order the
            # resource events happened to arrive in (partitions, a replay) must not matter.
            states = sorted(self.resources.values(), key=lambda r: r.resource_id)
            self._table = ResourceTable.from_resources(
                [PackResource(r.resource_id, r.provider, r.region, r.free, r.capacity, r.price, r.tags,
                              r.open or r.resource_id in self.running) for r in states], len(DIMS))
            self._rows = {r.resource_id: i for i, r in enumerate(states)}
            self._healthy = np.array([r.healthy for r in states], dtype=np.bool_)
            self._usable = np.where(self._healthy[:, None], self._table.free, 0.0)
            self._dirty.clear()
        elif len(self._dirty) <= 4:   # the usual batch: a few rows, written one by one
            # (element by element: building the row's tuple and writing it whole cost
            # about three times as much, and every request's batch passes here)
            free, open_, usable, healthy = self._table.free, self._table.open, self._usable, self._healthy
            for r in self._dirty:
                row = self._rows.get(r)
                if row is not None:
                    st = self.resources[r]
                    busy = False
                    # an unhealthy row's usable capacity stays 0 (written when its health changed)
                    ok = bool(healthy[row])
                    for d, (c, u) in enumerate(zip(st.capacity, st.used)):
                        f = c - u
                        if f < 0.0:
                            f = 0.0
                        free[row, d] = f
                        if ok:
                            usable[row, d] = f
                        if u > 1e-9:
                            busy = True
                    open_[row] = busy or r in self.running
            self._dirty.clear()
        else:   # rows whose use changed since the last batch, in one array write
            dirty = [(self._rows[r], self.resources[r].used) for r in self._dirty if r in self._rows]
            rows = [row for row, _ in dirty]
            used = np.array([u for _, u in dirty]).reshape(len(rows), -1)
            self._table.free[rows] = np.maximum(self._table.cap[rows] - used, 0.0)
            self._usable[rows] = np.where(self._healthy[rows, None], self._table.free[rows], 0.0)
            self._table.open[rows] = (used > 1e-9).any(axis=1) | np.array(
                [self._table.ids[row] in self.running for row in rows], dtype=np.bool_)
            self._dirty.clear()
        return self._table

    def _beyond_places(self, resource_id: str, region: str, provider: str) -> str | None:
        """The packer marks regions and providers as bits of one int64: a scheduler places
        onto at most MAX_PLACES of each (more calls for another placement domain)."""
        old = self.resources.get(resource_id)
        for what, value, counts, had in (("regions", region, self._regions, old.region if old else None),
                                         ("providers", provider, self._providers, old.provider if old else None)):
            distinct = len(counts) - (1 if had is not None and counts.get(had) == 1 and had != value else 0)
            if value not in counts and distinct >= MAX_PLACES:
                return (f"refused: this scheduler already places onto {MAX_PLACES} {what}, its limit; "
                        f"give {what} beyond that a placement domain of their own")
        return None

    def _count_places(self, st: ResourceState | None, sign: int) -> None:
        if st is None:
            return
        for counts, key in ((self._regions, st.region), (self._providers, st.provider)):
            counts[key] = counts.get(key, 0) + sign
            if counts[key] <= 0:
                del counts[key]

    def _available(self, blocked: set[str]) -> ResourceTable:
        """The table as the packer may use it now. Unhealthy resources and partners blocked by
        a hard limit take no work (no free capacity) but still count as existing, so a request
        that only they could host waits for their recovery instead of failing."""
        t = self.table()
        if not blocked:
            # kept row by row (``table``); nothing downstream writes a table's free in place.
            # The view is kept too: its arrays are the table's, written in place, and a new
            # one is made only when the table or its usable capacity is rebuilt.
            view = self._usable_view
            if view is None or view[0] is not t or view[1] is not self._usable:
                view = self._usable_view = (t, self._usable, t.with_state(self._usable))
            return view[2]
        usable = self._healthy & ~np.isin(t.res_provider, [t.provider_idx[p] for p in blocked if p in t.provider_idx])
        return t.with_state(np.where(usable[:, None], t.free, 0.0))

    def _use(self, res_id: str, replicas: int, demand: tuple[float, ...], sign: float) -> None:
        """Take (sign +1) or give back (-1) ``replicas`` x ``demand`` on one resource; its
        row of the packer's table is refreshed at the next batch."""
        st = self.resources.get(res_id)
        if st is None:
            return
        used, step = st.used, sign * replicas
        for d, x in enumerate(demand):
            v = used[d] + step * x
            used[d] = v if v >= 0.0 else 0.0      # max(v, 0.0), without the call
        self._dirty.add(res_id)

    def _pack_or_split(self, reqs: list[PackRequest], res: ResourceTable) -> PackResult:
        """Pack the batch; if it cannot be packed as one (more distinct constraints than the
        packer's bitsets hold), pack its halves one after the other, down to the single
        request that cannot be packed at all, which alone is rejected with the reason."""
        try:
            return self._pack_with_reservations(reqs, res)
        except PackingError as exc:
            if len(reqs) == 1:
                result = PackResult()
                result.rejected[reqs[0].id] = Rejection(RejectReason.invalid_request, str(exc))
                return result
        half = len(reqs) // 2
        first = self._pack_or_split(reqs[:half], res)
        second = self._pack_or_split(reqs[half:], _after(res, reqs[:half], first))
        first.placements.update(second.placements)
        first.rejected.update(second.rejected)
        first.opened += second.opened
        first.cost += second.cost
        first.lower_bound += second.lower_bound
        first.free_after_rows = first.opened_rows = None
        return first

    def _pack_capped(self, reqs: list[PackRequest], by_id: dict, res: ResourceTable, into: PackResult) -> None:
        """Requests with a ``max_price_per_hour``, one by one after the rest of the batch, each
        on the resources where all its replicas together stay within the cap (prices are
        linear in replicas, so any split of them stays within it too). A request that could
        not fit within its cap even on empty resources is refused with ``over_price_cap``;
        one that could waits for capacity like any other."""
        for r in reqs:
            request = by_id[r.id].request
            cap = request.max_price_per_hour
            within = np.array([self.placement_price(rid, request.per_replica, r.replicas) <= cap
                               for rid in res.ids], dtype=np.bool_)
            part = self._pack_or_split([r], res.with_state(np.where(within[:, None], res.free, 0.0)))
            why = part.rejected.get(r.id)
            if why is not None and why.code in TRANSIENT_REJECTIONS:
                ever = pack_batch([r], res.with_state(np.where(within[:, None], res.cap, 0.0),
                                                      np.zeros(len(res), dtype=np.bool_)), effort=NO_SEARCH)
                if r.id not in ever.placements:
                    part.rejected[r.id] = Rejection(
                        RejectReason.over_price_cap,
                        f"nothing it may use fits within max_price_per_hour {cap} (with all resources free)")
            into.placements.update(part.placements)
            into.rejected.update(part.rejected)
            into.opened += part.opened
            into.cost += part.cost
            res = _after(res, [r], part)

    def _pack_with_reservations(self, reqs: list[PackRequest], res: ResourceTable):
        """Pack tier by tier; each tier sees free vCPU less the headroom held for higher tiers."""
        effort = self.effort if len(reqs) <= self.search_batch_max else NO_SEARCH
        use = self._vcpu_by_tier        # read only
        if not self.reservations.holds_any(use):
            return pack_batch(reqs, res, effort=effort)
        merged = None
        current = res
        for rank in range(4):
            group = [q for q in reqs if TIER_RANK.get(q.tier, 9) == rank]
            if not group:
                continue
            held = self.reservations.reserved_above(rank, use)
            total_free = float(current.free[:, 0].sum())
            scale = max(0.0, 1.0 - held / total_free) if total_free > 0 else 0.0
            free = current.free.copy()
            free[:, 0] *= scale
            part = pack_batch(group, current.with_state(free), effort=effort)
            # carry the real free capacity forward: subtract what this tier took
            if part.free_after_rows is not None:
                current = current.with_state(np.maximum(current.free - (free - part.free_after_rows), 0.0),
                                             part.opened_rows)
            if merged is None:
                merged = part
            else:
                merged.placements.update(part.placements)
                merged.rejected.update(part.rejected)
                merged.opened += part.opened
                merged.cost += part.cost
                merged.lower_bound += part.lower_bound
        for q in reqs:  # invalid tiers never reach a group
            if merged is not None and q.id not in merged.placements and q.id not in merged.rejected:
                merged.rejected[q.id] = Rejection(RejectReason.invalid_request, f"unknown tier {q.tier!r}")
        return merged if merged is not None else pack_batch(reqs, res, effort=effort)

    def _place(self, request: WorkloadRequest, placements: list[tuple[str, int]], waited: float,
               batch_id: str, now_dt: datetime, stamp: datetime | None = None) -> AllocationPlaced:
        # A request that says how long it runs is released then; the deadline travels in
        # the placed event, so a restarted scheduler re-arms the timer from its own output.
        duration = request.expected_duration_seconds
        alloc_id = f"alloc:{request.request_id}"
        demand = _vec(request.per_replica)
        events = []
        kept = self._placement_events
        for r, k in placements:
            st = self.resources[r]
            price = self._price_on(st, demand[:3], k)
            instance_type = st.offer.instance_type if st.offer else ""
            key = (r, st.provider, k, str(price), instance_type, st.region)     # str: 0.1 and 0.10 differ in events
            event = kept.get(key)
            if event is None:
                if len(kept) >= PLACEMENTS_KEPT:
                    kept.clear()
                event = kept[key] = built(Placement, resource_id=r, provider=st.provider, replicas=k,
                                          price_per_hour=price, instance_type=instance_type, region=st.region)
            events.append(event)
        expires = now_dt + timedelta(0, duration) if duration else None     # (seconds, without a keyword)
        self._hold(Allocation(alloc_id, request.request_id, demand, list(placements),
                              request.sla_tier.value, request.per_replica, events, request.tenant,
                              frozenset(request.required_tags), frozenset(request.allowed_regions),
                              frozenset(request.allowed_providers), expires))
        self.queue.remove(request.request_id)
        self.decided.add(request.request_id)
        self.announced.discard(request.request_id)
        return built(
            AllocationPlaced, event_id=f"placed:{request.request_id}", event_time=stamp or utc_now(),
            request_id=request.request_id, tenant=request.tenant,
            sla_tier=request.sla_tier, allocation_id=alloc_id, per_replica=request.per_replica,
            queued_seconds=max(waited, 0.0), batch_id=batch_id, expires_at=expires, placements=events,
            required_tags=request.required_tags, allowed_regions=request.allowed_regions,
            allowed_providers=request.allowed_providers)

    def _rejected(self, request: WorkloadRequest, why: Rejection) -> AllocationRejected:
        self.announced.discard(request.request_id)
        return built(AllocationRejected, event_id=f"rejected:{request.request_id}", request_id=request.request_id,
                                  tenant=request.tenant, sla_tier=request.sla_tier, reason=why.text[:256],
                                  code=why.code)

    def reject(self, request: WorkloadRequest, code: RejectReason, reason: str) -> list[Event]:
        """Answer a request with a final rejection decided outside the packer (e.g. no
        placement domain holds what it may use). Idempotent: a decided request is skipped."""
        if request.request_id in self.decided or request.request_id in self.queue:
            return []
        self.decided.add(request.request_id)
        return [self._rejected(request, Rejection(code, reason))]

    def release_requested(self, request_id: str, reason: str) -> list[Event]:
        """A producer ends its request: its allocation is released, or, if it still waits,
        it is withdrawn (rejected with code ``withdrawn``). Idempotent."""
        q = self.queue.remove(request_id)
        if q is not None:
            self.decided.add(request_id)
            return [self._rejected(q.request, Rejection(RejectReason.withdrawn, reason or "withdrawn"))]
        return self.release(f"alloc:{request_id}", reason)

    def release(self, allocation_id: str, reason: str = "completed", now: float | None = None,
                stamp: datetime | None = None) -> list[Event]:
        """Release an allocation; the event is stamped ``stamp`` (a simulation's virtual time)
        or, by default, the wall clock, as ``run_batch`` stamps placements."""
        self._accrue(now)      # the tuning window's cost runs at the old rate up to now
        a = self._drop(allocation_id)
        if a is None:
            return []  # unknown or already released: idempotent
        return [built(AllocationReleased, event_id=f"released:{allocation_id}", event_time=stamp or utc_now(),
                                   request_id=a.request_id,
                                   allocation_id=allocation_id, reason=reason, placements=a.placement_events,
                                   per_replica=a.per_replica)]

    # -- recovery ---------------------------------------------------------------
    def replay(self, outputs: Iterable[Event]) -> None:
        """Rebuild decisions and capacity in use from this scheduler's own output events."""
        for e in outputs:
            if isinstance(e, AllocationPlaced):
                if e.allocation_id in self.allocations or e.request_id in self.decided:
                    self.queue.remove(e.request_id)
                    continue
                self._hold(Allocation(e.allocation_id, e.request_id, _vec(e.per_replica),
                                      [(p.resource_id, p.replicas) for p in e.placements], e.sla_tier.value,
                                      e.per_replica, list(e.placements), e.tenant, frozenset(e.required_tags),
                                      frozenset(e.allowed_regions), frozenset(e.allowed_providers), e.expires_at))
                self.decided.add(e.request_id)
                self.announced.discard(e.request_id)
                self.queue.remove(e.request_id)   # waiting in a checkpoint, decided after it
            elif isinstance(e, AllocationRejected):
                self.decided.add(e.request_id)
                self.announced.discard(e.request_id)
                self.queue.remove(e.request_id)
            elif isinstance(e, AllocationQueued):
                if e.request_id not in self.decided:
                    self.announced.add(e.request_id)
            elif isinstance(e, AllocationReleased):
                self._drop(e.allocation_id)


def _after(res: ResourceTable, reqs: list[PackRequest], result: PackResult) -> ResourceTable:
    """The table with what ``result`` placed of ``reqs`` taken: the next half of a split
    batch must not see that capacity as free."""
    if not result.placements:
        return res
    row = {rid: i for i, rid in enumerate(res.ids)}
    demand = {q.id: np.asarray(q.demand, dtype=np.float64) for q in reqs}
    free, open_ = res.free.copy(), res.open.copy()
    for rid, placements in result.placements.items():
        for res_id, k in placements:
            free[row[res_id]] = np.maximum(free[row[res_id]] - k * demand[rid], 0.0)
            open_[row[res_id]] = True
    return res.with_state(free, open_)
