"""The migration planner: its invariants under random snapshots (hypothesis), each reason
on a hand-made fleet, the budget, and the offline CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.migration import planner
from tessera.migration.budget import DailyWindow, DisruptionBudget
from tessera.migration.planner import apply_moves, plan
from tessera.migration.snapshot import SnapshotError, overcommitted, parse_snapshot

NOW = "2026-11-30T03:00:00Z"


def res(rid, provider="own", vcpu=16, mem=64, price="0.10", open_=True, healthy=True, **kw):
    return {"id": rid, "provider": provider, "region": kw.pop("region", "dc1"), "vcpu": vcpu, "memory_gib": mem,
            "gpu": kw.pop("gpu", 0), "price_per_hour": price, "open": open_, "healthy": healthy, **kw}


def alloc(aid, placements, vcpu=1, mem=2, tier="silver", end="2026-11-30T09:00:00Z", **kw):
    d = {"id": aid, "tier": tier, "vcpu": vcpu, "memory_gib": mem, "gpu": kw.pop("gpu", 0),
         "placements": [{"resource_id": r, "replicas": k} for r, k in placements], **kw}
    if end:
        d["expected_end"] = end
    return d


def snapshot(resources, allocations, **kw):
    return parse_snapshot({"now": NOW, "resources": resources, "allocations": allocations, **kw})


# ----------------------------------------------------------------------------- invariants
@st.composite
def snapshots(draw):
    n_res = draw(st.integers(1, 7))
    resources = []
    for i in range(n_res):
        resources.append(res(
            f"r{i}", provider=draw(st.sampled_from(["own", "gcp", "do"])), vcpu=draw(st.sampled_from([4, 8, 16])),
            mem=draw(st.sampled_from([8, 16, 64])), price=str(draw(st.sampled_from([0, 0.05, 0.2, 0.4, 1.3]))),
            open_=draw(st.booleans()), healthy=draw(st.booleans()) if i else True,
            tags=sorted(draw(st.sets(st.sampled_from(["ssd", "pci"]), max_size=2))),
            region=draw(st.sampled_from(["dc1", "dc2"]))))
    free = {r["id"]: [r["vcpu"], r["memory_gib"]] for r in resources}
    allocations = []
    for j in range(draw(st.integers(0, 10))):
        v, m = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2, 4]))
        tier = draw(st.sampled_from(["platinum", "gold", "silver", "bronze"]))
        pls = []
        for _ in range(draw(st.integers(1, 2))):
            r = draw(st.sampled_from(resources))
            k = draw(st.integers(1, 3))
            k = min(k, int(free[r["id"]][0] // v), int(free[r["id"]][1] // m))
            if k > 0 and all(p[0] != r["id"] for p in pls):
                free[r["id"]][0] -= v * k
                free[r["id"]][1] -= m * k
                pls.append((r["id"], k))
        if pls:
            allocations.append(alloc(f"a{j}", pls, vcpu=v, mem=m, tier=tier,
                                     tags_required=["ssd"] if draw(st.booleans()) else [],
                                     regions=draw(st.sampled_from([[], ["dc1"], ["dc2"]])),
                                     end=draw(st.sampled_from([None, "2026-11-30T03:30:00Z", "2026-12-02T00:00:00Z"]))))
    return snapshot(resources, allocations)


budgets = st.builds(DisruptionBudget, max_moves=st.none() | st.integers(0, 4),
                    max_fraction=st.sampled_from([0.2, 0.5, 1.0]), move_cost=st.sampled_from([Decimal(0), Decimal("0.01"), Decimal(5)]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), budgets)
def test_plan_keeps_every_invariant(snap, budget):
    p = plan(snap, budget)
    after = apply_moves(snap, p.moves)          # every move takes replicas its source holds
    assert overcommitted(snap, after) is None   # no resource over-committed
    # ... not even while the moves run: all at once (each target holds its work plus what
    # arrives), or, when the plan says so, one after another in its order
    used = snap.used()
    for m in p.moves:
        a = next(a for a in snap.allocations if a.id == m.allocation_id)
        for d in range(3):
            used[m.to_resource][d] += a.demand[d] * m.replicas
            assert not p.in_order or used[m.to_resource][d] <= res_by_id_of(snap)[m.to_resource].capacity[d] + 1e-6
            if p.in_order:
                used[m.from_resource][d] -= a.demand[d] * m.replicas
    for r in snap.resources:
        assert all(u <= c * (1 + 1e-9) + 1e-9 for u, c in zip(used[r.id], r.capacity)), r.id
    res_by_id = {r.id: r for r in snap.resources}
    unplaced = {}
    for u in p.unplaced:
        unplaced[(u.allocation_id, u.resource_id)] = unplaced.get((u.allocation_id, u.resource_id), 0) + u.replicas
    for a in snap.allocations:
        assert sum(after[a.id].values()) == a.replicas        # every replica still placed
        for rid, k in after[a.id].items():
            r = res_by_id[rid]
            if not r.usable:                                  # left on a failed resource only if reported
                assert unplaced.get((a.id, rid)) == k
    moved_to = {(m.allocation_id, m.to_resource) for m in p.moves}
    by_alloc = {a.id: a for a in snap.allocations}
    for aid, rid in moved_to:
        assert by_alloc[aid].fits_on(res_by_id[rid]) and res_by_id[rid].usable
    for m in p.moves:
        if by_alloc[m.allocation_id].tier == "platinum":
            assert m.reason == "evacuation"
    if budget.max_moves is not None:
        assert len(p.moves) <= budget.max_moves
    # the reported saving is the fleet's cost before minus after
    hosting_after = {rid for pl in after.values() for rid in pl}
    hosting_before = {rid for a in snap.allocations for rid, _ in a.placements}
    before = sum((r.price_per_hour for r in snap.resources if r.open or r.id in hosting_before), Decimal(0))
    cost_after = sum((res_by_id[r].price_per_hour for r in hosting_after), Decimal(0))
    assert p.savings_per_hour == before - cost_after


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), budgets)
def test_a_packing_remembered_gives_the_plan_packing_afresh_gives(snap, budget):
    """A plan remembers each try's packing by work and fleet state; forgetting them before
    every try must change nothing."""
    remembered = plan(snap, budget)
    original = planner._place_cheapest

    def afresh(fleet, *args, **kwargs):
        fleet.tries.clear()
        return original(fleet, *args, **kwargs)

    planner._place_cheapest = afresh
    try:
        again = plan(snap, budget)
    finally:
        planner._place_cheapest = original
    assert remembered.as_dict() == again.as_dict()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), budgets)
def test_passes_skipped_for_lack_of_room_change_nothing(snap, budget):
    """A price class whose free capacity cannot hold the work in total is not packed; had
    it been packed, the plan would be the same."""
    skipping = plan(snap, budget)
    original = planner._lacks_room
    planner._lacks_room = lambda *args: False
    try:
        packing_every_pass = plan(snap, budget)
    finally:
        planner._lacks_room = original
    assert skipping.as_dict() == packing_every_pass.as_dict()


def res_by_id_of(snap):
    return {r.id: r for r in snap.resources}


def _fits_alone(snap, a, bad) -> bool:
    """Brute force: can ``a``'s replicas on failed resources fit the healthy room left?"""
    used = snap.used()
    need = sum(k for rid, k in a.placements if rid in bad)
    room = 0
    for r in snap.resources:
        if r.id in bad or not a.fits_on(r):
            continue
        free = [c - u for c, u in zip(r.capacity, used[r.id])]
        room += min((int(f // d + 1e-9) for f, d in zip(free, a.demand) if d > 0), default=0)
    return room >= need


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_evacuation_finds_a_target_whenever_one_exists(snap):
    bad = {r.id for r in snap.resources if not r.usable}
    evacuees = [a for a in snap.allocations if any(rid in bad for rid, _ in a.placements)]
    if len(evacuees) != 1:
        return     # with one evacuee "a target exists" is exact (below)
    p = plan(snap)
    a = evacuees[0]
    assert (not any(u.allocation_id == a.id for u in p.unplaced)) == _fits_alone(snap, a, bad)


# ----------------------------------------------------------------------------- reasons
def test_evacuates_to_the_cheapest_running_capacity_then_consolidates():
    snap = snapshot(
        [res("own-1", healthy=False), res("own-2"), res("gcp-1", "gcp", 8, 32, "0.40"), res("gcp-2", "gcp", 8, 32, "0.40"),
         res("do-1", "do", 8, 16, "0.20", open_=False)],
        [alloc("a1", [("own-1", 3)], 2, 4, "gold"), alloc("a2", [("gcp-1", 2)]),
         alloc("a3", [("gcp-2", 3)], 2, 2, "bronze", end=None), alloc("a4", [("own-2", 1)], tier="platinum")])
    p = plan(snap, DisruptionBudget(move_cost=Decimal("0.05")))
    assert [(m.allocation_id, m.to_resource, m.reason) for m in p.moves] == [
        ("a1", "own-2", "evacuation"), ("a2", "own-2", "consolidation"), ("a3", "own-2", "consolidation")]
    assert p.closed == ["gcp-1", "gcp-2", "own-1"]
    assert p.savings_per_hour == Decimal("0.90")
    assert any(s.reason == "tier_evacuate_only" and s.allocation_id == "a4" for s in p.skipped)


def test_rebalance_opens_cheaper_capacity_only_when_it_pays():
    resources = [res("gcp-1", "gcp", 8, 32, "0.40"), res("own-free", vcpu=8, mem=32, price="0.05", open_=False)]
    moved = plan(snapshot(resources, [alloc("a", [("gcp-1", 4)], end="2026-11-30T13:00:00Z")]),
                 DisruptionBudget(move_cost=Decimal("0.1")))
    assert [(m.to_resource, m.reason) for m in moved.moves] == [("own-free", "rebalance")]
    assert moved.opened == ["own-free"] and moved.savings_per_hour == Decimal("0.35")
    # A forecast that needs nothing does not hold it back, nor reports it as needed again
    # (the work does not fit on the running fleet: 'spare' is negative, which is none).
    quiet = plan(snapshot(resources, [alloc("a", [("gcp-1", 4)], end="2026-11-30T13:00:00Z")],
                          forecast=[{"at": "2026-11-30T03:20:00Z", "vcpu": 0}]), DisruptionBudget(move_cost=Decimal("0.1")))
    assert [m.to_resource for m in quiet.moves] == ["own-free"] and not quiet.skipped
    # Ends in 30 minutes: 0.35/h x 0.5 h does not repay 4 silver replicas x 0.1 x 2.
    short = plan(snapshot(resources, [alloc("a", [("gcp-1", 4)], end="2026-11-30T03:30:00Z")]),
                 DisruptionBudget(move_cost=Decimal("0.1")))
    assert not short.moves and short.skipped[0].reason == "not_worth_it"
    # decided before any packing: even its whole price would not repay the moves
    assert short.skipped[0].detail.startswith("saves at most its 0.4/h for 0.50 h"), short.skipped[0].detail


def test_forecast_keeps_capacity_that_will_be_needed_again():
    resources = [res("own-1", vcpu=8), res("gcp-1", "gcp", 8, 32, "0.40")]
    work = [alloc("a", [("own-1", 2)]), alloc("b", [("gcp-1", 2)])]
    assert plan(snapshot(resources, work)).closed == ["gcp-1"]
    busy = plan(snapshot(resources, work, forecast=[{"at": "2026-11-30T03:20:00Z", "vcpu": 10}]))
    assert not busy.moves and busy.skipped[0].reason == "needed_again"


def test_budget_bounds_moves_and_respects_maintenance_windows():
    resources = [res("own-1", vcpu=64, mem=256)] + [res(f"gcp-{i}", "gcp", 8, 32, "0.4") for i in range(4)]
    work = [alloc(f"a{i}", [(f"gcp-{i}", 1)], tenant="t") for i in range(4)]
    snap = snapshot(resources, work)
    assert len(plan(snap).moves) == 4
    assert len(plan(snap, DisruptionBudget(max_moves=2)).moves) == 2
    half = plan(snap, DisruptionBudget(max_fraction=0.5))
    assert len(half.moves) == 2 and {s.reason for s in half.skipped} == {"pool_budget"}
    recent = parse_snapshot({"now": NOW, "resources": resources, "allocations": work,
                             "recent_moves": [{"allocation_id": "a0", "at": "2026-11-30T02:30:00Z"}]})
    moved = {m.allocation_id for m in plan(recent, DisruptionBudget(max_fraction=0.5)).moves}
    assert moved and len(moved | {"a0"}) == 2     # a0, moved 30 minutes ago, counts in the window
    closed = plan(snap, DisruptionBudget(maintenance=(DailyWindow.parse("22:00-02:00"),)))
    assert not closed.moves and closed.skipped[0].reason == "outside_maintenance_window"
    assert len(plan(snap, DisruptionBudget(maintenance=(DailyWindow.parse("02:00-04:00"),))).moves) == 4


def test_unplaceable_evacuation_is_reported_with_its_reason():
    snap = snapshot([res("own-1", healthy=False), res("own-2", vcpu=2, tags=["ssd"])],
                    [alloc("big", [("own-1", 4)], vcpu=2), alloc("tagged", [("own-1", 1)], tags_required=["pci"])])
    p = plan(snap)
    reasons = {u.allocation_id: u.reason for u in p.unplaced}
    assert reasons == {"big": "insufficient_capacity", "tagged": "no_matching_resource"}
    assert not p.moves


@pytest.mark.parametrize("doc, message", [
    ({"now": "2026-11-30T03:00:00", "resources": []}, "no time zone"),
    ({"now": NOW, "resources": [res("a")], "allocations": [alloc("x", [("b", 1)])]}, "must name a resource"),
    ({"now": NOW, "resources": [res("a", vcpu=2)], "allocations": [alloc("x", [("a", 3)])]}, "more than its capacity"),
    ({"now": NOW, "resources": [res("a", price="cheap")]}, "price_per_hour"),
    ({"now": NOW, "resources": [res("a")], "allocations": [alloc("x", [("a", 1)], tier="gold+")]}, "unknown tier"),
])
def test_bad_snapshots_say_what_to_fix(doc, message):
    with pytest.raises(SnapshotError, match=message):
        parse_snapshot(doc)


def test_cli_prints_the_plan_as_json(tmp_path):
    doc = {"now": NOW, "resources": [res("own-1", healthy=False), res("own-2"), res("gcp-1", "gcp", 8, 32, "0.4")],
           "allocations": [alloc("a1", [("own-1", 2)]), alloc("a2", [("gcp-1", 1)])]}
    path = tmp_path / "snap.json"
    path.write_bytes(orjson.dumps(doc))
    cmd = [sys.executable, "-m", "tessera.app.cli.main", "migrate", "plan", "--snapshot", str(path), "--json",
           "--max-moves", "5", "--move-cost", "0.01"]
    out = subprocess.run(cmd, capture_output=True, check=True)
    result = orjson.loads(out.stdout)
    assert {(m["allocation_id"], m["to_resource"], m["reason"]) for m in result["moves"]} == {
        ("a1", "own-2", "evacuation"), ("a2", "own-2", "consolidation")}
    assert result["savings_per_hour"] == "0.5" and result["unplaced"] == []
    path.write_bytes(b"{not json")
    bad = subprocess.run(cmd, capture_output=True)
    assert bad.returncode == 2 and b"not JSON" in bad.stderr


def test_window_crossing_midnight():
    w = DailyWindow.parse("22:00-02:00")
    t = datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert w.contains(t + timedelta(hours=23)) and w.contains(t + timedelta(hours=1))
    assert not w.contains(t + timedelta(hours=3))


def test_a_swap_on_a_full_fleet_parks_a_replica_on_the_way():
    """Two allocations trading places between full resources: no move can go first, so one
    replica waits on a running resource with room, and every step still fits."""
    from tessera.migration.planner import Move, _sequence

    snap = snapshot([res("x", vcpu=4), res("y", vcpu=4), res("z", vcpu=4)],
                    [alloc("big", [("x", 1)], vcpu=3), alloc("small", [("x", 1), ("y", 1)], vcpu=1),
                     alloc("other", [("y", 1)], vcpu=3), alloc("spare", [("z", 1)], vcpu=1)])
    swap = [Move("big", "x", "y", 1, "consolidation"), Move("other", "y", "x", 1, "consolidation")]
    assert _sequence(snap, swap) is None
    steps = _sequence(snap, swap, park=True)
    assert steps is not None and len(steps) == 3
    assert [(m.from_resource, m.to_resource) for m in steps if m.allocation_id == "big"] == [("x", "z"), ("z", "y")]
    apply_moves(snap, steps)       # each step takes replicas its source holds
    used = snap.used()
    by_id = {a.id: a for a in snap.allocations}
    for m in steps:
        for d in range(3):
            used[m.to_resource][d] += by_id[m.allocation_id].demand[d] * m.replicas
            assert used[m.to_resource][d] <= next(r for r in snap.resources if r.id == m.to_resource).capacity[d]
            used[m.from_resource][d] -= by_id[m.allocation_id].demand[d] * m.replicas
