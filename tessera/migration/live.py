"""The planner's snapshot of a live scheduler core: what the migration agent and the
simulator both plan on (one builder, so the two cannot drift apart)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Collection, Mapping

from tessera.scheduler.core import ResourceState, Scheduler

from .snapshot import Allocation, Resource, Snapshot

OWN = "own"


def live_snapshot(core: Scheduler, now: datetime, *, busy: Collection[str] = (),
                  gone: Mapping[str, ResourceState] | None = None, openable: Collection[str] = (),
                  held: Mapping[str, tuple[float, float, float]] | None = None,
                  forecast: tuple[tuple[datetime, float, float | None], ...] = ()) -> Snapshot:
    """``core``'s resources and live allocations as a Snapshot at ``now``.

    * capacity a migration in flight holds on its target (``core.moving``), and ``held``
      (reservations not yet applied), is taken off that resource;
    * allocations in ``busy`` (a migration in flight) are left out, their capacity taken off
      where they sit: one move per allocation at a time;
    * resources in ``gone`` (removed, while work may still sit on them) are included as
      unhealthy when work sits there;
    * resources in ``openable`` count as healthy although the core keeps them unhealthy
      (closed capacity the planner may open, at its price);
    * a partner resource billed per unit and holding work is priced at what its work costs
      there (emptying it stops those units, not a VM); one billed whole at its VM price;
    * own capacity is priced 0: it stays in service whatever the plan (Tessera does not
      power nodes down), so emptying it saves nothing and filling it costs nothing more.
      Consolidation therefore empties partner capacity onto own capacity and onto other
      partner capacity, never own nodes for their own sake.
    """
    gone = gone or {}
    taken: dict[str, list[float]] = {}

    def take(rid: str, demand, k: int) -> None:
        t = taken.setdefault(rid, [0.0, 0.0, 0.0])
        for d in range(3):
            t[d] += demand[d] * k

    for aid, _, target, k in core.moving.values():
        a = core.allocations.get(aid)
        if a is not None:
            take(target, a.demand, k)
    for rid, h in (held or {}).items():
        take(rid, h, 1)
    for a in core.allocations.values():
        if a.allocation_id in busy:
            for rid, k in a.placements:
                take(rid, a.demand, k)
    hosting = {rid for a in core.allocations.values() for rid, _ in a.placements}
    held: dict[str, list[tuple[tuple[float, float, float], int]]] = {}
    for a in core.allocations.values():
        for rid, k in a.placements:
            held.setdefault(rid, []).append((a.demand[:3], k))  # type: ignore[arg-type]
    states = list(core.resources.values()) + [g for rid, g in gone.items() if rid in hosting]
    resources = []
    for st in states:
        t = taken.get(st.resource_id, (0.0, 0.0, 0.0))
        healthy = (st.healthy or st.resource_id in openable) and st.resource_id not in gone
        price = st.price
        if st.provider == OWN:
            price = Decimal(0)
        elif st.offer is not None and st.resource_id in held:
            # emptied, a partner billed per unit saves what it bills for the work, not the VM
            price = core.prices.saved_by_emptying(st.offer, held[st.resource_id], core._now_us)
        resources.append(Resource(
            id=st.resource_id, provider=st.provider, region=st.region,
            capacity=tuple(max(0.0, c - x) for c, x in zip(st.capacity[:3], t)),  # type: ignore[arg-type]
            price_per_hour=price, tags=st.tags, open=st.resource_id in core.running, healthy=healthy,
            pool=st.provider))
    known = {r.id for r in resources}
    allocations = []
    for a in core.allocations.values():
        if a.allocation_id in busy or not all(rid in known for rid, _ in a.placements):
            continue
        placements: dict[str, int] = {}
        for rid, k in a.placements:
            placements[rid] = placements.get(rid, 0) + k
        allocations.append(Allocation(
            id=a.allocation_id, tier=a.tier, demand=a.demand[:3],  # type: ignore[arg-type]
            placements=tuple(sorted(placements.items())), tags_required=a.tags, regions=a.regions,
            providers=a.providers, tenant=a.tenant, expected_end=a.expires_at))
    return Snapshot(now=now, resources=tuple(resources), allocations=tuple(allocations), forecast=forecast)
