"""Benchmark: the migration planner against the exact optimum (HiGHS MIP), and its speed.

Instances are fragmented fleets built from data/: own Alibaba nodes (priced at amortized
capex + opex) and GCP europe-west4 / DigitalOcean VMs, all running, with Alibaba v2023
CPU pods scattered over them at random (first fit in a shuffled order: the fragmentation
a day of arrivals and departures leaves).

* consolidation: the plan's resulting fleet cost (free moves, no budget limits) against
  the least fleet cost any reassignment of the same replicas reaches (HiGHS: which
  resources to keep, integer replicas per resource, capacity per dimension). Aim: within
  10 % on every instance.
* evacuation: two own nodes fail; how often the plan leaves work unplaced although the
  MIP finds room for all of it (jointly; the planner guarantees it per allocation).
* speed: planning time on a larger fleet with one failed node, against HiGHS solving the
  same consolidation exactly (time-limited).

Run:  python -m load.bench_migration   (needs highspy: pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

from load import instances
from load.machine import machine, pin_to_one_core, save_result

from tessera.migration.budget import DisruptionBudget
from tessera.migration.planner import plan
from tessera.migration.snapshot import Allocation, Resource, Snapshot

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
FREE_MOVES = DisruptionBudget(move_cost=Decimal(0), horizon_s=30 * 86400.0)


def fleet(rng: random.Random, n_own: int, n_partner: int, n_alloc: int, failed: int = 0) -> Snapshot:
    """A fragmented running fleet: resources from the catalogs, pods first-fit in random order."""
    pool = instances.resources(1800, dims=3)
    own = [r for r in pool if r.provider == "own" and r.capacity[2] == 0]
    partners = [r for r in pool if r.provider != "own" and r.capacity[2] == 0 and 2 <= r.capacity[0] <= 32]
    chosen = rng.sample(own, n_own) + [rng.choice(partners) for _ in range(n_partner)]
    resources = [Resource(id=f"{i}:{r.id}", provider=r.provider, region="eu", capacity=r.capacity,  # type: ignore[arg-type]
                          price_per_hour=r.price_per_hour, open=True, healthy=i >= failed, pool=r.provider)
                 for i, r in enumerate(chosen)]
    pods = [q for q in instances.requests(8152, dims=3) if q.demand[2] == 0 and q.demand[0] <= 8]
    free = {r.id: list(r.capacity) for r in resources}
    allocations = []
    for j in range(n_alloc):
        q = rng.choice(pods)
        k = rng.randint(1, 3)
        order = resources[:]
        rng.shuffle(order)
        placements: dict[str, int] = {}
        for _ in range(k):
            for r in order:
                f = free[r.id]
                if all(f[d] >= q.demand[d] for d in range(3)):
                    for d in range(3):
                        f[d] -= q.demand[d]
                    placements[r.id] = placements.get(r.id, 0) + 1
                    break
        if placements:
            allocations.append(Allocation(id=f"a{j}", tier=q.tier if q.tier != "platinum" else "gold",
                                          demand=q.demand, placements=tuple(sorted(placements.items()))))  # type: ignore
    return Snapshot(now=NOW, resources=tuple(resources), allocations=tuple(allocations))


def frozen(snap: Snapshot) -> bool:
    """Whether no replica can move anywhere now: every running resource is too full for
    any replica of any allocation that fits on it. A move must reserve its target before
    it leaves its source, so such a fleet's only reachable saving is closing its idle
    resources, whatever cheaper reassignment the MIP finds."""
    used = snap.used()
    for a in snap.allocations:
        here = {rid for rid, _ in a.placements}
        for r in snap.resources:
            if r.usable and r.id not in here and a.fits_on(r) and \
                    all(r.capacity[d] - used[r.id][d] + 1e-9 >= a.demand[d] for d in range(3)):
                return False
    return True


def exact_fleet_cost(snap: Snapshot, time_limit: float = 60.0) -> tuple[Decimal | None, bool, float]:
    """Least price of the resources kept when every replica may move (None if infeasible);
    whether HiGHS proved it optimal within the time limit; the solve time."""
    import highspy

    h = highspy.Highs()
    h.silent()
    h.setOptionValue("time_limit", time_limit)
    usable = [r for r in snap.resources if r.usable]
    y = {r.id: h.addBinary() for r in usable}
    load: dict = {(r.id, d): [] for r in usable for d in range(3)}
    for a in snap.allocations:
        xs = []
        for r in usable:
            if not a.fits_on(r):
                continue
            x = h.addVariable(lb=0, ub=a.replicas, type=highspy.HighsVarType.kInteger)
            xs.append(x)
            for d in range(3):
                if a.demand[d]:
                    load[(r.id, d)].append(a.demand[d] * x)
        if not xs:
            return None, True, 0.0
        h.addConstr(sum(xs) == a.replicas)
    for r in usable:
        for d in range(3):
            if load[(r.id, d)]:
                h.addConstr(sum(load[(r.id, d)]) <= r.capacity[d] * y[r.id])
    t0 = time.perf_counter()
    h.minimize(sum(float(r.price_per_hour) * y[r.id] for r in usable))
    elapsed = time.perf_counter() - t0
    status = h.getModelStatus()
    if h.getInfo().primal_solution_status != 2:
        return None, status == highspy.HighsModelStatus.kOptimal, elapsed
    return (Decimal(str(round(h.getInfo().objective_function_value, 6))),
            status == highspy.HighsModelStatus.kOptimal, elapsed)


def consolidation(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    rows, ratios = [], []
    for i in range(n):
        snap = fleet(rng, n_own=2, n_partner=8, n_alloc=rng.randint(8, 16))
        t0 = time.perf_counter()
        p = plan(snap, FREE_MOVES)
        plan_ms = (time.perf_counter() - t0) * 1000
        opt, proven, _ = exact_fleet_cost(snap)
        ratio = float(p.cost_after / opt) if opt else 1.0
        ratio = 1.0 if abs(ratio - 1.0) < 1e-6 else ratio   # HiGHS reports the optimum to 6 decimals
        ratios.append(ratio)
        rows.append({"cost_before": str(p.cost_before), "plan_cost": str(p.cost_after), "optimum": str(opt),
                     "proven_optimal": proven, "ratio": round(ratio, 4), "frozen": frozen(snap), "moves": len(p.moves),
                     "closed": len(p.closed), "plan_ms": round(plan_ms, 1), "order": p.order})
        print(f"\r  consolidation {i + 1}/{n}: plan {p.cost_after} vs optimum {opt}", end="", file=sys.stderr,
              flush=True)
    print(file=sys.stderr)
    within = sum(r <= 1.10 + 1e-9 for r in ratios)
    beyond = [r for r in rows if r["ratio"] > 1.10 + 1e-9]
    return {"instances": n, "resources_per_instance": 10, "allocations_per_instance": "8-16",
            "within_10_percent": within,
            # Of those beyond 10 %: fleets where no replica can move at all (the MIP's
            # reassignment is a swap with nowhere to stand); the plan closes their idle resources.
            "beyond_10_percent_frozen": sum(r["frozen"] for r in beyond), "optimal": sum(r <= 1 + 1e-9 for r in ratios),
            "median_ratio": round(statistics.median(ratios), 4), "worst_ratio": round(max(ratios), 4),
            "mean_saving_share": round(statistics.mean(
                float(1 - Decimal(r["plan_cost"]) / Decimal(r["cost_before"])) for r in rows), 4),
            "detail": rows}


def evacuation(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    missed = feasible = 0
    for i in range(n):
        snap = fleet(rng, n_own=4, n_partner=10, n_alloc=rng.randint(6, 12), failed=2)
        p = plan(snap, FREE_MOVES)
        opt, _, _ = exact_fleet_cost(snap, time_limit=20.0)
        if opt is not None:
            feasible += 1
            missed += bool(p.unplaced)
        print(f"\r  evacuation {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"instances": n, "failed_nodes_per_instance": 2, "instances_with_room": feasible,
            "left_work_unplaced_although_room_existed": missed}


def speed(seed: int) -> dict:
    rng = random.Random(seed)
    snap = fleet(rng, n_own=40, n_partner=160, n_alloc=300, failed=1)
    plan(snap, FREE_MOVES)   # compile / load the kernels
    t0 = time.perf_counter()
    p = plan(snap, FREE_MOVES)
    plan_s = time.perf_counter() - t0
    opt, proven, mip_s = exact_fleet_cost(snap, time_limit=120.0)
    return {"resources": len(snap.resources), "allocations": len(snap.allocations),
            "replicas": sum(a.replicas for a in snap.allocations), "plan_s": round(plan_s, 3),
            "moves": len(p.moves), "closed": len(p.closed), "plan_cost": str(p.cost_after),
            "cost_before": str(p.cost_before), "highs_s": round(mip_s, 3), "highs_cost": str(opt),
            "highs_proven_optimal": proven, "speedup_vs_highs": round(mip_s / plan_s, 1) if plan_s else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    core = pin_to_one_core()
    report = {"benchmark": "migration planner vs the exact optimum (HiGHS MIP)",
              "consolidation": consolidation(args.instances, args.seed),
              "evacuation": evacuation(args.instances, args.seed + 1),
              "speed": speed(args.seed + 2),
              "machine": machine(), "pinned_to_core": core,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print({k: v for k, v in report["consolidation"].items() if k != "detail"})
    save_result("migration", report, ("evacuation", "speed"))
    return report


if __name__ == "__main__":
    main()
