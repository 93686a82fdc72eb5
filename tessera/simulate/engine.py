"""Replay a trace through the live cores under a virtual clock: no Kafka, deterministic.

The same modules the workers run decide here: the scheduler core (queue, packing kernel,
price book), the demand engine (``SeriesForecaster``) and billing's state machine (ledger
and allocation lifecycle). Only time is virtual: events (arrivals, releases, VMs becoming
usable, control ticks) are taken from a heap in time order.

The controller keeps partner capacity warm. Every ``interval_s`` it sets a vCPU target and
opens partner VMs (cheapest opening price per vCPU first, from the price book) up to it,
or closes VMs idle for the partner's ``idle_close_s`` beyond it. A VM is usable
``lead_time_s`` after it is opened and is paid from open to close. Whatever the policy,
work that waits makes the controller open VMs for it once waiting longer would break its
tier's target (its target less the lead time): until then it waits for capacity to free
up, which costs nothing (the reactive floor).

Policies set the target:

* ``reactive``: current demand + a static warm buffer (``buffer_vcpu``);
* ``predictive``: the demand engine's forecast of each urgent tier, learnt online, never
  ahead of the trace, over the steps that cover the lead time, at the tier's newsvendor
  quantile (its shortage cost against the idle cost of the cheapest partner vCPU-hour;
  ``tessera.scheduler.reservation``), or with ``quantile`` set, at that quantile for the
  most urgent tier and the others where the newsvendor puts them beside it;
* ``oracle``: the realised demand over the same steps (the trace's own future);
* ``learned``: predictive, with its knobs (the headroom quantiles, how long an idle VM
  stays open as a share of its partner's ``idle_close_s`` and, with migration, the
  consolidation threshold) chosen per context (hour of day) online by a River bandit from
  the realised reward (``tessera.scheduler.tuning``).

Demand is the trace's offered load: vCPU of requests submitted and not yet finished,
counted as if each ran from its submission (so what the controller learns and the oracle
sees do not depend on the policy's own waits). Only *urgent* tiers, those whose wait
target is shorter than the partners' lead time, need capacity warm ahead: the others are
served by opening when they wait, which costs nothing while they wait. So the forecasts
(one per urgent tier) and the oracle follow the urgent tiers' offered load, and the target
is demand now plus its expected growth before capacity opened now becomes usable.
"""

from __future__ import annotations

import gc
import heapq
import math
import time
from bisect import bisect_left
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tessera.billing.lifecycle import OWN
from tessera.billing.state import BillingState
from tessera.billing.usage import US, UsageRecord, period_of
from tessera.forecast import MODEL_NAMES, check_models
from tessera.migration.budget import DisruptionBudget
from tessera.migration.live import live_snapshot
from tessera.migration.planner import plan
from tessera.pricing.agreements import Agreement
from tessera.pricing.book import PriceBook, Standing
from tessera.scheduler.core import DEFAULT_SLA_TARGETS, Scheduler
from tessera.scheduler.reservation import DEFAULT_SHORTAGE_COST, tier_level
from tessera.scheduler.tuning import (
    CONSOLIDATION_COST_FACTOR,
    HEADROOM_QUANTILE,
    IDLE_CLOSE_SHARE,
    PARTNER_PREFERENCE,
    KnobTuner,
)
from tessera.schemas import (
    TIER_RANK,
    AllocationPlaced,
    AllocationRejected,
    HealthChanged,
    HealthStatus,
    MigrationDone,
    MigrationProgress,
    RejectReason,
    ResourceDiscovered,
)

from .fleet import Fleet, instance_agreements
from .trace import TracedRequest

if TYPE_CHECKING:
    from tessera.forecast.engine import SeriesForecaster

GIB_BYTES = 1 << 30
POLICIES = ("reactive", "predictive", "oracle", "learned")
#: Rejections that count as an SLA miss ("rejected for capacity").
CAPACITY_REJECTIONS = {RejectReason.too_large, RejectReason.insufficient_capacity, RejectReason.no_resources,
                       RejectReason.deadline_passed, RejectReason.spread_impossible}
#: Quantile levels the controller's forecasts track (headroom levels between them are
#: interpolated, as the live scheduler's ``quantile_at`` does).
FORECAST_LEVELS = (0.05, 0.5, 0.8, 0.9, 0.95, 0.99)
# The heap's event kinds: at one instant a lower kind comes first. Arrivals are not among
# them: they are read from the trace and come before every kind (``run``).
_RELEASE, _READY, _TICK, _DUE, _MOVE_START, _MOVE_DONE, _FAIL = 1, 2, 3, 4, 5, 6, 7


@dataclass
class SimConfig:
    policy: str = "predictive"
    sla_targets: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLA_TARGETS))
    interval_s: float = 300.0
    buffer_vcpu: float = 0.0          # reactive: the static warm buffer
    #: Predictive: the most urgent tier's headroom quantile (the others follow by the
    #: newsvendor); None: every urgent tier at its newsvendor quantile.
    quantile: float | None = None
    #: What running short costs per vCPU-hour, by tier (the newsvendor's shortage cost).
    shortage_cost: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_SHORTAGE_COST))
    #: How long an idle partner VM stays open before it is closed, as a share of its
    #: partner's ``idle_close_s`` (the learned policy chooses it per context instead).
    idle_close_share: float = 1.0
    #: Which partner VMs the controller opens first: the cheapest per vCPU (False), or those
    #: usable soonest, the cheapest among them (True; the learned policy chooses per context
    #: when the partners' lead times differ).
    prefer_fast_partners: bool = False
    seed: int = 0
    #: The learned policy's River bandit (``tuning.BANDITS``).
    bandit: str = "epsilon-greedy"
    #: What one SLA miss costs in the learned policy's reward (base currency).
    miss_penalty: Decimal = Decimal("1.00")
    #: Migration: the planner (tessera.migration) evacuates failed resources at once and
    #: consolidates every ``migrate_every_s``; a move takes ``move_s`` from reservation to
    #: release and costs ``move_cost`` per replica (before tier weights).
    migrate: bool = False
    migrate_every_s: float = 3600.0
    move_s: float = 60.0
    move_cost: Decimal = Decimal("0.01")
    #: Resources that fail mid-run: (seconds from the start, resource id).
    failures: tuple[tuple[float, str], ...] = ()
    #: Predictive and learned: the models the demand engine blends (as the forecast
    #: worker's ``TESSERA_FORECAST_MODELS``). Fewer models forecast less well but faster:
    #: on a sparse trace, where the control intervals outnumber the requests, most of a
    #: predictive run is the demand engine (docs/simulate.md, Limits).
    forecast_models: tuple[str, ...] = MODEL_NAMES

    def __post_init__(self):
        check_models(self.forecast_models)


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    cost_rate: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    warm_vcpu: list[float] = field(default_factory=list)
    used_vcpu: list[float] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)
    band: list[tuple[float, float, float]] = field(default_factory=list)   # forecast lo, mid, hi


@dataclass
class SimResult:
    policy: str
    requests: int
    cost_total: Decimal
    cost_by_provider: dict[str, Decimal]
    sla_miss_rate: float
    sla_miss_rate_by_tier: dict[str, float]
    mean_utilization: float
    migrations: int
    wall_s: float
    placed: dict[str, list[tuple[str, int]]]
    buffer_vcpu: float = 0.0
    timeline: Timeline = field(default_factory=Timeline)
    tuner_choices: dict[str, int] = field(default_factory=dict)
    #: Longest time from a resource failing to the last of its work finishing its move
    #: (None: nothing failed), and replicas still on failed resources at the end.
    evacuation_s_max: float | None = None
    stranded: int = 0
    #: (time, replicas on failed resources) at each control tick after a failure
    stranded_over_time: list[tuple[float, int]] = field(default_factory=list)
    migration_reasons: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"policy": self.policy, "requests": self.requests, "cost_total": format(self.cost_total, "f"),
                "cost_by_provider": {k: format(v, "f") for k, v in sorted(self.cost_by_provider.items())},
                "sla_miss_rate": round(self.sla_miss_rate, 6),
                "sla_miss_rate_by_tier": {k: round(v, 6) for k, v in self.sla_miss_rate_by_tier.items()},
                "mean_utilization": round(self.mean_utilization, 6), "migrations": self.migrations,
                "wall_s": round(self.wall_s, 3), "buffer_vcpu": self.buffer_vcpu,
                "tuner_choices": self.tuner_choices, "migration_reasons": self.migration_reasons,
                "evacuation_s_max": None if self.evacuation_s_max is None else round(self.evacuation_s_max, 3),
                "stranded_replicas": self.stranded}


@dataclass
class _Vm:
    resource_id: str
    provider: str
    instance_type: str
    vcpu: float
    gpu: int
    #: Its list price per hour as a float, for the timeline's cost rate (drawn, not billed).
    list_price: float = 0.0
    state: str = "closed"             # closed | opening | open
    opened_at: float = 0.0
    idle_since: float = 0.0


def offered_load(trace: Sequence[TracedRequest], interval_s: float, end: float) -> np.ndarray:
    """vCPU submitted and not yet finished, peak per interval (the demand series)."""
    n = int(end // interval_s) + 2
    diff = np.zeros(n + 1)
    for r in trace:
        v = r.request.per_replica.vcpu * r.request.replicas
        a, b = int(r.at // interval_s), int((r.at + r.duration_s) // interval_s)
        diff[a] += v
        diff[min(b + 1, n)] -= v
    return np.cumsum(diff)[:n]


class Simulation:
    def __init__(self, fleet: Fleet, agreements: dict[str, Agreement], trace: Sequence[TracedRequest],
                 start: datetime, config: SimConfig):
        if config.policy not in POLICIES:
            raise ValueError(f"policy {config.policy!r} unknown; use one of {', '.join(POLICIES)}")
        self.fleet, self.trace, self.start, self.cfg = fleet, list(trace), start, config
        self.agreements = instance_agreements(fleet, agreements)
        self.start_us = int(start.timestamp() * US)
        self.book = PriceBook(dict(self.agreements), fx=fleet.fx)
        self.core = Scheduler(prices=self.book, aging_s=config.sla_targets.get("silver", 600.0))
        self.core.reprice(self.start_us)
        self.billing = BillingState(dict(self.agreements), grace_s=0.0)
        # Here VMs open and close by the controller's decisions, and the simulation bills them
        # from open to close itself (instance_usage); the live lifecycle's stand-in (first
        # placement to last release) would bill them twice.
        self.billing.lifecycle.bills_whole_vm = lambda partner, instance_type: False
        # The simulation reports totals; the per-day, per-tenant detail (FOCUS rows) would
        # only cost time.
        self.billing.ledger.detail = None
        self.vms: dict[str, _Vm] = {}
        # The VMs not closed (opening or open), and each VM's place in ``vms``: a control tick
        # walks these few in the fleet's order instead of every VM of the fleet.
        self._live: dict[str, _Vm] = {}
        self._live_ordered: list[_Vm] | None = None      # ``_live`` in the fleet's order, kept until it changes
        self._place_of: dict[str, int] = {}
        self.heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._dt_at, self._dt_value = 0.0, start
        self.submitted: dict[str, tuple[float, str]] = {}     # request id -> (submit time, tier)
        self.waits: dict[str, float] = {}
        self.missed: set[str] = set()
        self.placed: dict[str, list[tuple[str, int]]] = {}
        self.instance_usage: list[UsageRecord] = []
        self.timeline = Timeline()
        self.end = max((r.at + r.duration_s for r in self.trace), default=0.0) + config.interval_s
        self.load = offered_load(self.trace, config.interval_s, self.end)
        # Tiers whose wait target is shorter than the partners' lead time cannot wait for a VM
        # opened when they arrive: capacity for their growth must be warm ahead (the others
        # are served by opening when work waits, which costs nothing while it waits).
        lead = max((fleet.timing_of(v.spec.provider).lead_time_s for v in fleet.offers), default=0.0)
        self.lead = lead
        self.urgent = frozenset(t for t in TIER_RANK if config.sla_targets.get(t, math.inf) < lead)
        self.urgent_load = offered_load([r for r in self.trace if r.request.sla_tier.value in self.urgent],
                                        config.interval_s, self.end)
        # most urgent first (the tuned quantile is the first one's)
        self.urgent_tiers = sorted(self.urgent, key=TIER_RANK.__getitem__)
        self.tier_load = {t: offered_load([r for r in self.trace if r.request.sla_tier.value == t],
                                          config.interval_s, self.end) for t in self.urgent_tiers}
        # Capacity asked for now is usable after the lead time: the controller provisions for
        # the intervals from the next one to the one the longest lead time reaches into.
        self.steps = max(1, math.ceil(max((fleet.timing_of(v.spec.provider).lead_time_s for v in fleet.offers),
                                          default=0.0) / config.interval_s))
        self.forecasters: dict[str, SeriesForecaster] = {}
        if config.policy in ("predictive", "learned"):
            # Imported here: the demand engine brings River and SciPy (about 1.3 s of a
            # process's start), which reactive and oracle runs never use.
            from tessera.forecast.engine import ForecastConfig, SeriesForecaster, _level_key
            season = max(2, int(round(86_400 / config.interval_s)))
            self.forecasters = {t: SeriesForecaster(ForecastConfig(
                horizon=self.steps + 1, quantiles=FORECAST_LEVELS, interval_s=int(config.interval_s), season=season,
                models=config.forecast_models))
                for t in self.urgent_tiers}
            # each level's column in the forecast's values (read every tick)
            self._level_col = {_level_key(level): i for i, level in enumerate(FORECAST_LEVELS)}
        self.idle_cost = Decimal("0.03")      # the newsvendor's; priced from the fleet in ``run``
        # A knob is learnt only where it can change something: the partner preference where
        # partners differ in lead time, the consolidation threshold where the planner runs.
        fast_or_cheap = len({fleet.timing_of(v.spec.provider).lead_time_s for v in fleet.offers}) > 1
        knobs = ((HEADROOM_QUANTILE, IDLE_CLOSE_SHARE) + ((PARTNER_PREFERENCE,) if fast_or_cheap else ())
                 + ((CONSOLIDATION_COST_FACTOR,) if config.migrate else ()))
        self.tuner = KnobTuner(knobs, seed=config.seed, policy=config.bandit) if config.policy == "learned" else None
        # the knobs' settings for the current control interval (the learned policy's choice)
        self._quantile, self._idle_share, self._move_factor = config.quantile, config.idle_close_share, 1.0
        self._levels_at: dict[float | None, dict[str, float]] = {}
        self._columns: dict[float, tuple[int, int, float]] = {}
        self._prefer_fast = config.prefer_fast_partners
        self._util_samples: list[float] = []
        # constant over the run, read every control tick
        self._own_vcpu = sum(r.spec.capacity.vcpu for r in fleet.own)
        self._own_rate = sum(float(r.spec.price_per_hour) for r in fleet.own)
        self._providers = {OWN, *(e.spec.provider for e in fleet.offers)}
        self._ranked: dict[tuple[bool, bool], list[_Vm]] = {}
        # the learned policy's reward: cost and misses at the last tick, closed VMs' cost
        self._last_cost, self._last_missed, self._closed_cost = Decimal(0), 0, Decimal(0)
        # migration
        self.budget = DisruptionBudget(move_cost=config.move_cost)
        self.in_flight: set[str] = set()                        # allocations being moved
        self.pending_holds: dict[str, list[float]] = {}         # targets reserved, reservation not applied yet
        self.failed_at: dict[str, float] = {}
        self.evacuations: list[float] = []
        self.moves_done: dict[str, int] = defaultdict(int)
        self._next_migration = config.migrate_every_s
        self._keep_free = 0.0
        self._moves = 0
        self._unchanged: tuple | None = None     # the state a plan found nothing to do in
        self._stranded_at: list[tuple[float, int]] = []
        # Recent GPU arrivals per interval of the tiers that cannot wait comfortably for a VM
        # to open (target under twice the lead time): the GPUs consolidation keeps free.
        self.tight = frozenset(t for t in TIER_RANK if config.sla_targets.get(t, math.inf) < 2 * self.lead)
        self._urgent_gpu: dict[int, float] = defaultdict(float)

    # -- the clock --------------------------------------------------------------
    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, kind, self._seq, payload))

    def _dt(self, t: float) -> datetime:
        # asked for several times per instant (arrival, batch, stamps): the last one is kept
        if t != self._dt_at:
            # timedelta(0, t) is timedelta(seconds=t) without parsing a keyword (a third faster)
            self._dt_at, self._dt_value = t, self.start + timedelta(0, t)
        return self._dt_value

    def run(self) -> SimResult:
        with _collect_rarely():
            return self._run()

    def _run(self) -> SimResult:
        wall0 = time.perf_counter()
        for e in (*self.fleet.own, *self.fleet.offers):
            self.core.apply(ResourceDiscovered(resource_id=e.resource_id, spec=e.spec, event_time=self.start))
        # Own nodes are in service: the price book already prices them at their marginal cost
        # (capex is sunk), exactly as the live scheduler does.
        # The newsvendor's idle cost: a vCPU-hour of the cheapest partner capacity.
        self.idle_cost = min((self.book.opening_price(self.core.resources[e.resource_id].offer, self.start_us)
                              / Decimal(repr(e.spec.capacity.vcpu)) for e in self.fleet.offers
                              if e.spec.capacity.vcpu > 0), default=self.idle_cost)
        for e in self.fleet.offers:
            s = e.spec
            self.vms[e.resource_id] = _Vm(e.resource_id, s.provider, s.instance_type, s.capacity.vcpu, s.capacity.gpu,
                                          float(self.core.resources[e.resource_id].offer.list_price))
            self._place_of[e.resource_id] = len(self._place_of)
            self._health(e.resource_id, False, 0.0)
        for at, rid in self.cfg.failures:
            if rid not in self.core.resources:
                raise ValueError(f"failure of {rid!r}: no such resource in the fleet")
            self._push(at, _FAIL, rid)
        t = 0.0
        while t <= self.end:
            self._push(t, _TICK, None)
            t += self.cfg.interval_s
        # Arrivals are read from the trace in time order instead of passing through the heap
        # (a third of its traffic): at one instant they come before every kind of event the
        # heap holds, and in the trace's order (the sort is stable).
        arrivals = sorted(self.trace, key=lambda r: r.at)
        heap, queue, i, n = self.heap, self.core.queue, 0, len(arrivals)
        while i < n or heap:
            now = arrivals[i].at if i < n and (not heap or arrivals[i].at <= heap[0][0]) else heap[0][0]
            first = i
            while i < n and arrivals[i].at == now:
                self._arrive(arrivals[i], now)
                i += 1
            while heap and heap[0][0] == now:
                _, kind, _, payload = heapq.heappop(heap)
                self._handle(kind, payload, now)
            if len(queue):
                self._batch(now)
                # A request that still waits opens capacity for itself once it is due (most
                # are placed on arrival and need no such event).
                for r in arrivals[first:i]:
                    rid = r.request.request_id
                    if rid in queue:
                        due = self._due(rid)
                        if due > now:
                            self._push(due, _DUE, rid)
                if len(queue):
                    self._open_for_waiting(now)
        return self._result(time.perf_counter() - wall0)

    def _arrive(self, r: TracedRequest, now: float) -> None:
        self.submitted[r.request.request_id] = (now, r.request.sla_tier.value)
        if r.request.per_replica.gpu and r.request.sla_tier.value in self.tight:
            self._urgent_gpu[int(now // self.cfg.interval_s)] += r.request.per_replica.gpu * r.request.replicas
        self.core.submit(r.request, now, self._dt(now))

    def _handle(self, kind: int, payload, now: float) -> None:
        if kind == _RELEASE:
            for e in self.core.release(payload, "completed", stamp=self._dt(now)):
                self.billing.apply(e)
                for p in e.placements:              # a VM's idle time counts from its last work
                    if p.resource_id in self.vms:
                        self.vms[p.resource_id].idle_since = now
        elif kind == _READY:
            vm = self.vms[payload]
            if vm.state == "opening":
                vm.state, vm.idle_since = "open", now
                self.core.set_running(vm.resource_id, True)
                self._health(vm.resource_id, True, now)
        elif kind == _TICK:
            self._control(now)
        elif kind == _DUE and payload in self.core.queue:
            self._open_for_waiting(now)
        elif kind == _FAIL:
            self.failed_at.setdefault(payload, now)
            self._health(payload, False, now)
            if self.cfg.migrate:
                self._migrate(now, consolidate=False)
        elif kind == _MOVE_START:
            self._move_start(payload, now)
        elif kind == _MOVE_DONE:
            self._move_done(payload, now)

    def _health(self, rid: str, healthy: bool, now: float) -> None:
        self.core.apply(HealthChanged(resource_id=rid, event_time=self._dt(now),
                                      status=HealthStatus.healthy if healthy else HealthStatus.unhealthy,
                                      previous=HealthStatus.unhealthy if healthy else HealthStatus.healthy,
                                      reason="simulated open" if healthy else "simulated closed"))

    def _batch(self, now: float) -> None:
        dt = self._dt(now)
        for e in self.core.run_batch(now, dt, stamp=dt):
            if isinstance(e, AllocationPlaced):
                rid = e.request_id
                sub, tier = self.submitted[rid]
                self.waits[rid] = now - sub
                if now - sub > self.cfg.sla_targets.get(tier, math.inf):
                    self.missed.add(rid)
                self.placed[rid] = [(p.resource_id, p.replicas) for p in e.placements]
                self.billing.apply(e)       # stamped with the batch's (virtual) time
                self._push(now + (e.expires_at - dt).total_seconds() if e.expires_at else self.end, _RELEASE,
                           e.allocation_id)
            elif isinstance(e, AllocationRejected) and e.code in CAPACITY_REJECTIONS:
                self.missed.add(e.request_id)

    # -- the controller -----------------------------------------------------------
    def _demand_now(self) -> float:
        queued = sum(q.request.per_replica.vcpu * q.request.replicas for q in self.core.queue)
        return sum(self.core.vcpu_in_use_by_tier().values()) + queued

    def _urgent_now(self) -> dict[str, float]:
        """vCPU each urgent tier uses or waits for now."""
        now = {t: v for t, v in self.core.vcpu_in_use_by_tier().items() if t in self.urgent}
        for q in self.core.queue:
            tier = q.request.sla_tier.value
            if tier in self.urgent:
                now[tier] = now.get(tier, 0.0) + q.request.per_replica.vcpu * q.request.replicas
        return now

    def _levels(self) -> dict[str, float]:
        """Each urgent tier's headroom quantile: the newsvendor's, or with a quantile chosen
        (``--quantile``, the learned policy) that one for the most urgent tier and the
        others where the newsvendor puts them beside it. (Kept per quantile chosen: asked
        every interval, and the costs behind it are fixed for the run.)"""
        levels = self._levels_at.get(self._quantile)
        if levels is None:
            costs = self.cfg.shortage_cost
            levels = self._levels_at[self._quantile] = {
                t: tier_level(costs, self.idle_cost, t, self._quantile) for t in self.urgent_tiers}
        return levels

    def _columns_at(self, level: float) -> tuple[int, int, float]:
        columns = self._columns.get(level)
        if columns is None:
            columns = self._columns[level] = _level_columns(FORECAST_LEVELS, level)
        return columns

    def _target(self, now: float, step: int) -> tuple[float, tuple[float, float, float]]:
        """vCPU to keep warm: demand now, plus the growth of urgent demand expected before
        capacity opened now would be usable (reactive: a static buffer instead)."""
        cfg = self.cfg
        demand = self._demand_now()
        band = (math.nan, math.nan, math.nan)
        if cfg.policy == "reactive":
            return demand + cfg.buffer_vcpu, band
        if not self.urgent:
            return demand, band
        if cfg.policy == "oracle":
            ahead = self.urgent_load[step + 1:step + 1 + self.steps]
            peak = float(ahead.max()) if len(ahead) else 0.0
            return demand + max(0.0, peak - sum(self._urgent_now().values())), band
        if step == 0:
            return demand, band
        now_by_tier = self._urgent_now()
        growth, lo, mid, hi = 0.0, 0.0, 0.0, 0.0
        column = self._level_col
        for tier, level in self._levels().items():
            values = self.forecasters[tier].forecast().values
            # horizon 1 is the interval now under way (covered by demand now); then the ones ahead
            peak = _peak_at(values[1:], self._columns_at(level))
            growth += max(0.0, peak - now_by_tier.get(tier, 0.0))
            first = values[0]
            lo, mid, hi = lo + first[column["0.05"]], mid + first[column["0.5"]], hi + first[column["0.95"]]
        # the band drawn is the urgent tiers' bands added up (exact with one urgent tier)
        return demand + growth, (float(lo), float(mid), float(hi))

    def _control(self, now: float) -> None:
        self._ranked.clear()           # prices may change below (standings, a new month)
        step = int(now // self.cfg.interval_s)
        if step > 0:
            for tier, forecaster in self.forecasters.items():
                forecaster.learn(self.start.timestamp() + (step - 1) * self.cfg.interval_s,
                                 float(self.tier_load[tier][step - 1]))
        if self.tuner is not None:
            self.tuner.reward(self._reward_since_last(now))
            knobs = self.tuner.choose_settings(self._dt(now))
            self._quantile, self._idle_share = knobs[HEADROOM_QUANTILE.name], knobs[IDLE_CLOSE_SHARE.name]
            self._move_factor = knobs.get(CONSOLIDATION_COST_FACTOR.name, 1.0)
            self._prefer_fast = bool(knobs.get(PARTNER_PREFERENCE.name, self.cfg.prefer_fast_partners))
        target, band = self._target(now, step)
        self._standings(now)
        own_vcpu = self._own_vcpu
        warm = own_vcpu + sum(v.vcpu for v in self._not_closed())
        if target > warm:
            self._open(target - warm, now, gpu=False)
        if len(self.core.queue):
            self._open_for_waiting(now)
        elif target < warm:
            self._close(warm - target, now)
        self._keep_free = max(0.0, target - self._demand_now())
        if self.failed_at:
            self._stranded_at.append((now, self._stranded() + self._moving_off_failed()))
        if self.cfg.migrate:
            consolidate = now >= self._next_migration
            if consolidate:
                self._next_migration = now + self.cfg.migrate_every_s
            if consolidate or self._stranded():
                self._migrate(now, consolidate)
        used = sum(self.core.vcpu_in_use_by_tier().values())
        live = self._not_closed()
        warm = own_vcpu + sum(v.vcpu for v in live if v.state == "open")
        tl = self.timeline
        tl.t.append(now)
        tl.warm_vcpu.append(warm)
        tl.used_vcpu.append(used)
        tl.demand.append(float(self.urgent_load[step]) if step < len(self.urgent_load) else 0.0)
        tl.band.append(band)
        rates: dict[str, float] = defaultdict(float)
        if self.fleet.own:
            rates[OWN] = self._own_rate
        for v in live:
            rates[v.provider] += v.list_price
        for p in self._providers:
            tl.cost_rate[p].append(rates.get(p, 0.0))
        if warm > 0:
            self._util_samples.append(used / warm)

    def _standings(self, now: float) -> None:
        """Feed billing's month to date back into the price book (tiers, commitments)."""
        partners = [p for p, a in self.agreements.items() if a.monthly_commit or a.tiers]
        if not partners:
            return
        t_us = self.start_us + int(now * US)
        period = period_of(t_us)
        view = self.billing.view()          # one month-to-date view for every partner
        usage = view.usage
        for partner in partners:
            units = {u: n for (p, per, u), n in usage.items() if p == partner and per == period}
            inv = view.invoice(partner, period)
            spend = sum(l.numerator for l in inv.lines if l.charge_category != "commitment_shortfall")
            self.book.set_standing(partner, Standing(period, units, spend // (3_600_000_000 * 1000)))
            self.core.reprice(t_us, partner)

    def _candidates(self, gpu: bool) -> list[_Vm]:
        """Closed VMs, cheapest opening price per vCPU (per GPU for GPU work) first, or when
        fast partners are preferred, soonest usable first and the cheapest of those. The
        ranking is kept until prices may have changed (each control tick)."""
        fast = self._prefer_fast
        ranked = self._ranked.get((gpu, fast))
        if ranked is None:
            t_us = self.core._now_us
            pool = [v for v in self.vms.values() if (v.gpu > 0) == gpu]
            ranked = self._ranked[(gpu, fast)] = sorted(pool, key=lambda v: (
                self.fleet.timing_of(v.provider).lead_time_s if fast else 0.0,
                self.book.opening_price(self.core.resources[v.resource_id].offer, t_us)
                / Decimal(repr(max(v.gpu if gpu else v.vcpu, 1e-9))), v.resource_id))
        return [v for v in ranked if v.state == "closed"]

    def _not_closed(self) -> list[_Vm]:
        """The VMs opening or open, in the fleet's order (a control tick asks several times;
        VMs open and close far more rarely)."""
        if self._live_ordered is None:
            self._live_ordered = sorted(self._live.values(), key=lambda v: self._place_of[v.resource_id])
        return self._live_ordered

    def _open_vm(self, vm: _Vm, now: float) -> None:
        vm.state, vm.opened_at = "opening", now
        self._live[vm.resource_id] = vm
        self._live_ordered = None
        self._push(now + self.fleet.timing_of(vm.provider).lead_time_s, _READY, vm.resource_id)

    def _open(self, vcpu: float, now: float, gpu: bool) -> None:
        for vm in self._candidates(gpu):
            if vcpu <= 0:
                break
            self._open_vm(vm, now)
            vcpu -= vm.vcpu

    def _due(self, request_id: str) -> float:
        """When a waiting request must have capacity opened for it: its wait target less the
        lead time. Before that it waits for capacity to free up, which costs nothing."""
        sub, tier = self.submitted[request_id]
        return sub + self.cfg.sla_targets.get(tier, math.inf) - self.lead

    def _open_for_waiting(self, now: float) -> None:
        """Work that waits opens capacity for itself once it is due (``_due``): per due request
        (in the queue's order), the cheapest closed VM per unit that holds one replica, until
        VMs opening cover its replicas."""
        coming = [v for v in self._not_closed() if v.state == "opening"]
        for q in self.core.queue.ordered(now):
            if self._due(q.request.request_id) > now:
                continue        # it can still wait for capacity to free up at no cost
            per = q.request.per_replica
            need = (per.vcpu, per.memory_bytes, per.gpu)
            left = q.request.replicas
            for v in coming:
                cap = self.core.resources[v.resource_id].capacity
                if left > 0 and _fits(need, cap):
                    left -= _how_many(need, cap)
            if left <= 0:
                continue
            gpu = per.gpu > 0
            for vm in self._candidates(gpu):
                cap = self.core.resources[vm.resource_id].capacity
                if not _fits(need, cap):
                    continue
                self._open_vm(vm, now)
                coming.append(vm)
                left -= _how_many(need, cap)
                if left <= 0:
                    break

    def _close(self, surplus: float, now: float) -> None:
        t_us = self.core._now_us
        # Only VMs idle for longer than they are kept may close: the others are left out
        # before the ranking (which prices every VM it sorts), not skipped after it.
        idle = [v for v in self._not_closed() if v.state == "open" and not self._busy(v.resource_id)
                and now - v.idle_since >= self.fleet.timing_of(v.provider).idle_close_s * self._idle_share]
        idle.sort(key=lambda v: -self.book.opening_price(self.core.resources[v.resource_id].offer, t_us)
                  / Decimal(repr(max(v.vcpu, 1e-9))))
        for v in idle:
            if v.vcpu > surplus:
                continue
            self._close_vm(v, now)
            surplus -= v.vcpu

    def _busy(self, rid: str) -> bool:
        return any(u > 1e-9 for u in self.core.resources[rid].used)

    def _close_vm(self, v: _Vm, now: float) -> None:
        rec = self._instance_record(v, now)
        self.instance_usage.append(rec)
        self._closed_cost += self._vm_cost(rec.resource_id, rec.start_us, rec.end_us)
        v.state = "closed"
        del self._live[v.resource_id]
        self._live_ordered = None
        self.core.set_running(v.resource_id, False)
        self._health(v.resource_id, False, now)

    def _instance_record(self, v: _Vm, end: float) -> UsageRecord:
        return UsageRecord(event_id=f"vm:{v.resource_id}:{v.opened_at}", partner=v.provider, allocation_id="",
                           resource_id=v.resource_id, start_us=self.start_us + int(v.opened_at * US),
                           end_us=self.start_us + int(end * US), vcpu_milli=0, memory_milli=0, gpu_milli=0,
                           instance_type=v.instance_type)

    def _reward_since_last(self, now: float) -> float:
        cost = self._running_cost(now)
        d_cost = cost - self._last_cost
        d_missed = len(self.missed) - self._last_missed
        self._last_cost, self._last_missed = cost, len(self.missed)
        return -float(d_cost + self.cfg.miss_penalty * d_missed)

    def _vm_cost(self, resource_id: str, start_us: int, end_us: int) -> Decimal:
        return self.core.resources[resource_id].offer.list_price * (Decimal(end_us - start_us) / (3600 * US))

    def _running_cost(self, now: float) -> Decimal:
        """List-price cost of the VMs opened so far, up to ``now``: the closed ones are kept
        as a running total (``_closed_cost``), so a tick costs what is open, not the run."""
        total = self._closed_cost
        for v in self._not_closed():
            hours = Decimal(repr(now - v.opened_at)) / 3600
            total += self.core.resources[v.resource_id].offer.list_price * hours
        return total

    # -- migration ------------------------------------------------------------------
    def _moving_off_failed(self) -> int:
        return sum(k for a in self.core.allocations.values() if a.allocation_id in self.in_flight
                   for rid, k in a.placements if rid in self.failed_at)

    def _stranded(self) -> int:
        """Replicas on failed resources that no move is taking away."""
        return sum(k for a in self.core.allocations.values() if a.allocation_id not in self.in_flight
                   for rid, k in a.placements if rid in self.failed_at)

    def _migrate(self, now: float, consolidate: bool) -> None:
        """Plan on the live table, as the migration agent does, and start the moves. Closed
        partner VMs count as capacity the plan may open (the move starts once the VM is up)."""
        state = (self.core.epoch, len(self.core.allocations), consolidate, self._move_factor)
        if state == self._unchanged:
            return      # nothing happened since a plan found nothing to do
        dt = self._dt(now)
        # VMs closed or still opening are capacity the plan may use (a move onto one starts when it is up)
        closed = {v.resource_id for v in self.vms.values() if v.state != "open"}
        # Capacity to keep free: the controller's warm target less demand now (vCPU), and the
        # most GPUs urgent work asked for within one planning period over the past day (the
        # controller forecasts no GPUs; this keeps free what a recent burst needed until the
        # next plan).
        step = int(now // self.cfg.interval_s)
        day, span = int(86_400 // self.cfg.interval_s), max(1, int(self.cfg.migrate_every_s // self.cfg.interval_s))
        per = [self._urgent_gpu.get(i, 0.0) for i in range(max(0, step - day), step + 1)]
        keep_gpu = max((sum(per[i:i + span]) for i in range(len(per))), default=0.0)
        snap = live_snapshot(self.core, dt, busy=self.in_flight, openable=closed,
                             held={r: tuple(h) for r, h in self.pending_holds.items()},  # type: ignore[misc]
                             forecast=((dt, self._keep_free, keep_gpu),))
        budget = self.budget
        if consolidate and self._move_factor != 1.0:     # the learned consolidation threshold
            budget = replace(budget, move_cost=self.cfg.move_cost * Decimal(repr(self._move_factor)))
        result = plan(snap, budget if consolidate else budget.evacuations_only())
        self._unchanged = None if result.moves else state
        chain = now            # with an ordered plan, each move starts once the one before it is done
        for mv in result.moves:
            self._moves += 1
            a = self.core.allocations[mv.allocation_id]
            self.in_flight.add(mv.allocation_id)
            hold = self.pending_holds.setdefault(mv.to_resource, [0.0, 0.0, 0.0])
            for d in range(3):
                hold[d] += a.demand[d] * mv.replicas
            vm = self.vms.get(mv.to_resource)
            start = now
            if vm is not None and vm.state == "closed":
                self._open_vm(vm, now)
                start = now + self.fleet.timing_of(vm.provider).lead_time_s
            elif vm is not None and vm.state == "opening":
                start = max(now, vm.opened_at + self.fleet.timing_of(vm.provider).lead_time_s)
            if result.in_order:
                start = chain = max(start, chain)
                chain += self.cfg.move_s + 1e-3
            self._push(start, _MOVE_START, (f"sim-mig-{self._moves}", mv))

    def _migration_fields(self, mid: str, mv) -> dict:
        target = self.core.resources.get(mv.to_resource)
        return dict(migration_id=mid, allocation_id=mv.allocation_id, source_resource_id=mv.from_resource,
                    target_resource_id=mv.to_resource, target_provider=target.provider if target else "",
                    replicas=mv.replicas)

    def _move_start(self, payload, now: float) -> None:
        mid, mv = payload
        a = self.core.allocations.get(mv.allocation_id)
        hold = self.pending_holds.get(mv.to_resource)
        if hold is not None and a is not None:
            for d in range(3):
                hold[d] = max(0.0, hold[d] - a.demand[d] * mv.replicas)
        st = self.core.resources.get(mv.to_resource)
        if a is None or st is None or any(f + 1e-9 < a.demand[d] * mv.replicas for d, f in enumerate(st.free[:3])):
            # finished while its target was opening, or new work took the room the plan saw:
            # the move is dropped before it reserves anything (the next plan looks again)
            self.in_flight.discard(mv.allocation_id)
            return
        e = MigrationProgress(step="reserve_target", event_time=self._dt(now), **self._migration_fields(mid, mv))
        self.core.apply(e)
        self.billing.apply(e)
        self._push(now + self.cfg.move_s, _MOVE_DONE, payload)

    def _move_done(self, payload, now: float) -> None:
        mid, mv = payload
        dt = self._dt(now)
        e = MigrationDone(cut_over_at=dt, event_time=dt, **self._migration_fields(mid, mv))
        self.core.apply(e)
        self.billing.apply(e)
        self.in_flight.discard(mv.allocation_id)
        self.moves_done[mv.reason] += 1
        if mv.from_resource in self.failed_at:
            self.evacuations.append(now - self.failed_at[mv.from_resource])
        src = self.vms.get(mv.from_resource)
        if src is not None and src.state == "open" and not self._busy(src.resource_id):
            # Emptied: idle from now. The controller closes it as it closes any idle VM, once
            # its warm target no longer needs it (the forecast decides, not the move).
            src.idle_since = now

    # -- the result -----------------------------------------------------------------
    def _result(self, wall: float) -> SimResult:
        end = self.end
        for v in self.vms.values():
            if v.state != "closed":
                self.instance_usage.append(self._instance_record(v, end))
                v.state = "closed"
                del self._live[v.resource_id]
        self._live_ordered = None
        ledger = self.billing.view()
        for rec in self.instance_usage:
            ledger.add(rec)
        by_provider: dict[str, Decimal] = defaultdict(Decimal)
        for partner, period in ledger.periods():
            inv = ledger.invoice(partner, period)
            by_provider[partner] += self.fleet.fx.to_base(Decimal(inv.total), inv.currency)
        hours = Decimal(repr(end)) / 3600
        own = sum((r.spec.price_per_hour for r in self.fleet.own), Decimal(0)) * hours
        if own:
            by_provider[OWN] = own.quantize(Decimal("0.01"))
        # requests still waiting at the end: a miss if they waited past their target
        for q in self.core.queue:
            rid = q.request.request_id
            sub, tier = self.submitted[rid]
            if end - sub > self.cfg.sla_targets.get(tier, math.inf):
                self.missed.add(rid)
        n = len(self.trace)
        by_tier: dict[str, list[int]] = {t: [0, 0] for t in TIER_RANK}
        for rid, (_, tier) in self.submitted.items():
            by_tier[tier][0] += 1
            by_tier[tier][1] += rid in self.missed
        return SimResult(
            policy=self.cfg.policy, requests=n, cost_total=sum(by_provider.values(), Decimal(0)),
            cost_by_provider=dict(by_provider), sla_miss_rate=len(self.missed) / n if n else 0.0,
            sla_miss_rate_by_tier={t: m / c for t, (c, m) in by_tier.items() if c},
            mean_utilization=float(np.mean(self._util_samples)) if self._util_samples else 0.0,
            migrations=sum(self.moves_done.values()), wall_s=wall, placed=self.placed,
            buffer_vcpu=self.cfg.buffer_vcpu, timeline=self.timeline,
            tuner_choices=self.tuner.choices() if self.tuner else {},
            evacuation_s_max=max(self.evacuations) if self.evacuations else (0.0 if self.failed_at else None),
            stranded=self._stranded() + self._moving_off_failed(), stranded_over_time=self._stranded_at,
            migration_reasons=dict(self.moves_done))


def _level_columns(levels: Sequence[float], level: float) -> tuple[int, int, float]:
    """The columns of a forecast's ``levels`` around quantile ``level`` and the second's
    weight: one column when it is a level or outside their range (clamped)."""
    i = bisect_left(levels, level)
    if i < len(levels) and levels[i] == level:
        return i, i, 0.0
    if i == 0 or i == len(levels):
        j = min(i, len(levels) - 1)
        return j, j, 0.0
    return i - 1, i, (level - levels[i - 1]) / (levels[i] - levels[i - 1])


def _peak_at(values: np.ndarray, columns: tuple[int, int, float]) -> float:
    """The largest value over the rows of forecast ``values`` (horizons x levels) at the
    quantile whose ``_level_columns`` are given, linear between its two columns (0 without
    rows): in floats, on the few rows of a tick's forecast, where NumPy calls cost more
    than the values."""
    a, b, w = columns
    rows = values.tolist()
    if not rows:
        return 0.0
    if a == b:
        return max(r[a] for r in rows)
    return max(r[a] * (1.0 - w) + r[b] * w for r in rows)


def _fits(need: tuple[float, int, int], cap: tuple[float, ...]) -> bool:
    return need[0] <= cap[0] + 1e-9 and need[1] / GIB_BYTES <= cap[1] + 1e-9 and need[2] <= cap[2] + 1e-9


def _how_many(need: tuple[float, int, int], cap: tuple[float, ...]) -> int:
    """Replicas of ``need`` one empty resource of capacity ``cap`` holds."""
    ratios = [c / x for x, c in ((need[0], cap[0]), (need[1] / GIB_BYTES, cap[1]), (need[2], cap[2])) if x > 0]
    return max(1, int(min(ratios) + 1e-9)) if ratios else 1


#: The cyclic collector's thresholds while a simulation runs (those of Tessera's services,
#: ``tessera.streams.collector``, which explains them): a run holds a trace's worth of live
#: allocations and builds a dozen objects per request, and under the default thresholds
#: the collector re-scanned them in about 1,100 collections per 27,000 requests, a sixth
#: of the run (measured with ``gc.callbacks``). The state it builds forms no cycles to wait
#: for: memory stays flat.
SIMULATION_GC = (50_000, 20, 100)


@contextmanager
def _collect_rarely():
    before = gc.get_threshold()
    gc.set_threshold(*SIMULATION_GC)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def simulate(fleet: Fleet, agreements: dict[str, Agreement], trace: Sequence[TracedRequest], start: datetime,
             config: SimConfig, buffers: Sequence[float] = (0, 4, 8, 16, 32, 64, 128, 256, 512),
             miss_target: float = 0.01, progress=None) -> SimResult:
    """Run one policy. ``reactive`` searches the smallest static buffer on ``buffers`` that
    keeps SLA misses at or under ``miss_target`` (the best a user can do without prediction);
    the result reports the buffer chosen and the wall time of the whole search."""
    if config.policy != "reactive":
        return Simulation(fleet, agreements, trace, start, config).run()
    wall = 0.0
    best = None
    for b in buffers:
        if progress:
            progress(f"reactive: trying a warm buffer of {b:g} vCPU")
        r = Simulation(fleet, agreements, trace, start, _with(config, buffer_vcpu=float(b))).run()
        wall += r.wall_s
        best = r
        if r.sla_miss_rate <= miss_target:
            break
    best.wall_s = wall
    return best


def _with(cfg: SimConfig, **changes) -> SimConfig:
    return replace(cfg, **changes)
