"""Economics: do prediction and learning save money? Reactive vs predictive vs oracle vs
learned on real traces, through ``tessera.simulate`` (the live cores, virtual clock).

Traces (all from ``data/``, see data/SOURCES.md):

* ``alibaba-v2023-pods``: the 8,124 Alibaba GPU-cluster v2023 pods that arrive within the
  trace's dense 35 days, as they are (GPU pods included; tier from the QoS class), on 8 own
  nodes (every 200th of the cluster) and GCP / DigitalOcean VMs including GPU ones;
* ``google2019-cpu`` and ``alibaba2018-cpu``: 7 days of the cluster-wide CPU series
  (300 s steps) turned into arrivals: jobs of 4 vCPU / 16 GiB lasting 30 min, so that the
  vCPU in flight follows the series scaled to a 400 vCPU peak; tiers in turn 1:3:4:2
  (platinum:gold:silver:bronze).

Fleet: own nodes (Alibaba v2023 node list: amortized capex + opex; for the series about 60 % of
the peak), and GCP europe-west4 + DigitalOcean catalog VMs billed per instance-hour at list
price, usable 90 s (GCP) / 60 s (DigitalOcean) after they are opened and closed after
10 idle minutes (``load/economics/fleet-*.toml``). Each trace also runs with *slow
partners* (usable 10 minutes after opening: bare-metal or scarce GPU capacity), where
waiting for capacity breaks the gold and platinum targets.

Reported per trace and policy: cost (base currency, own + partner bills), SLA misses, and
the share of the oracle's saving over reactive that a policy captures,
``(cost_reactive - cost_policy) / (cost_reactive - cost_oracle)``. The partner share of the
cost is what the policies can change (own capacity is paid whatever happens), so it is
reported too. Also the simulator's speed (trace requests and control intervals per wall
second, one core), and for each trace with its default partners the best and median of
five timed runs of each policy, and of predictive with smaller blends of the demand
engine's models (``tessera simulate --models``): where a forecasting run's time goes.

    python -m load.bench_economics            # everything (~10 min)
    python -m load.bench_economics --quick    # one day of each series, for a smoke run

"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from load.machine import machine, pin_to_one_core, save_result

from tessera.app.datasets import QOS_TIER
from tessera.forecast import MODEL_NAMES
from tessera.pricing.agreements import load_agreements
from tessera.schemas import SlaTier
from tessera.simulate.engine import SimConfig, Simulation, simulate
from tessera.simulate.fleet import load_fleet
from tessera.simulate.trace import load_trace

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
HERE = Path(__file__).resolve().parent / "economics"
POLICIES = ("reactive", "predictive", "oracle", "learned")
TIERS = ["platinum"] + ["gold"] * 3 + ["silver"] * 4 + ["bronze"] * 2


def pods_trace(path: Path) -> int:
    rows = list(csv.DictReader((DATA / "alibaba_clusterdata_gpu_v2023/openb_pod_list_default.csv").open()))
    rows = [r for r in rows if r["creation_time"] and 9.9e6 <= float(r["creation_time"]) <= 12.9e6]
    rows.sort(key=lambda r: (float(r["creation_time"]), r["name"]))
    t0 = float(rows[0]["creation_time"])
    end = max(float(r["creation_time"]) for r in rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submit_time", "duration_s", "vcpu", "memory_gib", "gpu", "tier", "tenant"])
        for r in rows:
            created = float(r["creation_time"])
            gone = float(r["deletion_time"]) if r["deletion_time"] else end
            w.writerow([round(created - t0, 3), max(1.0, gone - created), int(r["cpu_milli"]) / 1000,
                        round(int(r["memory_mib"]) / 1024, 3), int(r["num_gpu"] or 0),
                        QOS_TIER.get(r["qos"], SlaTier.silver).value, "openb"])
    return len(rows)


def series_trace(path: Path, file: str, column: str, days: float, peak_vcpu: float = 400.0,
                 job_vcpu: float = 4.0, job_s: float = 1800.0, step_s: float = 300.0,
                 tiers: list[str] = TIERS) -> int:
    values = [float(r[column]) for r in csv.DictReader((DATA / "datacenter_traces_datasets" / file).open())]
    values = values[: int(days * 86_400 / step_s)]
    top = max(values)
    lasting = int(job_s // step_s)
    started: list[int] = []
    n = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submit_time", "duration_s", "vcpu", "memory_gib", "tier", "tenant"])
        for k, v in enumerate(values):
            in_flight = sum(started[-(lasting - 1):]) if lasting > 1 else 0
            new = max(0, round(peak_vcpu * v / top / job_vcpu) - in_flight)
            started.append(new)
            for j in range(new):
                w.writerow([round(k * step_s + step_s * j / new, 3), job_s, job_vcpu, job_vcpu * 4,
                            tiers[n % len(tiers)], f"tenant-{n % 3}"])
                n += 1
    return n


def trace_runs(tmp: Path, days: float, pods: bool = True) -> list[tuple[str, Path, Path]]:
    """The benchmark's runs, (name, fleet file, request file): each series (``days`` of it)
    and, with ``pods``, the pods trace, each with the default and with slow partners. The
    request files are written under ``tmp``."""
    out = []
    for name, file, column in (("google2019-cpu", "google2019_instance_usage_grouped_300_seconds_month.csv", "avg_cpu"),
                               ("alibaba2018-cpu", "alibaba2018_machine_usage_days_1_to_8_grouped_300_seconds.csv",
                                "cpu_util_percent")):
        req = tmp / f"{name}.csv"
        series_trace(req, file, column, days)
        out += [(name, HERE / "fleet-series.toml", req), (f"{name}, slow partners", HERE / "fleet-series-slow.toml", req)]
    if pods:
        req = tmp / "pods.csv"
        pods_trace(req)
        out += [("alibaba-v2023-pods", HERE / "fleet-pods.toml", req),
                ("alibaba-v2023-pods, slow partners", HERE / "fleet-pods-slow.toml", req)]
    return out


#: Runs per simulation timed for the speed figures: on this host the same run's wall time
#: varies by a quarter from one run to the next, so the best and the median of a few are
#: reported.
SPEED_RUNS = 5


def simulator_speed(name: str, fleet, agreements, trace, start, policies: dict, seed: int = 0) -> tuple[dict, dict]:
    """Trace requests per wall second of one simulation, best and median of SPEED_RUNS
    runs each: reactive at the buffer its search chose (one run, not the search),
    predictive, learned, predictive with migration and predictive with the smaller of
    ``BLENDS``, timed in the same rounds. Returns the policies' timings and the blends'
    (``blend_figures``)."""
    configs = {"reactive": SimConfig(policy="reactive", seed=seed, buffer_vcpu=policies["reactive"]["buffer_vcpu"]),
               "predictive": SimConfig(policy="predictive", seed=seed),
               "learned": SimConfig(policy="learned", seed=seed),
               "predictive + migration": SimConfig(policy="predictive", seed=seed, migrate=True)}
    smaller = {f"predictive, {label}": SimConfig(policy="predictive", seed=seed, forecast_models=models)
               for label, models in BLENDS.items() if models != MODEL_NAMES}
    timed = _timed(configs | smaller, fleet, agreements, trace, start)
    speed = {label: timed[label][0] for label in configs}
    print(f"  {name} speed (requests/s, best of {SPEED_RUNS}): "
          + ", ".join(f"{k} {v['requests_per_s_best']}" for k, v in speed.items()), flush=True)
    # the blend of all six is the predictive run; reactive is the blends' yardstick
    blends = {"reactive": timed["reactive"]} | {
        f"predictive, {label}": timed["predictive" if models == MODEL_NAMES else f"predictive, {label}"]
        for label, models in BLENDS.items()}
    return speed, blend_figures(name, trace, blends)


def _timed(configs: dict, fleet, agreements, trace, start) -> dict:
    """label -> (best and median requests/s of SPEED_RUNS runs, the last run's cost, misses
    and control intervals). Only those figures are kept of a run: whole results kept alive
    would give the collector more to walk in the runs after them."""
    walls: dict[str, list[float]] = {label: [] for label in configs}
    last = {}
    for _ in range(SPEED_RUNS):          # round by round, so that a slow spell of the host hits every policy
        for label, config in configs.items():
            r = Simulation(fleet, agreements, trace, start, config).run()
            walls[label].append(r.wall_s)
            last[label] = {"cost_total": format(r.cost_total, "f"), "sla_miss_rate": round(r.sla_miss_rate, 6),
                           "intervals": len(r.timeline.t)}
            del r
    return {label: ({"runs": SPEED_RUNS, "wall_s": [round(w, 3) for w in ws],
                     "requests_per_s_best": round(len(trace) / min(ws)),
                     "requests_per_s_median": round(len(trace) / statistics.median(ws))}, last[label])
            for label, ws in walls.items()}


#: The demand engine's blends timed against each other (``--models``): all six models,
#: the three that are compiled or cheap, and the last value alone, which forecasts nothing
#: but leaves the engine's scoring, quantile tracking and issuing and the controller's use
#: of them (the floor of any forecasting policy here).
BLENDS = {"all six models": MODEL_NAMES, "direct_ar,holt_winters,last": ("direct_ar", "holt_winters", "last"),
          "last value only": ("last",)}


def blend_figures(name: str, trace, timed: dict) -> dict:
    """Reactive and predictive with each of ``BLENDS`` (``_timed``'s answers): where the
    time of a forecasting run goes (µs per control interval over reactive), what 10,000
    requests/s would leave per interval, and each run's cost and misses."""
    reactive_s = min(timed["reactive"][0]["wall_s"])
    intervals = timed["reactive"][1]["intervals"]
    out: dict = {"intervals": intervals,
                 "us_per_interval_at_10000_per_s": round((len(trace) / 10_000 - reactive_s) / intervals * 1e6, 1),
                 "runs": {}}
    for label, (timing, last) in timed.items():
        out["runs"][label] = {**timing, "cost_total": last["cost_total"], "sla_miss_rate": last["sla_miss_rate"],
                              "us_per_interval_over_reactive": round((min(timing["wall_s"]) - reactive_s)
                                                                     / intervals * 1e6, 1)}
    print(f"  {name} blends (requests/s, best of {SPEED_RUNS}; budget {out['us_per_interval_at_10000_per_s']} "
          "µs/interval over reactive at 10,000/s): " + ", ".join(
              f"{k} {v['requests_per_s_best']} (+{v['us_per_interval_over_reactive']} µs)"
              for k, v in out["runs"].items()), flush=True)
    return out


def run_trace(name: str, fleet_file: Path, req: Path, seed: int = 0, speed: bool = False) -> dict:
    fleet = load_fleet(fleet_file)
    agreements = load_agreements(HERE / "agreements.json")
    start, trace = load_trace(req)
    out: dict = {"trace": name, "requests": len(trace), "own_nodes": len(fleet.own),
                 "partner_vms": len(fleet.offers), "policies": {}}
    for policy in POLICIES:
        r = simulate(fleet, agreements, trace, start, SimConfig(policy=policy, seed=seed),
                     progress=lambda m: print(f"  {name}: {m}", flush=True))
        d = r.as_json()
        d["partner_cost"] = format(sum((c for p, c in r.cost_by_provider.items() if p != "own"), Decimal(0)), "f")
        runs = 1 if policy != "reactive" else max(1, _grid_runs(r.buffer_vcpu))
        d["requests_per_s"] = round(len(trace) * runs / r.wall_s) if r.wall_s else None
        # The controller's intervals (each learns and forecasts per urgent tier): on a sparse
        # trace they, not the requests, are what a run's time follows.
        d["intervals"] = len(r.timeline.t)
        d["intervals_per_s"] = round(len(r.timeline.t) * runs / r.wall_s) if r.wall_s else None
        out["policies"][policy] = d
        print(f"  {name} {policy}: cost {d['cost_total']} (partners {d['partner_cost']}), "
              f"misses {d['sla_miss_rate']:.4f}, {d['wall_s']} s", flush=True)
    out["capture"] = capture(out["policies"])
    out["predictive_by_blend"] = blend_costs(name, fleet, agreements, trace, start, out["policies"], seed)
    out["idle_closed_at_once"] = idle_closed_at_once(name, fleet, agreements, trace, start, seed)
    out["with_migration"] = with_migration(name, fleet, agreements, trace, start, out["policies"]["predictive"], seed)
    out["learned_with_migration"] = with_migration(name, fleet, agreements, trace, start, out["policies"]["learned"],
                                                   seed, policy="learned")
    if speed:
        out["speed"], out["speed_by_blend"] = simulator_speed(name, fleet, agreements, trace, start, out["policies"],
                                                              seed)
    return out


def blend_costs(name: str, fleet, agreements, trace, start, policies: dict, seed: int = 0,
                idle_close_share: float = 1.0) -> dict:
    """What a smaller blend of the demand engine (``BLENDS``) changes: predictive's cost,
    misses and share of the oracle's saving captured with each (all six: the predictive
    run itself, whose settings the others share). Where forecasts matter this is the
    forecasting a faster run gives up."""
    out = {}
    for label, models in BLENDS.items():
        if models == MODEL_NAMES:
            d = policies["predictive"]
        else:
            d = simulate(fleet, agreements, trace, start,
                         SimConfig(policy="predictive", seed=seed, forecast_models=models,
                                   idle_close_share=idle_close_share)).as_json()
        out[label] = {"cost_total": d["cost_total"], "sla_miss_rate": d["sla_miss_rate"],
                      "captured": capture({**policies, "predictive": d, "learned": d})["predictive"]}
    print(f"  {name} predictive by blend: " + ", ".join(
        f"{k} {v['cost_total']} ({v['sla_miss_rate']:.4f})" for k, v in out.items()), flush=True)
    return out


def idle_closed_at_once(name: str, fleet, agreements, trace, start, seed: int) -> dict:
    """Predictive with idle partner VMs closed at the next control tick (idle-close share 0,
    fixed): the yardstick for the learned policy, which tunes that share online among
    other knobs, so what its learning costs (exploration) against the best fixed setting it
    can find shows."""
    r = simulate(fleet, agreements, trace, start, SimConfig(policy="predictive", seed=seed, idle_close_share=0.0))
    d = r.as_json()
    print(f"  {name} predictive, idle VMs closed at once: cost {d['cost_total']}, misses {d['sla_miss_rate']:.4f}",
          flush=True)
    return {"cost_total": d["cost_total"], "sla_miss_rate": d["sla_miss_rate"], "wall_s": d["wall_s"]}


def with_migration(name: str, fleet, agreements, trace, start, without: dict, seed: int,
                   policy: str = "predictive") -> dict:
    """A policy again with the migration planner on (consolidation every hour): the saving
    is measured against the same policy without it, not asserted. (Learned then also tunes
    the consolidation threshold.)"""
    r = simulate(fleet, agreements, trace, start, SimConfig(policy=policy, seed=seed, migrate=True))
    d = r.as_json()
    before, after = Decimal(without["cost_total"]), r.cost_total
    out = {"cost_total": d["cost_total"], "cost_by_provider": d["cost_by_provider"],
           "partner_cost": format(sum((c for p, c in r.cost_by_provider.items() if p != "own"), Decimal(0)), "f"),
           "sla_miss_rate": d["sla_miss_rate"], "migrations": d["migrations"],
           "migration_reasons": d["migration_reasons"], "wall_s": d["wall_s"],
           "saving_vs_without": format(before - after, "f"),
           "saving_share": round(float((before - after) / before), 4) if before else 0.0}
    print(f"  {name} {policy} + migration: cost {out['cost_total']} (saves {out['saving_share']:.1%}), misses "
          f"{out['sla_miss_rate']:.4f}, {out['migrations']} moves, {out['wall_s']} s", flush=True)
    return out


class _Stop(Exception):
    pass


def busiest_own_nodes(fleet, agreements, trace, start, at: float, n: int) -> list[str]:
    """The own nodes holding the most replicas at ``at`` (a first run, stopped there)."""
    from tessera.simulate.engine import Simulation

    found: list[str] = []

    class Probe(Simulation):
        def _control(self, now: float) -> None:
            if now >= at:
                held: dict[str, int] = {}
                for a in self.core.allocations.values():
                    for rid, k in a.placements:
                        if rid.startswith("own/"):
                            held[rid] = held.get(rid, 0) + k
                found.extend(sorted(held, key=lambda r: (-held[r], r))[:n])
                raise _Stop
            super()._control(now)

    try:
        Probe(fleet, agreements, trace, start, SimConfig(policy="predictive")).run()
    except _Stop:
        pass
    return found


def failure_drill(fleet_file: Path, req: Path, nodes: int = 2) -> dict:
    """The busiest own nodes fail a third of the way into the trace: with migration their
    work is evacuated (how long the last move took); without, it sits there until it ends."""
    fleet = load_fleet(fleet_file)
    agreements = load_agreements(HERE / "agreements.json")
    start, trace = load_trace(req)
    end = max(r.at + r.duration_s for r in trace)
    at = round(end / 3)
    own = busiest_own_nodes(fleet, agreements, trace, start, at, nodes)
    failures = tuple((at, rid) for rid in own)
    out: dict = {"failed": list(own), "at_s": round(end / 3)}
    for migrate in (False, True):
        r = simulate(fleet, agreements, trace, start, SimConfig(policy="predictive", migrate=migrate,
                                                                failures=failures))
        stranded = [(t, n) for t, n in r.stranded_over_time]
        left = [t for t, n in stranded if n > 0]
        out["with_migration" if migrate else "without_migration"] = {
            "cost_total": format(r.cost_total, "f"), "sla_miss_rate": round(r.sla_miss_rate, 6),
            "evacuations": r.migration_reasons.get("evacuation", 0),
            "evacuation_s_max": r.evacuation_s_max,
            "peak_replicas_on_failed": max((n for _, n in stranded), default=0),
            "work_on_failed_until_s": (max(left) - end / 3) if left else 0.0}
        key = "with_migration" if migrate else "without_migration"
        print(f"  failure drill, migration {'on' if migrate else 'off'}: {out[key]}",
              flush=True)
    return out


def stress(tmp: Path, days: float) -> list[dict]:
    """Where would warm capacity pay? Harder variants of the Google series, each with every
    policy (reactive searching its buffer) and the share of the oracle's saving captured."""
    google = ("google2019_instance_usage_grouped_300_seconds_month.csv", "avg_cpu")
    variants = [    # (name, tiers in turn, own nodes kept (None: all), idle-close share)
        ("every request platinum or gold, slow partners", ["platinum", "gold"], None, 1.0),
        ("2 own nodes instead of 8, slow partners", TIERS, 2, 1.0),
        ("idle VMs closed at once, slow partners", TIERS, None, 0.0),
    ]
    agreements = load_agreements(HERE / "agreements.json")
    out = []
    for i, (name, tiers, own, share) in enumerate(variants):
        req = tmp / f"stress-{i}.csv"
        series_trace(req, *google, days, tiers=tiers)
        fleet = load_fleet(HERE / "fleet-series-slow.toml")
        if own is not None:
            fleet = replace(fleet, own=fleet.own[:own])
        start, trace = load_trace(req)
        row: dict = {"variant": name, "requests": len(trace)}
        for policy in POLICIES:
            r = simulate(fleet, agreements, trace, start, SimConfig(policy=policy, idle_close_share=share))
            row[policy] = {"cost_total": format(r.cost_total, "f"), "sla_miss_rate": round(r.sla_miss_rate, 6),
                           "buffer_vcpu": r.buffer_vcpu}
        row["capture"] = capture({p: row[p] for p in POLICIES})
        row["predictive_by_blend"] = blend_costs(f"stress, {name}", fleet, agreements, trace, start,
                                                 {p: row[p] for p in POLICIES}, idle_close_share=share)
        print(f"  stress, {name}: capture {row['capture']}, reactive buffer {row['reactive']['buffer_vcpu']:g} vCPU, "
              f"misses {row['reactive']['sla_miss_rate']:.4f}, cost {row['reactive']['cost_total']} (oracle "
              f"{row['oracle']['cost_total']})", flush=True)
        out.append(row)
    return out


def capture(policies: dict) -> dict:
    """The share of the oracle's saving over reactive each policy captures; None where the
    oracle saves nothing over reactive (then there is nothing to capture)."""
    cost = {p: Decimal(v["cost_total"]) for p, v in policies.items()}
    gap = cost["reactive"] - cost["oracle"]
    return {p: (float((cost["reactive"] - cost[p]) / gap) if gap > 0 else None) for p in ("predictive", "learned")}


def _grid_runs(buffer: float) -> int:
    """Simulations the reactive grid search ran to reach ``buffer`` (its wall time covers them all)."""
    grid = (0, 4, 8, 16, 32, 64, 128, 256, 512)
    return grid.index(buffer) + 1 if buffer in grid else len(grid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one day of each series, no pods (smoke run)")
    ap.add_argument("--drill-only", action="store_true",
                    help="rerun only the failure drill and update it in load/results/economics.json")
    ap.add_argument("--stress-only", action="store_true",
                    help="rerun only the harder variants (stress) and update them in load/results/economics.json")
    ap.add_argument("--speed-only", action="store_true",
                    help="rerun only the timed runs (speed) and the smaller blends' costs, and update them in "
                         "load/results/economics.json")
    args = ap.parse_args(argv)
    core = pin_to_one_core()
    if args.drill_only:
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "pods.csv"
            pods_trace(req)
            path = Path(__file__).resolve().parent / "results" / "economics.json"
            report = json.loads(path.read_text())
            report["failure_drill"] = failure_drill(HERE / "fleet-pods.toml", req)
            path.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    days = 1.0 if args.quick else 7.0
    if args.speed_only:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(__file__).resolve().parent / "results" / "economics.json"
            report = json.loads(path.read_text())
            by_name = {t["trace"]: t for t in report["traces"]}
            for name, fleet_file, req in trace_runs(Path(tmp), days):
                if name not in by_name:
                    continue
                start, trace = load_trace(req)
                fleet, agreements = load_fleet(fleet_file), load_agreements(HERE / "agreements.json")
                entry, policies = by_name[name], by_name[name]["policies"]
                entry["predictive_by_blend"] = blend_costs(name, fleet, agreements, trace, start, policies)
                if "speed" in entry:
                    entry["speed"], entry["speed_by_blend"] = simulator_speed(name, fleet, agreements, trace, start,
                                                                              policies)
            path.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    if args.stress_only:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(__file__).resolve().parent / "results" / "economics.json"
            report = json.loads(path.read_text())
            report["stress"] = stress(Path(tmp), days)
            path.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        runs = trace_runs(t, days, pods=not args.quick)
        for name, fleet, req in runs:     # speed timed on each trace once (its default partners)
            results.append(run_trace(name, fleet, req, speed="slow partners" not in name))
        if not args.quick:
            drill = failure_drill(HERE / "fleet-pods.toml", next(req for name, _, req in runs
                                                                 if name == "alibaba-v2023-pods"))
        stressed = stress(t, days)
    report = {"benchmark": "economics", "machine": machine(), "pinned_core": core, "quick": args.quick,
              "days_of_series": days, "traces": results}
    report["stress"] = stressed
    if not args.quick:
        report["failure_drill"] = drill
    save_result("economics" + ("-quick" if args.quick else ""), report, ("days_of_series",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
