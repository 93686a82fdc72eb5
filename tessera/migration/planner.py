"""The migration planner: which replicas to move where, and why, from one snapshot.

A pure function of an immutable :class:`~tessera.migration.snapshot.Snapshot` (its ``now``
is the clock) and a :class:`~tessera.migration.budget.DisruptionBudget`. It proposes moves
for three reasons, in this order:

1. **evacuate**: replicas on unhealthy or withdrawn resources move to compatible healthy
   capacity. All evacuees are packed in one what-if batch by the scheduler's packing
   kernel (best tier first, cheapest resources to open first); one the batch could not
   place is retried alone, where the kernel's answer is exact (a single request's
   replicas fit iff each compatible resource's fit count adds up), so evacuation finds a
   target whenever one exists for it. What finds none is listed in ``unplaced``.
2. **consolidate**: a paid resource whose work fits on the rest of the running fleet is
   emptied and closes, saving its ``price_per_hour``;
3. **rebalance**: a paid resource whose work fits on cheaper capacity that is not running
   yet (own capacity freed, a partner with an unmet commitment at price 0, a price drop)
   is emptied onto it.

Consolidation and rebalance share one test. Emptying resource R saves
``price(R) - price(resources it opens)`` per hour for as long as R would otherwise have
run: until the last of its allocations is expected to end, at most the budget's horizon.
The move is made only if that saving exceeds the disruption (move cost per replica,
weighted by tier), and, if it shrinks the fleet, only if the demand forecast does not need
the capacity again before the move pays off. Each candidate is tried as one what-if batch
of the kernel (all of R's allocations together, the rest of the fleet as it stands after
the moves already chosen). Greedy orders differ in which closings they reach, so the
phase is run from several candidate orders (least used first, dearest first, dearest per
used vCPU first, and the order a from-scratch repack of the whole fleet suggests) and the
plan that saves most is kept.

Cost model: the fleet costs the price of every resource that is open or holds work; after
the plan, of every resource that holds work. A resource left with no work closes, so
``savings_per_hour`` is the difference (an evacuation that must open capacity can make it
negative). Not modelled: a provider spread across replicas (the snapshot carries none),
and the longer life a target may get from work moved onto it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterable, Sequence

import numpy as np

from tessera.scheduler.packing import (
    NO_SEARCH,
    QUICK,
    PackRequest,
    PackResource,
    PackResult,
    ResourceTable,
    pack_batch,
)
from tessera.schemas import TIER_RANK

from .budget import DisruptionBudget
from .snapshot import Allocation, Resource, Snapshot

EPS = 1e-9
HOUR = Decimal(3600)


@dataclass(frozen=True, slots=True)
class Move:
    allocation_id: str
    from_resource: str
    to_resource: str
    replicas: int
    reason: str   # evacuation | consolidation | rebalance

    def as_dict(self) -> dict:
        return {"allocation_id": self.allocation_id, "from_resource": self.from_resource,
                "to_resource": self.to_resource, "replicas": self.replicas, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Unplaced:
    allocation_id: str
    reason: str   # a code
    detail: str   # the sentence for people
    replicas: int = 0
    resource_id: str = ""

    def as_dict(self) -> dict:
        return {"allocation_id": self.allocation_id, "reason": self.reason, "detail": self.detail,
                "replicas": self.replicas, "resource_id": self.resource_id}


@dataclass(frozen=True, slots=True)
class Skip:
    """A candidate the planner looked at and left alone, and why."""

    resource_id: str
    reason: str
    detail: str
    allocation_id: str = ""

    def as_dict(self) -> dict:
        d = {"resource_id": self.resource_id, "reason": self.reason, "detail": self.detail}
        if self.allocation_id:
            d["allocation_id"] = self.allocation_id
        return d


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    cost_before: Decimal = Decimal(0)
    cost_after: Decimal = Decimal(0)
    disruption_cost: Decimal = Decimal(0)
    closed: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    order: str = ""   # which candidate order the consolidation phase kept
    #: The moves must run one after another in this order (each after the one before it
    #: has released its source); False: they may all run at once.
    in_order: bool = False

    @property
    def savings_per_hour(self) -> Decimal:
        return self.cost_before - self.cost_after

    def as_dict(self) -> dict:
        return {
            "moves": [m.as_dict() for m in self.moves],
            "savings_per_hour": _money(self.savings_per_hour),
            "disruption_cost": _money(self.disruption_cost),
            "cost_per_hour_before": _money(self.cost_before), "cost_per_hour_after": _money(self.cost_after),
            "closed": self.closed, "opened": self.opened, "in_order": self.in_order,
            "unplaced": [u.as_dict() for u in self.unplaced],
            "skipped": [s.as_dict() for s in self.skipped],
        }


def _money(d: Decimal) -> str:
    s = format(d.normalize(), "f") if d else "0"
    return s


class _Fleet:
    """The mutable working state of one planning run: where every replica is, what is free."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.place: dict[str, dict[str, int]] = {a.id: dict(a.placements) for a in snap.allocations}
        self.free = {r.id: list(r.capacity) for r in snap.resources}
        self.load = {r.id: 0 for r in snap.resources}   # replicas held
        # resource -> positions (in the snapshot) of the allocations with replicas on it:
        # ``on`` asks for every candidate of every plan, and a scan of every allocation
        # for each was a tenth of a plan
        self.hosted: dict[str, set[int]] = {r.id: set() for r in snap.resources}
        # constant through a plan, and asked for each resource offered at every try
        self.price_per_vcpu = {r.id: _price_per_vcpu(r) for r in snap.resources}
        self.usable = [r for r in snap.resources if r.usable]
        self._table: ResourceTable | None = None
        # The packings tried, by work and fleet state: a plan's orders and sweeps, each on
        # its own copy, try the same resource on the same state again and again (over half
        # of the tries in the simulator's runs). The snapshot, and so prices, tags and
        # capacity, is fixed through a plan; the copies share it.
        self.tries: dict[tuple, PackResult | None] = {}
        self._position = {a.id: i for i, a in enumerate(snap.allocations)}
        for i, a in enumerate(snap.allocations):
            for rid, k in a.placements:
                self.load[rid] += k
                if k:
                    self.hosted[rid].add(i)
                f = self.free[rid]
                for d in range(3):
                    f[d] -= a.demand[d] * k
        self.moves: list[Move] = []
        self.disruption = Decimal(0)
        self.moved_by_pool: dict[str, set[str]] = {}
        self.moved_by_tenant: dict[str, set[str]] = {}
        self.emptied: set[str] = set()
        self.skipped: list[Skip] = []
        self.in_order = False

    def copy(self) -> "_Fleet":
        c = object.__new__(_Fleet)
        c.snap = self.snap
        c.price_per_vcpu, c.usable, c._table, c._position = self.price_per_vcpu, self.usable, self._table, \
            self._position
        c.tries = self.tries
        c.place = {a: dict(p) for a, p in self.place.items()}
        c.free = {r: list(f) for r, f in self.free.items()}
        c.load = dict(self.load)
        c.hosted = {r: set(on) for r, on in self.hosted.items()}
        c.moves = list(self.moves)
        c.disruption = self.disruption
        c.moved_by_pool = {k: set(v) for k, v in self.moved_by_pool.items()}
        c.moved_by_tenant = {k: set(v) for k, v in self.moved_by_tenant.items()}
        c.emptied = set(self.emptied)
        c.skipped = list(self.skipped)
        c.in_order = self.in_order
        return c

    def hosting(self, rid: str) -> bool:
        return self.load[rid] > 0

    def on(self, rid: str) -> list[tuple[Allocation, int]]:
        """The allocations with replicas on ``rid`` and how many, in the snapshot's order."""
        allocations, place = self.snap.allocations, self.place
        return [(allocations[i], place[allocations[i].id][rid]) for i in sorted(self.hosted[rid])]

    def state(self, exclude: Iterable[str] = ()) -> tuple[list[int], list[list[float]], list[bool]]:
        """The usable resources' rows less ``exclude`` and what was emptied, with their
        free capacity and whether they hold work (open, no opening cost)."""
        ex = set(exclude) | self.emptied
        free, load = self.free, self.load
        rows, frees, opens = [], [], []
        for i, r in enumerate(self.usable):
            if r.id not in ex:
                rows.append(i)
                frees.append(free[r.id])
                opens.append(load[r.id] > 0)
        return rows, frees, opens

    def pack_table(self, state: tuple[list[int], list[list[float]], list[bool]]) -> ResourceTable:
        """Healthy capacity as the kernel sees it, the rows ``state`` gives (``state()``: less
        what a try excludes and what was emptied): a resource holding work is open (no
        opening cost); an idle one, running or not, costs its price to use (it would
        otherwise close). The usable fleet's table (capacity, prices, tags, places: fixed
        through a plan) is built once; each try takes its rows with the free capacity and
        open flags of the moment."""
        if self._table is None:
            self._table = ResourceTable.from_resources(
                [PackResource(r.id, r.provider, r.region, r.capacity, r.capacity, r.price_per_hour, r.tags)
                 for r in self.usable], 3)
        rows, frees, opens = state
        table = self._table.subset(rows)
        table.free = np.maximum(np.array(frees, dtype=np.float64).reshape(len(rows), 3), 0.0)
        table.open = np.array(opens, dtype=np.bool_)
        return table

    def apply(self, m: Move, a: Allocation, budget: DisruptionBudget) -> None:
        p = self.place[a.id]
        p[m.from_resource] -= m.replicas
        i = self._position[a.id]
        if not p[m.from_resource]:
            del p[m.from_resource]
            self.hosted[m.from_resource].discard(i)
        p[m.to_resource] = p.get(m.to_resource, 0) + m.replicas
        self.hosted[m.to_resource].add(i)
        for rid, sign in ((m.from_resource, 1), (m.to_resource, -1)):
            f = self.free[rid]
            for d in range(3):
                f[d] += sign * a.demand[d] * m.replicas
        self.load[m.from_resource] -= m.replicas
        self.load[m.to_resource] += m.replicas
        self.moves.append(m)
        self.disruption += budget.disruption(a.tier, m.replicas)
        self.moved_by_pool.setdefault(self.snap.resource(m.from_resource).pool, set()).add(a.id)
        self.moved_by_tenant.setdefault(a.tenant, set()).add(a.id)

    def net_moves(self, extra: Sequence[Move] = ()) -> int:
        """How many moves the plan would report with ``extra`` applied too: the net moves
        from the snapshot's placements, which is what the budget's ``max_moves`` counts (a
        replica moved twice in the greedy passes is one move; one allocation's replicas
        gathered from several sources are several)."""
        by_id = {a.id: a for a in self.snap.allocations}
        touched = {m.allocation_id for m in self.moves} | {m.allocation_id for m in extra}
        n = 0
        for aid in touched:
            after = dict(self.place[aid])
            for m in extra:
                if m.allocation_id == aid:
                    after[m.from_resource] -= m.replicas
                    if not after[m.from_resource]:
                        del after[m.from_resource]
                    after[m.to_resource] = after.get(m.to_resource, 0) + m.replicas
            n += len(_pair(*_diff(dict(by_id[aid].placements), after)))
        return n

    def reassign(self, new: dict[str, dict[str, int]], budget: DisruptionBudget) -> None:
        """Give the allocations in ``new`` those placements, recording the moves."""
        by_id = {a.id: a for a in self.snap.allocations}
        for aid, after in new.items():
            a = by_id[aid]
            for f, t, k in _pair(*_diff(dict(self.place[aid]), after)):
                self.apply(Move(aid, f, t, k, "consolidation"), a, budget)

    def cost(self, initial: bool = False) -> Decimal:
        total = Decimal(0)
        for r in self.snap.resources:
            if (r.open and initial) or self.hosting(r.id):
                total += r.price_per_hour
        return total


def _request(a: Allocation, replicas: int, seq: int) -> PackRequest:
    return PackRequest(a.id, a.tier, replicas, a.demand, a.tags_required, a.regions, a.providers, 1, seq=seq)


def _pair(sources: Iterable[tuple[str, int]], targets: Iterable[tuple[str, int]]) -> list[tuple[str, str, int]]:
    """Replicas leaving ``sources`` paired, in order, with the replicas arriving at
    ``targets`` (the same total): (from, to, replicas)."""
    out: list[tuple[str, str, int]] = []
    src = [list(x) for x in sources]
    i = 0
    for to, k in targets:
        while k > 0:
            take = min(k, src[i][1])
            out.append((src[i][0], to, take))
            src[i][1] -= take
            k -= take
            if not src[i][1]:
                i += 1
    return out


def _diff(before: dict[str, int], after: dict[str, int]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Where replicas left and where they arrived, from placements before and after."""
    return ([(r, k - after.get(r, 0)) for r, k in sorted(before.items()) if k > after.get(r, 0)],
            [(r, k - before.get(r, 0)) for r, k in sorted(after.items()) if k > before.get(r, 0)])


def _spread(a: Allocation, sources: list[tuple[str, int]], targets: list[tuple[str, int]], reason: str) -> list[Move]:
    """The replicas leaving ``sources`` onto the kernel's ``targets``, as moves."""
    return [Move(a.id, f, t, k, reason) for f, t, k in _pair(sources, targets) if f != t]


def _price_per_vcpu(r: Resource) -> Decimal:
    return r.price_per_hour / Decimal(str(max(r.capacity[0], EPS)))


def _place_cheapest(fleet: _Fleet, reqs: list[PackRequest], exclude: set[str], may_open: bool):
    """Pack ``reqs`` (all or nothing) preferring work to land where capacity is cheapest.

    The kernel prices only *opening* a resource; among resources already running it packs
    by fit. So the running ones are offered in classes of rising price per vCPU (own
    capacity first), each try adding the next class; only if all of them cannot hold the
    work are idle resources offered, at their price (the kernel opens the cheapest set).
    Returns the kernel's result, or the last failed one. The same work on the same fleet
    state gets the result found before (packing is deterministic)."""
    state = fleet.state(exclude)
    rows, frees, opens = state
    key = (tuple((q.id, q.replicas, q.seq) for q in reqs), tuple(rows), tuple(map(tuple, frees)), tuple(opens),
           may_open)
    if key in fleet.tries:
        return fleet.tries[key]
    result = fleet.tries[key] = _pack_cheapest(fleet, fleet.pack_table(state), reqs, may_open)
    return result


def _pack_cheapest(fleet: _Fleet, table: ResourceTable, reqs: list[PackRequest], may_open: bool):
    if not len(table):
        return None
    per_vcpu = fleet.price_per_vcpu
    ids, opened, gpus = table.ids, table.open.tolist(), table.cap[:, 2].tolist()
    running = sorted({per_vcpu[rid] for rid, o in zip(ids, opened) if o})
    limits: list[Decimal] = []
    for v in running:   # classes at most 2x apart in price per vCPU: a handful of kernel runs
        if limits and v <= limits[-1] * 2:
            limits[-1] = v
        else:
            limits.append(v)
    result = None
    # Work without GPUs tries resources without GPUs first: CPU work moved onto a GPU node
    # strands its GPUs (GPU work then finds the GPUs free and the vCPU gone).
    cpu_only = all(q.demand[2] == 0 for q in reqs)
    passes = [(limit, True) for limit in limits] if cpu_only else []
    # A pass whose offer lacks the room for the work in total cannot place it all; when
    # the last word is the packing that may open capacity, its failure would be dropped
    # unread, so it is not run (about a quarter of the passes in the simulator's plans).
    # The slack covers the kernel's per-resource fit tolerance.
    if may_open:
        need = [sum(q.demand[d] * q.replicas for q in reqs) for d in range(3)]
        rows, slack = table.free.tolist(), 1e-6 * (len(ids) + 1)
    for limit, no_gpu in passes + [(limit, False) for limit in limits]:
        offer = [opened[i] and per_vcpu[rid] <= limit and not (no_gpu and gpus[i] > 0) for i, rid in enumerate(ids)]
        if not any(offer):
            continue
        if may_open and _lacks_room(need, rows, offer, slack):
            continue
        # Every resource offered runs already: nothing to open, so the kernel's cost search
        # has nothing to find; it only has to fit. (What did not fit is not explained: only
        # the last pass's reasons reach a skip's text.) The others are offered with no room.
        free = np.where(np.array(offer)[:, None], table.free, 0.0)
        result = pack_batch(reqs, table.with_state(free), effort=NO_SEARCH, explain=not may_open)
        if not result.rejected:
            return result
    if may_open:
        result = pack_batch(reqs, table, effort=QUICK)
    return result


def _lacks_room(need: list[float], rows: list[list[float]], offer: list[bool], slack: float) -> bool:
    """Whether the offered rows' free capacity, added up, falls short of ``need`` in some
    dimension by more than ``slack``."""
    return any(n > sum(row[d] for row, o in zip(rows, offer) if o) + slack for d, n in enumerate(need))


def _evacuate(fleet: _Fleet, budget: DisruptionBudget, unplaced: list[Unplaced]) -> None:
    """Each evacuee alone, best tier first: one request's replicas fit iff the compatible
    resources' fit counts add up, which the kernel computes exactly, so an evacuee finds a
    target whenever one is left."""
    snap = fleet.snap
    bad = {r.id for r in snap.resources if not r.usable}
    evacuees: list[tuple[Allocation, list[tuple[str, int]]]] = []
    for a in snap.allocations:
        srcs = [(rid, k) for rid, k in sorted(fleet.place[a.id].items()) if rid in bad]
        if srcs:
            evacuees.append((a, srcs))
    evacuees.sort(key=lambda e: (TIER_RANK[e[0].tier], -sum(k for _, k in e[1]) * max(e[0].demand), e[0].id))
    for a, srcs in evacuees:
        result = _place_cheapest(fleet, [_request(a, sum(k for _, k in srcs), 0)], bad, may_open=True)
        if result is not None and a.id in result.placements:
            _commit_evacuation(fleet, budget, a, srcs, result.placements[a.id], unplaced)
            continue
        why = result.rejected[a.id] if result is not None else None
        for rid, k in srcs:
            unplaced.append(Unplaced(a.id, why.code.value if why else "no_resources",
                                     why.text if why else "no healthy resource in the snapshot", k, rid))


def _commit_evacuation(fleet: _Fleet, budget: DisruptionBudget, a: Allocation, srcs: list[tuple[str, int]],
                       placed: list[tuple[str, int]], unplaced: list[Unplaced]) -> None:
    moves = _spread(a, srcs, placed, "evacuation")
    if budget.max_moves is not None and fleet.net_moves(moves) > budget.max_moves:
        for rid, k in srcs:
            unplaced.append(Unplaced(a.id, "max_moves", f"a target exists, but the plan already holds "
                                     f"{fleet.net_moves()} of at most {budget.max_moves} moves; it moves next round",
                                     k, rid))
        return
    for m in moves:
        fleet.apply(m, a, budget)


def _remaining_hours(a: Allocation, now: datetime, budget: DisruptionBudget) -> Decimal:
    if a.expected_end is None:
        return Decimal(str(budget.horizon_s)) / HOUR
    left = min(max((a.expected_end - now).total_seconds(), 0.0), budget.horizon_s)
    return Decimal(str(left)) / HOUR


def _forecast_need(snap: Snapshot, until: datetime) -> tuple[float, float | None]:
    """The most extra vCPU and GPUs the forecast expects in use from now to ``until``
    (GPUs None: some entry does not forecast them)."""
    ahead = [(v, g) for t, v, g in snap.forecast if snap.now <= t <= until]
    gpus = [g for _, g in ahead]
    return (max((v for v, _ in ahead), default=0.0),
            None if any(g is None for g in gpus) else max(gpus, default=0.0))


def _short_of(snap: Snapshot, until: datetime, spare: list[float], closing_gpus: bool) -> str:
    """Why the forecast needs capacity a plan would close ('' if it does not). A negative
    ``spare`` (the work does not fit on the running fleet, so placing it opens capacity)
    counts as none left: the forecast then blocks only if it needs more than nothing, and
    whether opening pays is the saving test's question."""
    vcpu, gpu = _forecast_need(snap, until)
    spare = [max(x, 0.0) for x in spare]
    if vcpu > spare[0] + EPS:
        return f"the forecast needs {vcpu:g} more vCPU before {until:%Y-%m-%dT%H:%MZ}; {spare[0]:g} would stay free"
    if closing_gpus and gpu is None:
        return "it has GPUs and GPU demand is not forecast, so it may be needed again"
    if closing_gpus and gpu is not None and gpu > spare[2] + EPS:
        return f"the forecast needs {gpu:g} more GPUs before {until:%Y-%m-%dT%H:%MZ}; {spare[2]:g} would stay free"
    return ""


def _try_empty(fleet: _Fleet, r: Resource, budget: DisruptionBudget, populations: tuple[dict, dict],
               reopen_window_s: float, avoid: frozenset[str] = frozenset()) -> None:
    """Move everything off ``r`` if it pays and the budget allows; else record why not."""
    snap = fleet.snap
    work = fleet.on(r.id)
    if not work:
        return
    for a, _ in work:
        if a.tier in budget.evacuate_only:
            fleet.skipped.append(Skip(r.id, "tier_evacuate_only", f"holds {a.tier} work ({a.id}), which moves "
                                      "only to evacuate", a.id))
            return
    # Necessary before asking the kernel: the rest of the usable fleet has the room in total.
    need = [sum(a.demand[d] * k for a, k in work) for d in range(3)]
    # In one pass: the room on the rest of the usable fleet, and the free capacity of the
    # resources that host work (what stays spare once R's work lands, for the forecast test).
    # (Written out per dimension, with ``hosting`` inlined: it runs over the fleet for every
    # candidate of every plan.)
    room0 = room1 = room2 = host0 = host1 = host2 = 0.0
    free_of, load, emptied = fleet.free, fleet.load, fleet.emptied
    for x in fleet.usable:
        xid = x.id
        if xid == r.id:
            continue
        f0, f1, f2 = free_of[xid]
        f0, f1, f2 = (f0 if f0 > 0.0 else 0.0), (f1 if f1 > 0.0 else 0.0), (f2 if f2 > 0.0 else 0.0)
        if xid not in avoid and xid not in emptied:
            room0 += f0
            room1 += f1
            room2 += f2
        if load[xid] > 0:
            host0 += f0
            host1 += f1
            host2 += f2
    room, hosted_free = (room0, room1, room2), (host0, host1, host2)
    if any(n > m + EPS for n, m in zip(need, room)):
        fleet.skipped.append(Skip(r.id, "no_room", "the rest of the fleet lacks the room for its work"))
        return
    disruption = sum((budget.disruption(a.tier, k) for a, k in work), Decimal(0))
    if snap.forecast:
        # Will the forecast need what closing R takes away before the move pays off? Known
        # before any packing: R's work lands on the running fleet, the saving is R's price and
        # the disruption depends on the work alone. (A candidate that fails here is not tried
        # as a rebalance either: capacity the forecast needs is no time for reshuffling.)
        spare = [hosted_free[d] - need[d] for d in range(3)]
        payback_s = float(disruption / r.price_per_hour * HOUR)
        short = _short_of(snap, snap.now + timedelta(seconds=max(payback_s, reopen_window_s)), spare,
                          r.capacity[2] > 0)
        if short:
            fleet.skipped.append(Skip(r.id, "needed_again", short))
            return
    # Also known before any packing: emptying R saves at most its own price (less whatever
    # its work has to open), for as long as the longest of that work still runs. When even
    # that does not repay the moves, no packing can (about a third of the simulator's
    # packings, before this test, ended so).
    life_h = max(_remaining_hours(a, snap.now, budget) for a, _ in work)
    if r.price_per_hour * life_h <= disruption:
        fleet.skipped.append(Skip(r.id, "not_worth_it", f"saves at most its {_money(r.price_per_hour)}/h for "
                                  f"{life_h:.2f} h, moving costs {_money(disruption)}"))
        return
    reqs = [_request(a, k, i) for i, (a, k) in enumerate(work)]
    result = _place_cheapest(fleet, reqs, {r.id} | avoid, may_open=True)
    if result is None:
        fleet.skipped.append(Skip(r.id, "no_room", "no other healthy capacity"))
        return
    if result.rejected:
        aid, why = next(iter(result.rejected.items()))
        fleet.skipped.append(Skip(r.id, "no_room", f"its work does not fit elsewhere ({aid}: {why.text})", aid))
        return
    opened_price = sum((snap.resource(o).price_per_hour for o in result.opened), Decimal(0))
    saving = r.price_per_hour - opened_price
    reason = "rebalance" if result.opened else "consolidation"
    if saving <= 0:
        fleet.skipped.append(Skip(r.id, "no_saving", f"emptying it needs {', '.join(result.opened)} at "
                                  f"{_money(opened_price)}/h, no cheaper than its {_money(r.price_per_hour)}/h"))
        return
    moves = [m for a, k in work for m in _spread(a, [(r.id, k)], result.placements[a.id], reason)]
    if budget.max_moves is not None and fleet.net_moves(moves) > budget.max_moves:
        fleet.skipped.append(Skip(r.id, "max_moves", f"needs {len(moves)} moves; the plan holds "
                                  f"{fleet.net_moves()} of at most {budget.max_moves}"))
        return
    pool_moved = fleet.moved_by_pool.get(r.pool, set()) | {a.id for a, _ in work}
    population = len(populations[0].get(r.pool, set()) | {a.id for a, _ in work})
    if len(pool_moved) > budget.fraction_limit(population):
        fleet.skipped.append(Skip(r.id, "pool_budget", f"pool {r.pool!r} may move at most "
                                  f"{budget.fraction_limit(population)} of its {population} "
                                  f"allocations per {budget.window_s:g} s"))
        return
    for tenant in sorted({a.tenant for a, _ in work}):
        moved = fleet.moved_by_tenant.get(tenant, set()) | {a.id for a, _ in work if a.tenant == tenant}
        limit = budget.fraction_limit(populations[1].get(tenant, 0))
        if len(moved) > limit:
            fleet.skipped.append(Skip(r.id, "tenant_budget", f"tenant {tenant!r} may move at most {limit} of its "
                                      f"{populations[1].get(tenant, 0)} allocations per {budget.window_s:g} s"))
            return
    if saving * life_h <= disruption:
        fleet.skipped.append(Skip(r.id, "not_worth_it", f"saves {_money(saving)}/h for {life_h:.2f} h, "
                                  f"moving costs {_money(disruption)}"))
        return
    for a, _ in work:
        for m in (m for m in moves if m.allocation_id == a.id):
            fleet.apply(m, a, budget)
    fleet.emptied.add(r.id)


def _used_share(fleet: _Fleet, r: Resource) -> float:
    return max(((c - f) / c) if c > 0 else 0.0 for c, f in zip(r.capacity, fleet.free[r.id]))


def _orders(fleet: _Fleet, candidates: list[Resource]) -> dict[str, tuple[list[Resource], frozenset[str]]]:
    """Candidate orders for the greedy pass, each with the resources its moves avoid."""
    snap = fleet.snap

    def used_share(r: Resource) -> float:
        return _used_share(fleet, r)

    def per_vcpu(r: Resource) -> Decimal:
        used = max(r.capacity[0] - fleet.free[r.id][0], EPS)
        return r.price_per_hour / Decimal(str(used))

    none: frozenset[str] = frozenset()
    orders = {
        "least_used": (sorted(candidates, key=lambda r: (used_share(r), -r.price_per_hour, r.id)), none),
        "dearest": (sorted(candidates, key=lambda r: (-r.price_per_hour, used_share(r), r.id)), none),
        "dearest_per_vcpu": (sorted(candidates, key=lambda r: (-per_vcpu(r), r.id)), none),
    }
    # A from-scratch repack says which resources a cheapest fleet would keep: empty the
    # others first (dearest first) onto the kept ones only.
    usable = [r for r in snap.resources if r.usable and r.id not in fleet.emptied]
    reqs = [_request(a, sum(fleet.place[a.id].values()), i) for i, a in enumerate(snap.allocations)
            if fleet.place[a.id]]
    if reqs and usable:
        repack = pack_batch(reqs, [PackResource(r.id, r.provider, r.region, r.capacity, r.capacity, r.price_per_hour,
                                                r.tags, False) for r in usable], effort=QUICK)
        if not repack.rejected:
            keep = set(repack.opened)
            drop = frozenset(r.id for r in usable if r.id not in keep)
            orders["repack"] = ([r for r in sorted(candidates, key=lambda r: (-r.price_per_hour, r.id))
                                 if r.id in drop], drop)
    return orders


def plan(snap: Snapshot, budget: DisruptionBudget | None = None, *, reopen_window_s: float = 3600.0,
         progress: Callable[[str], None] | None = None) -> Plan:
    """Plan moves for ``snap`` within ``budget`` (see the module doc)."""
    budget = budget or DisruptionBudget()
    fleet = _Fleet(snap)
    out = Plan(cost_before=fleet.cost(initial=True))
    _evacuate(fleet, budget, out.unplaced)

    if not budget.in_maintenance(snap.now):
        fleet.skipped.append(Skip("", "outside_maintenance_window",
                                  f"{snap.now:%H:%M} UTC is outside every maintenance window; only evacuations run"))
    else:
        window_start = snap.now - timedelta(seconds=budget.window_s)
        recent = {aid for aid, t in snap.recent_moves if t >= window_start}
        # A pool's population: its allocations at the start or after the evacuations.
        by_pool: dict[str, set[str]] = {}
        by_tenant: dict[str, int] = {}
        alloc = {a.id: a for a in snap.allocations}
        for a in snap.allocations:
            for rid in [rid for rid, _ in a.placements] + list(fleet.place[a.id]):
                by_pool.setdefault(snap.resource(rid).pool, set()).add(a.id)
            by_tenant[a.tenant] = by_tenant.get(a.tenant, 0) + 1
        for aid in recent & alloc.keys():
            a = alloc[aid]
            for rid in fleet.place[aid]:
                fleet.moved_by_pool.setdefault(snap.resource(rid).pool, set()).add(aid)
            fleet.moved_by_tenant.setdefault(a.tenant, set()).add(aid)
        candidates = [r for r in snap.resources if r.usable and r.price_per_hour > 0 and fleet.hosting(r.id)]
        best: _Fleet | None = None
        best_name = ""
        populations = (by_pool, by_tenant)
        for name, (order, avoid) in _orders(fleet, candidates).items():
            if progress:
                progress(f"consolidation pass '{name}' over {len(order)} candidate resources")
            trial = fleet.copy()
            for r in order:
                if r.id not in trial.emptied and trial.hosting(r.id):
                    _try_empty(trial, r, budget, populations, reopen_window_s, avoid - {r.id} - trial.emptied)
            # A second sweep, least used first: a closing can make room for another. Its
            # verdicts are the ones reported.
            trial.skipped = list(fleet.skipped)
            for r in sorted(candidates, key=lambda r: (_used_share(trial, r), -r.price_per_hour, r.id)):
                if r.id not in trial.emptied and trial.hosting(r.id):
                    _try_empty(trial, r, budget, populations, reopen_window_s)
            if best is None or _better(trial, best):
                best, best_name = trial, name
        for name, without in _repack_variants(fleet):
            whole = _global_repack(fleet, budget, populations, reopen_window_s, without)
            if whole is not None and (best is None or _better(whole, best)):
                whole.skipped = best.skipped if best is not None else whole.skipped
                best, best_name = whole, name
        fleet, out.order = best or fleet, best_name
    hosted = {rid for a in snap.allocations for rid, _ in a.placements}
    # Work emptied off one resource may be emptied again off its target later in the
    # greedy pass; each replica moves once, straight to where it ends up.
    out.moves = _net_moves(snap, fleet, hosted)
    if getattr(fleet, "in_order", False):
        ordered = _sequence(snap, out.moves, park=True)
        if ordered is not None:          # found when the candidate was accepted
            out.moves, out.in_order = ordered, True
    out.skipped = fleet.skipped
    weights = {a.id: a.tier for a in snap.allocations}
    out.disruption_cost = sum((budget.disruption(weights[m.allocation_id], m.replicas) for m in out.moves), Decimal(0))
    out.cost_after = fleet.cost()
    out.closed = sorted(r.id for r in snap.resources if (r.open or r.id in hosted) and not fleet.hosting(r.id))
    out.opened = sorted(r.id for r in snap.resources if fleet.hosting(r.id) and not r.open and r.id not in hosted)
    return out


#: Fleets up to this many resources also try whole repacks with each hosting resource left
#: out (a cheapest packing may be a swap no move order can run on a full fleet; one that
#: gives up a little of the saving often can).
REPACK_VARIANTS_UP_TO = 40


def _repack_variants(fleet: _Fleet) -> list[tuple[str, frozenset[str]]]:
    out = [("whole_fleet_repack", frozenset())]
    snap = fleet.snap
    if len(snap.resources) <= REPACK_VARIANTS_UP_TO:
        out += [(f"whole_fleet_repack_without:{r.id}", frozenset({r.id})) for r in snap.resources
                if r.usable and fleet.hosting(r.id) and r.price_per_hour > 0]
    return out


def _global_repack(fleet: _Fleet, budget: DisruptionBudget, populations: tuple[dict, dict],
                   reopen_window_s: float, without: frozenset[str] = frozenset()) -> _Fleet | None:
    """One more candidate: the whole fleet repacked at once, for the fragmentation that
    closing one resource at a time cannot undo (a small replica moves to a cheap VM so a
    large one fits where it was). Work that may not move (evacuate-only tiers) stays put;
    the kernel packs the rest from scratch, cheapest set of resources first; replicas that
    land where they already were do not move. Taken only as a whole: it must pass the
    same tests as one closing (saving over the work's life beats the disruption, budgets,
    the forecast)."""
    snap = fleet.snap
    fixed = {a.id for a in snap.allocations if a.tier in budget.evacuate_only or not fleet.place[a.id]}
    free = {r.id: list(r.capacity) for r in snap.resources}
    pinned: set[str] = set()
    for a in snap.allocations:
        if a.id in fixed:
            for rid, k in fleet.place[a.id].items():
                pinned.add(rid)
                for d in range(3):
                    free[rid][d] -= a.demand[d] * k
    movable = [a for a in snap.allocations if a.id not in fixed]
    usable = [r for r in snap.resources if r.usable and r.id not in fleet.emptied and r.id not in without]
    if not movable or not usable:
        return None
    reqs = [_request(a, sum(fleet.place[a.id].values()), i) for i, a in enumerate(movable)]
    offer = [PackResource(r.id, r.provider, r.region, tuple(max(0.0, x) for x in free[r.id]), r.capacity,
                          r.price_per_hour, r.tags, r.id in pinned) for r in usable]
    result = pack_batch(reqs, offer, effort=QUICK)
    if result.rejected:
        return None
    keep = set(result.opened) | pinned
    # Sticky first: replicas already on a kept resource stay; only the rest is packed.
    trial = fleet.copy()
    stay = {a.id: {rid: k for rid, k in fleet.place[a.id].items() if rid in keep} for a in movable}
    for a in movable:
        for rid, k in stay[a.id].items():
            for d in range(3):
                free[rid][d] -= a.demand[d] * k
    rest = [(a, sum(fleet.place[a.id].values()) - sum(stay[a.id].values())) for a in movable]
    rest = [(a, k) for a, k in rest if k]
    sticky = None
    if rest:
        kept = [PackResource(r.id, r.provider, r.region, tuple(max(0.0, x) for x in free[r.id]), r.capacity,
                             r.price_per_hour, r.tags, True) for r in usable if r.id in keep]
        sticky = pack_batch([_request(a, k, i) for i, (a, k) in enumerate(rest)], kept,
                            effort=NO_SEARCH) if kept else None
    if sticky is not None and not sticky.rejected:
        new = {a.id: dict(stay[a.id]) for a in movable}
        for a, _ in rest:
            for rid, k in sticky.placements[a.id]:
                new[a.id][rid] = new[a.id].get(rid, 0) + k
    else:
        new = {a.id: dict(result.placements[a.id]) for a in movable}
    new = _cancel_swaps(snap, fleet, new)
    trial.reassign(new, budget)
    hops = 0        # moves parking adds, beyond the net ones
    if not _executable(snap, fleet, trial):
        # Not all at once; one after another, in some order, from the snapshot's state,
        # parking a replica on the way where a swap leaves no room?
        hosted = {rid for a in snap.allocations for rid, _ in a.placements}
        net = _net_moves(snap, trial, hosted)
        ordered = _sequence(snap, net, park=True)
        if ordered is None:
            return None
        trial.in_order = True
        hops = len(ordered) - len(net)
        weights = {a.id: a.tier for a in snap.allocations}
        trial.disruption += sum((budget.disruption(weights[m.allocation_id], m.replicas) for m in ordered),
                                Decimal(0)) - sum((budget.disruption(weights[m.allocation_id], m.replicas)
                                                   for m in net), Decimal(0))
    saving = fleet.cost() - trial.cost()
    if saving <= 0:
        return None
    moved = {m.allocation_id for m in trial.moves[len(fleet.moves):]}
    if budget.max_moves is not None and trial.net_moves() + hops > budget.max_moves:
        return None
    for pool, ids in trial.moved_by_pool.items():
        if len(ids) > budget.fraction_limit(len(populations[0].get(pool, set()) | ids)):
            return None
    for tenant, ids in trial.moved_by_tenant.items():
        if len(ids) > budget.fraction_limit(populations[1].get(tenant, 0)):
            return None
    closing = [rid for rid in fleet.load if fleet.hosting(rid) and not trial.hosting(rid)]
    life_h = min((max((_remaining_hours(a, snap.now, budget) for a, _ in fleet.on(rid)), default=Decimal(0))
                  for rid in closing), default=Decimal(0))
    disruption = trial.disruption - fleet.disruption
    if not moved or saving * life_h <= disruption:
        return None
    if snap.forecast:
        until = snap.now + timedelta(seconds=max(float(disruption / saving * HOUR), reopen_window_s))
        spare = [sum(max(0.0, trial.free[r.id][d]) for r in usable if trial.hosting(r.id)) for d in range(3)]
        if _short_of(snap, until, spare, any(snap.resource(rid).capacity[2] > 0 for rid in closing)):
            return None
    trial.emptied |= set(closing)
    return trial


def _cancel_swaps(snap: Snapshot, fleet: _Fleet, new: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """``new`` placements without the pointless trades a from-scratch repack makes: when a
    replica moves A -> B and another of the same size moves B -> A, both stay where they
    are (each already fits where it is; the resources hold the same load either way). A
    repack that shuffles equal replicas between two full nodes otherwise needs room that
    is not there to run."""
    by_id = {a.id: a for a in snap.allocations}
    moves: list[list] = []            # [allocation, from, to, replicas left]
    for aid, after in new.items():
        moves += [[aid, f, t, k] for f, t, k in _pair(*_diff(dict(fleet.place[aid]), after))]
    for m in moves:
        for o in moves:
            if m[3] and o[3] and o[1] == m[2] and o[2] == m[1] and by_id[o[0]].demand == by_id[m[0]].demand:
                k = min(m[3], o[3])
                m[3] -= k
                o[3] -= k
    out = {aid: dict(fleet.place[aid]) for aid in new}
    for aid, f, t, k in moves:
        if k:
            p = out[aid]
            p[f] -= k
            if not p[f]:
                del p[f]
            p[t] = p.get(t, 0) + k
    return out


def _sequence(snap: Snapshot, moves: list[Move], park: bool = False) -> list[Move] | None:
    """An order in which ``moves`` can run one after another from the snapshot's state: each
    move's target has room for it once the moves before it have released their sources
    (None: no such order, e.g. a swap with no room to spare).

    With ``park``, a cycle with no room to spare is broken by parking: one move's replicas
    go first to a running resource that has room now and fits them, and on to their
    target once it has room (two moves instead of one: the price of a swap on a full
    fleet)."""
    by_id = {a.id: a for a in snap.allocations}
    used = snap.used()
    free = {r.id: [r.capacity[d] - used[r.id][d] for d in range(3)] for r in snap.resources}
    hosted = {rid for a in snap.allocations for rid, _ in a.placements}
    pending, order = list(moves), []

    def room(rid: str, need: list[float]) -> bool:
        return all(free[rid][d] + EPS >= need[d] for d in range(3))

    def run(m: Move, need: list[float]) -> None:
        for d in range(3):
            free[m.to_resource][d] -= need[d]
            free[m.from_resource][d] += need[d]
        order.append(m)

    while pending:
        for i, m in enumerate(pending):
            need = [by_id[m.allocation_id].demand[d] * m.replicas for d in range(3)]
            if room(m.to_resource, need):
                run(pending.pop(i), need)
                break
        else:
            if not park or len(order) > 4 * len(moves) + 8:
                return None
            spot = None
            for i, m in enumerate(pending):
                a = by_id[m.allocation_id]
                need = [a.demand[d] * m.replicas for d in range(3)]
                # Running resources only (parking must not open one), roomiest first.
                spots = sorted((r for r in snap.resources
                                if r.usable and (r.open or r.id in hosted) and r.id not in (m.from_resource,
                                                                                            m.to_resource)
                                and a.fits_on(r) and room(r.id, need)),
                               key=lambda r: (-sum(free[r.id][d] / r.capacity[d] for d in range(3)
                                                   if r.capacity[d] > 0), r.id))
                if spots:
                    spot = (i, m, spots[0].id, need)
                    break
            if spot is None:
                return None
            i, m, rid, need = spot
            pending.pop(i)
            run(Move(m.allocation_id, m.from_resource, rid, m.replicas, m.reason), need)
            pending.append(Move(m.allocation_id, rid, m.to_resource, m.replicas, m.reason))
    return order


def _executable(snap: Snapshot, before: _Fleet, after: _Fleet) -> bool:
    """Can the moves from ``before`` to ``after`` run all at once? A move holds its target
    from reservation while the work it replaces elsewhere may not have left yet, so every
    resource must hold what it holds now plus everything arriving. (The greedy passes meet
    this by construction: a resource that gives work away is emptied and never receives.)"""
    by_id = {a.id: a for a in snap.allocations}
    for r in snap.resources:
        load = [r.capacity[d] - before.free[r.id][d] for d in range(3)]
        for aid, pl in after.place.items():
            gain = pl.get(r.id, 0) - before.place[aid].get(r.id, 0)
            if gain > 0:
                for d in range(3):
                    load[d] += by_id[aid].demand[d] * gain
        if any(load[d] > r.capacity[d] * (1 + 1e-9) + 1e-9 for d in range(3)):
            return False
    return True


def _net_moves(snap: Snapshot, fleet: _Fleet, hosted: set[str]) -> list[Move]:
    """Moves from each allocation's placements in the snapshot to its final ones. A move is
    an evacuation if it leaves a failed resource, a rebalance if it lands on a resource
    that was not running, else a consolidation."""
    moves: list[Move] = []
    for a in snap.allocations:
        before, after = dict(a.placements), fleet.place[a.id]
        if before == after:
            continue
        down, up = _diff(before, after)
        down.sort(key=lambda d: snap.resource(d[0]).usable)   # failed sources first: theirs move
        for f, t, k in _pair(down, up):
            src, dst = snap.resource(f), snap.resource(t)
            reason = ("evacuation" if not src.usable else
                      "rebalance" if not (dst.open or dst.id in hosted) else "consolidation")
            moves.append(Move(a.id, f, t, k, reason))
    return moves


def _better(a: _Fleet, b: _Fleet) -> bool:
    ca, cb = a.cost(), b.cost()
    if ca != cb:
        return ca < cb
    if a.disruption != b.disruption:
        return a.disruption < b.disruption
    return len(a.moves) < len(b.moves)


def apply_moves(snap: Snapshot, moves: Sequence[Move]) -> dict[str, dict[str, int]]:
    """Each allocation's placements after ``moves`` (resource id -> replicas); raises
    ValueError for a move that takes replicas a resource does not hold."""
    place = {a.id: dict(a.placements) for a in snap.allocations}
    for m in moves:
        p = place.get(m.allocation_id)
        if p is None or p.get(m.from_resource, 0) < m.replicas or m.replicas < 1:
            raise ValueError(f"move {m} takes replicas {m.from_resource} does not hold")
        p[m.from_resource] -= m.replicas
        if not p[m.from_resource]:
            del p[m.from_resource]
        p[m.to_resource] = p.get(m.to_resource, 0) + m.replicas
    return place
