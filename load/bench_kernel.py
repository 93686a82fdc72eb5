"""Benchmark: the Numba packing kernel — speed against its plain-Python twin, quality
against an exact MIP (HiGHS) on small instances, gap to the lower bound on large ones.

Instances come from data/ (Alibaba v2023 pods as requests; Alibaba nodes priced at
amortized capex + opex as the own data center; GCP europe-west4 and DigitalOcean catalog
offers as partners). Run:  python -m load.bench_kernel   (needs `pip install highspy`
for the quality part; it is a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

from load import instances
from load.machine import machine, pin_to_one_core

from tessera.scheduler.packing import PackRequest, PackResource, pack_batch

RESULTS = Path(__file__).resolve().parent / "results"


def speed(n_req: int, n_res: int, repeats: int) -> dict:
    reqs, res = instances.requests(n_req), instances.resources(n_res)
    t0 = time.perf_counter()
    pack_batch(reqs[:2], res[:2])
    compile_s = time.perf_counter() - t0
    times, result = [], None
    for _ in range(repeats):
        result = pack_batch(reqs, res)
        times.append(result.kernel_seconds)
    print(f"  jit: median {statistics.median(times) * 1000:.1f} ms over {repeats} runs", file=sys.stderr)
    twin = pack_batch(reqs, res, jit=False)
    py_s = twin.kernel_seconds
    print(f"  plain Python twin: {py_s:.1f} s", file=sys.stderr)
    jit_med = statistics.median(times)
    return {
        "requests": n_req, "resources": n_res, "dimensions": 4,
        "jit_compile_or_cache_load_s": round(compile_s, 3),
        "kernel_ms_median": round(jit_med * 1000, 2), "kernel_ms_min": round(min(times) * 1000, 2),
        "kernel_ms_max": round(max(times) * 1000, 2), "runs": repeats,
        "python_twin_s": round(py_s, 3), "speedup_vs_python": round(py_s / jit_med, 1),
        "identical_placements": twin.placements == result.placements and twin.rejected == result.rejected,
        "placed": len(result.placements), "rejected": len(result.rejected), "opened": len(result.opened),
        "cost_of_opened_per_hour": format(result.cost, "f"),
        "lower_bound_per_hour": format(result.lower_bound, "f"), "gap_to_lower_bound": round(result.gap, 4),
    }


def mip_optimum(reqs: list[PackRequest], res: list[PackResource], placed: set[str]) -> Decimal:
    """Least opening cost that places exactly the requests the heuristic placed (HiGHS MIP)."""
    import highspy

    h = highspy.Highs()
    h.silent()
    chosen = [q for q in reqs if q.id in placed]
    y, replicas = _placement_model(h, chosen, res)
    for q in chosen:
        h.addConstr(replicas[q.id] == q.replicas)
    obj = sum(float(s.price_per_hour) * y[s.id] for s in res if not s.open)
    h.minimize(obj)
    return Decimal(str(round(h.getObjectiveValue(), 6)))


def quality(n_instances: int, seed: int = 42) -> dict:
    rng = random.Random(seed)
    all_req, all_res = instances.requests(8152), instances.resources(1800)
    cpu_req = [q for q in all_req if q.demand[2] == 0]
    gaps = []
    rows = []
    for i in range(n_instances):
        res = rng.sample(all_res[1523:], 14) + rng.sample(all_res[:1523], 6)
        res = [PackResource(r.id, r.provider, r.region, r.free, r.capacity, r.price_per_hour, r.tags,
                            open=(j < 2)) for j, r in enumerate(res)]
        n_rep = 0
        reqs = []
        while n_rep < 40:
            q = rng.choice(cpu_req)
            k = rng.randint(1, 3)
            reqs.append(PackRequest(f"{q.id}/{len(reqs)}", q.tier, k, q.demand, seq=len(reqs)))
            n_rep += k
        h = pack_batch(reqs, res)
        opt = mip_optimum(reqs, res, set(h.placements))
        gap = float((h.cost - opt) / opt) if opt > 0 else 0.0
        gaps.append(gap)
        rows.append({"heuristic": format(h.cost, "f"), "optimum": format(opt, "f"), "gap": round(gap, 4),
                     "lower_bound": format(h.lower_bound, "f"), "placed": len(h.placements), "requests": len(reqs)})
        print(f"\r  quality instance {i + 1}/{n_instances}: heuristic {h.cost} vs optimum {opt}", end="",
              file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"instances": n_instances, "replicas_per_instance": "~40", "resources_per_instance": 20,
            "median_gap_to_optimum": round(statistics.median(gaps), 4), "mean_gap": round(statistics.mean(gaps), 4),
            "worst_gap": round(max(gaps), 4), "share_optimal": round(sum(g <= 1e-9 for g in gaps) / len(gaps), 3),
            "detail": rows}


TIER_ORDER = ("platinum", "gold", "silver", "bronze")


def _compatible(q: PackRequest, s: PackResource) -> bool:
    return (q.tags_required <= s.tags and (not q.regions or s.region in q.regions)
            and (not q.providers or s.provider in q.providers))


def _placement_model(h, reqs: list[PackRequest], res: list[PackResource]) -> tuple[dict, dict]:
    """Integer replicas of each request on each compatible resource, within free capacity
    (a closed resource only if opened: binary ``y``). Returns ``y`` and, per request, the
    expression of its replicas placed."""
    import highspy

    D = len(res[0].capacity)
    y = {s.id: (h.addBinary() if not s.open else None) for s in res}
    load: dict = {(s.id, d): [] for s in res for d in range(D)}
    replicas = {}
    for q in reqs:
        xs = []
        for s in res:
            if not _compatible(q, s):
                continue
            x = h.addVariable(lb=0, ub=q.replicas, type=highspy.HighsVarType.kInteger)
            xs.append(x)
            for d in range(D):
                if q.demand[d]:
                    load[(s.id, d)].append(q.demand[d] * x)
        replicas[q.id] = sum(xs) if xs else 0
    for s in res:
        for d in range(D):
            if load[(s.id, d)]:
                cap = s.free[d]
                h.addConstr(sum(load[(s.id, d)]) <= (cap if s.open else cap * y[s.id]))
    return y, replicas


def lexicographic_optimum(reqs: list[PackRequest], res: list[PackResource]) -> tuple[list[int], Decimal]:
    """The yardstick: most replicas of each tier in turn (platinum first), then least cost of
    newly opened resources; requests are placed whole or not at all (HiGHS MIP, one solve
    per stage, each stage's optimum fixed as a constraint for the next)."""
    import highspy

    h = highspy.Highs()
    h.silent()
    y, replicas = _placement_model(h, reqs, res)
    z = {q.id: h.addBinary() for q in reqs}
    for q in reqs:
        h.addConstr(replicas[q.id] - q.replicas * z[q.id] == 0)
    counts = []
    for tier in TIER_ORDER:
        group = [q for q in reqs if q.tier == tier]
        if not group:
            counts.append(0)
            continue
        expr = sum(q.replicas * z[q.id] for q in group)
        h.maximize(expr)
        best = int(round(h.getObjectiveValue()))
        counts.append(best)
        h.addConstr(expr >= best)
    cost = sum(float(s.price_per_hour) * y[s.id] for s in res if not s.open)
    h.minimize(cost)
    return counts, Decimal(str(round(h.getObjectiveValue(), 6)))


def lexicographic_quality(n_instances: int, seed: int = 7) -> dict:
    """Freshly generated small instances of the shape a user tried (14 resources, 20-40
    replicas, with tags, regions and tiers): does `tessera pack` (FULL search) reach the
    optimum's replicas of every tier, and how far is its cost from the optimum's?"""
    rng = random.Random(seed)
    all_req, all_res = instances.requests(8152), instances.resources(1800)
    cpu_req = [q for q in all_req if q.demand[2] == 0]
    tags = ("ssd", "hipaa", "pci")
    regions = ("eu", "us")
    rows, gaps, short = [], [], 0
    for i in range(n_instances):
        picked = rng.sample(all_res[1523:], 10) + rng.sample(all_res[:1523], 4)
        res = [PackResource(r.id, r.provider, rng.choice(regions), r.free, r.capacity, r.price_per_hour,
                            frozenset(t for t in tags if rng.random() < 0.5), open=(j < 2))
               for j, r in enumerate(picked)]
        reqs, n_rep, goal = [], 0, rng.randint(20, 40)
        while n_rep < goal:
            q = rng.choice(cpu_req)
            k = rng.randint(1, 3)
            reqs.append(PackRequest(f"{q.id}/{len(reqs)}", rng.choice(TIER_ORDER), k, q.demand,
                                    tags_required=frozenset(t for t in tags if rng.random() < 0.2),
                                    regions=frozenset([rng.choice(regions)]) if rng.random() < 0.3 else frozenset(),
                                    seq=len(reqs)))
            n_rep += k
        got = pack_batch(reqs, res)
        placed = {q.id for q in reqs if q.id in got.placements}
        mine = [sum(q.replicas for q in reqs if q.tier == t and q.id in placed) for t in TIER_ORDER]
        best, opt = lexicographic_optimum(reqs, res)
        same = mine == best
        short += not same
        gap = float((got.cost - opt) / opt) if same and opt > 0 else (0.0 if same else None)
        if gap is not None:
            gaps.append(gap)
        rows.append({"replicas_by_tier": mine, "optimum_replicas_by_tier": best, "cost": format(got.cost, "f"),
                     "optimum_cost": format(opt, "f"), "gap": None if gap is None else round(gap, 4)})
        print(f"\r  lexicographic instance {i + 1}/{n_instances}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"instances": n_instances, "resources_per_instance": 14, "replicas_per_instance": "20-40",
            "reached_optimum_replicas": n_instances - short,
            "median_cost_gap": round(statistics.median(gaps), 4) if gaps else None,
            "worst_cost_gap": round(max(gaps), 4) if gaps else None, "detail": rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--resources", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--quality-instances", type=int, default=30)
    ap.add_argument("--out", default=str(RESULTS / "kernel.json"))
    args = ap.parse_args(argv)
    core = pin_to_one_core()
    print(f"speed: {args.requests} requests onto {args.resources} resources (pinned to core {core})",
          file=sys.stderr)
    report = {"benchmark": "packing kernel (numba.njit) vs its plain-Python twin; quality vs exact MIP (HiGHS)",
              "speed": speed(args.requests, args.resources, args.repeats)}
    try:
        report["quality"] = quality(args.quality_instances)
        report["lexicographic_quality"] = lexicographic_quality(args.quality_instances)
    except ImportError:
        report["quality"] = "skipped: pip install highspy"
    report["machine"] = machine()
    report["numba_threads"] = 1
    report["pinned_to_core"] = core
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "quality"}
    if isinstance(report["quality"], dict):
        summary["quality"] = {k: v for k, v in report["quality"].items() if k != "detail"}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
