"""Write docs/benchmarks.md and README.md's headline table from load/results/*.json.

Every figure in those pages comes from a result file, so a figure never drifts from the
run that produced it: rerun a benchmark, then ``python -m load.report_docs`` (``make
docs``). ``--check`` exits 1 if the committed pages differ from what the results give
(CI runs it through tests/test_docs.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "load" / "results"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
HEADLINE_START, HEADLINE_END = "<!-- headline:start (make docs) -->", "<!-- headline:end -->"
ECONOMICS_START, ECONOMICS_END = "<!-- economics:start (make docs) -->", "<!-- economics:end -->"
POLICIES = ("reactive", "predictive", "oracle", "learned")


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def n(x: float, places: int = 0) -> str:
    return f"{x:,.{places}f}"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(d: dict[str, Any]) -> str:
    m = d.get("machine", {})
    text = f"{m.get('cpus', '?')} vCPU {m.get('cpu_model', '')}, {m.get('memory_gib', '?')} GiB, Python {m.get('python', '?')}"
    if d.get("broker"):
        text += f"; {d['broker']}"
    if d.get("when"):
        text += f"; run {d['when']}"
    return f"*Machine: {text}.*"


# --------------------------------------------------------------------------- sections
def kernel() -> str:
    d = load("kernel")
    s, q = d["speed"], d["quality"]
    rows = [
        [f"{n(s['requests'])} requests onto {n(s['resources'])} resources, {s['dimensions']} dims, median of {s['runs']}",
         f"{s['kernel_ms_median']} ms", f"plain-Python twin {s['python_twin_s']} s", f"{s['speedup_vs_python']}x"],
        ["identical placements to the twin", str(s["identical_placements"]).lower(), "", ""],
        ["placed / rejected / resources opened", f"{n(s['placed'])} / {n(s['rejected'])} / {n(s['opened'])}", "", ""],
        ["opening cost vs fractional lower bound (USD/h)",
         f"{n(float(s['cost_of_opened_per_hour']), 2)}", f"{n(float(s['lower_bound_per_hour']), 2)}",
         f"gap {s['gap_to_lower_bound']:.1%}"],
        [f"{q['instances']} small instances ({q['replicas_per_instance']} replicas, {q['resources_per_instance']} "
         "resources): gap to the exact MIP (HiGHS)", f"median {q['median_gap_to_optimum']:.1%}",
         f"mean {q['mean_gap']:.1%}, worst {q['worst_gap']:.1%}", f"optimal in {q['share_optimal']:.0%}"],
    ]
    lq = d.get("lexicographic_quality")
    if isinstance(lq, dict):
        rows.append([f"{lq['instances']} small instances with tags, regions and tiers ({lq['resources_per_instance']} "
                     f"resources, {lq['replicas_per_instance']} replicas): the yardstick (most replicas of each "
                     "tier in turn, then least cost; HiGHS)",
                     f"optimum replicas in {lq['reached_optimum_replicas']}/{lq['instances']}",
                     # max(0, ...): HiGHS's cost is rounded to 6 places, so a gap can be -0.0
                     f"cost gap where reached: median {max(0.0, lq['median_cost_gap']):.1%}, "
                     f"worst {max(0.0, lq['worst_cost_gap']):.1%}",
                     "aim: all; 1 % / 5 %"])
    return "\n\n".join([
        "## Packing kernel\n\n`python -m load.bench_kernel` (`load/results/kernel.json`). Instances from `data/`: "
        "Alibaba v2023 pods as requests, Alibaba nodes priced at amortized capex + opex as the own data center, "
        "GCP europe-west4 and DigitalOcean catalog offers as partners. Pinned to one core. The baseline is the "
        "kernel's own source run by CPython (`tessera/scheduler/twin.py`); quality is measured against an exact "
        "MIP on small instances and a fractional lower bound (which ignores constraints and integrality, so it "
        "overstates the gap) on the large one.",
        table(["measure", "Tessera", "baseline / reference", "ratio"], [r for r in rows], "lrrr"),
        machine_line(d)])


def _latency_rows(results: list[dict[str, Any]], procs: list[str]) -> list[list[str]]:
    rows = []
    for r in results:
        cpu = " / ".join(str(r["processes"].get(p, {}).get("cpu_percent", "-")) for p in procs)
        rows.append([n(r["offered_per_s"]), f"{n(r['answered'])}/{n(r['sent'])}", n(r["p50_ms"], 1),
                     n(r["p99_ms"], 1), n(r["p999_ms"], 1), cpu])
    return rows


def scheduler_kafka() -> str:
    d = load("scheduler_kafka")
    procs = ["scheduler", "kafka broker", "load generator (this process)"]
    return "\n\n".join([
        "## Requests through Kafka to allocation events\n\n`python -m load.bench_scheduler` "
        "(`load/results/scheduler_kafka.json`). Open loop: latency runs from each request's intended send time "
        "to reading its placed or rejected event with `read_committed`. `tessera scheduler` runs in its own "
        f"process over {d['resources']} own nodes; broker and load generator share the same machine.",
        table(["offered req/s", "answered", "p50 ms", "p99 ms", "p99.9 ms",
               "CPU % scheduler / broker / generator"], _latency_rows(d["results"], procs), "rrrrrl"),
        machine_line(d)])


def pipeline() -> str:
    d = load("pipeline")
    procs = ["scheduler", "billing", "sink (event-log worker)", "kafka broker", "load generator (this process)"]
    return "\n\n".join([
        "## Whole pipeline\n\n`python -m load` (`load/results/pipeline.json`). Requests plus health and usage "
        f"samples ({d['health_per_request']} and {d['usage_per_request']} per request) through the scheduler, "
        f"billing and the event-log sink, each in its own process, over {d['own_nodes']} own nodes and "
        f"{d['partner_vms']} partner VMs; requests: {d['requests']}. Latency as above.",
        table(["offered req/s", "answered", "p50 ms", "p99 ms", "p99.9 ms",
               "CPU % scheduler / billing / sink / broker / generator"], _latency_rows(d["results"], procs),
              "rrrrrl"),
        machine_line(d)])


def side_by_side(name: str, title: str, intro: str, unit: str, labels: dict[str, str]) -> str:
    d = load(name)
    res = d["results"]
    base = res["baseline"][unit]
    rows = [[label, n(res[key][unit], 1), f"{res[key][unit] / base:.2f}x"] for key, label in labels.items()
            if key in res]
    return "\n\n".join([f"## {title}\n\n{intro}", table(["consumer", unit.replace("_per_s", "/s"), "vs baseline"],
                                                         rows), machine_line(d)])


def health_ingest() -> str:
    return side_by_side(
        "health_ingest", "Health samples into the live resource table",
        "`python -m load.bench_health_ingest` (`load/results/health_ingest.json`): the resources agent's health "
        "lane (a batch consumer of the health partitions the worker owns; `streams/lane.py`) against a "
        "per-event Faust agent that writes the table once per sample, with two ceilings. Aim: 20,000 samples/s.",
        "samples_per_s", {"tessera": "Tessera resources agent: health lane (batches, durable changes only)",
                          "baseline": "baseline: per-event Faust agent, one table write per sample",
                          "ceiling_bare_faust_agent": "ceiling: bare Faust agent doing nothing",
                          "ceiling_raw_aiokafka_getmany": "ceiling: raw aiokafka getmany loop"})


def profile() -> str:
    d = load("profile")
    workers = list(d["workers"])
    cats: list[str] = []
    for w in workers:
        cats += [c for c in d["workers"][w]["categories"] if c not in cats]
    rows = [["CPU (% of one core)", *[f"{d['workers'][w]['cpu_percent']:.0f}" for w in workers]]]
    rows += [[c, *[f"{d['workers'][w]['categories'].get(c, 0):.1f}" for w in workers]] for c in cats]
    top = "; ".join(f"{w}: " + ", ".join(f"`{f}` {v:.0f} %" for f, v in list(d["workers"][w]
                                                                            ["tessera_functions_innermost"].items())[:5])
                    for w in workers)
    return "\n\n".join([
        "## Where each worker's CPU goes\n\n`python -m load.profile_workers` (`load/results/profile.json`): py-spy "
        f"samples each worker for {d['sampled_seconds']:.0f} s while the whole pipeline runs at "
        f"{n(d['offered_per_s'])} requests/s (p99 {n(d['p99_ms'])} ms). Each sample goes to the first category "
        "found from the innermost frame outwards; shares are of the samples (idle included).",
        table(["share of samples (%)", *workers], rows, "l" + "r" * len(workers)),
        f"Where it goes by Tessera function (the innermost Tessera frame of each sample, with the library calls "
        f"beneath it): {top}.", machine_line(d)])


def scaling() -> str:
    d = load("scaling")
    rates = [r["offered_per_s"] for r in d["measured"][0]["rates"]]
    rows = []
    for c in d["measured"]:
        p99 = {r["offered_per_s"]: r["p99_ms"] for r in c["rates"]}
        rows.append([str(c["domains"]), *[n(p99.get(x), 0) if p99.get(x) is not None else "-" for x in rates],
                     n(c["max_rate_within_aim"]),
                     *([f"{c['fixed_cpu_percent']:.0f}", f"{c['marginal_cpu_ms_per_request'] * 1000:.0f}"]
                       if c["marginal_cpu_ms_per_request"] is not None else ["-", "- (one rate within 250 ms)"])])
    paper = ", ".join(f"{p['domains']}: {n(p['requests_per_s'])}/s" for p in d["on_paper_one_core_per_domain"])
    return "\n\n".join([
        "## Scaling the scheduler lane with placement domains\n\n`python -m load.bench_scaling` "
        "(`load/results/scaling.json`): 1, 2 and 4 domains, one scheduler process each (resources split by "
        "region, requests spread by rendezvous hashing), open loop as above. Scheduler CPU is fitted as a "
        "fixed part (what the processes burn at any load: polling, probes, checkpoints) plus a marginal "
        "cost per request.",
        table(["domains", *[f"p99 ms at {n(x)}/s" for x in rates], "max req/s within 250 ms",
               "fixed CPU % (all schedulers)", "marginal µs CPU / request"], rows, "r" * (len(rates) + 4)),
        f"Where the serial parts are. On this machine more domains lower the ceiling: each scheduler process "
        f"costs about {d['measured'][0]['fixed_cpu_percent']:.0f} % of a core before it places anything, and two "
        f"cores also carry the broker and the load generator. The marginal cost per request does not grow with "
        f"the number of domains (each scheduler reads every request, but drops the others' before placing): "
        f"the repeated share f is {d['repeated_share_f']} (from the domain counts with two rates or more "
        f"within 250 ms: with one, fixed and marginal cost cannot be told apart). On paper, with a core per domain and the broker on "
        f"machines of its own, `rate(K) = K * rate(1) / (1 + (K-1) f)` from {n(d['single_scheduler_requests_per_core_s'])} "
        f"requests/s per scheduler core: {paper}. What then binds is the broker: every scheduler fetches the "
        f"whole requests topic, so its egress grows with K times the request rate; and one domain's scheduler is "
        f"serial by design (it alone writes that its resources are taken). Scheduler CPU per million requests "
        f"at {d['vcpu_hour_usd']} USD per vCPU-hour (GCP n2, europe-west4): "
        f"{d['scheduler_cost_per_million_requests_usd']} USD.",
        machine_line(d)])


def faults() -> str:
    d = load("faults")
    rows = [[k, f"{v:.1f}"] for k, v in d["recovery_seconds"].items()]
    return "\n\n".join([
        "## Recovering from kill -9\n\n`tests/test_faults.py` (marker `faults`, run in CI; "
        "`load/results/faults.json`): under load, the scheduler, billing and the Faust worker (event-log sink "
        "and resource table) are each killed with SIGKILL and started again as processes of their own. "
        f"{d['requests']} requests: {d['duplicate_outcomes']} duplicate and {d['lost_outcomes']} lost outcomes, "
        f"every allocation event in ClickHouse once ({d['events_in_clickhouse']}), and the partner billed exactly "
        "the vCPU-hours placed. How long each replacement took, from its start, to do its work again (process "
        "start, Numba cache and checkpoint load, consumer-group join included):",
        table(["replacement", "seconds"], rows, "lr"),
        *([f"After the drill the Faust worker's group had committed its offsets on the allocations topic to "
           f"within {d['faust_uncommitted_allocations_records']} offsets of the end, one per partition: the last "
           "transaction's commit marker, no record (the stall an outside harness once saw after a kill -9 of the "
           "scheduler did not recur). Billing's replacement gets its shards once the group has dropped the killed "
           "agent (a 10 s session, counted from the kill)."]
          if "faust_uncommitted_allocations_records" in d else []),
        machine_line(d)])


def sink() -> str:
    return side_by_side(
        "sink", "Event-log sink into ClickHouse",
        "`python -m load.bench_sink` (`load/results/sink.json`): the batch-consumer sink against a per-event "
        "Faust agent inserting each row, both into the embedded engine.",
        "rows_per_s", {"tessera": "Tessera event-log sink (batch consumer)", "baseline": "baseline: per-event agent"})


def forecast() -> str:
    d = load("forecast")
    rows = []
    for s in d["series"]:
        m = s["models"]
        blend = m["blend (all)"]
        ets = m.get("statsforecast AutoETS (daily refit)", {}).get("mae_vs_best_naive")
        arima = m.get("statsforecast AutoARIMA (daily refit)", {}).get("mae_vs_best_naive")
        rows.append([s["series"], f"{blend['mae_vs_best_naive']:.3f}", f"{ets:.3f}" if ets else "-",
                     f"{arima:.3f}" if arima else "-", f"{blend['coverage']:.3f}",
                     f"{blend.get('us_per_update_best', blend['us_per_update']):.0f}",
                     f"{blend['state_bytes'] / 1024:.1f}"])
    ceiling = load("forecast_ceiling")
    crow = []
    for s in ceiling["series"]:
        offline = {k: v for k, v in s.items() if k.startswith("offline")}
        best = min(offline.items(), key=lambda kv: kv[1]) if offline else ("-", float("nan"))
        crow.append([s["series"], f"{s['online engine, second half']:.3f}", f"{best[1]:.3f}", best[0]])
    return "\n\n".join([
        "## Demand forecasts\n\n`python -m load.bench_forecast` (`load/results/forecast.json`). Prequential "
        f"evaluation on real traces, {d['interval_s']} s intervals, horizons 1..{d['horizon']}: mean absolute "
        "error relative to the better of the last-value and seasonal-naive forecasts (lower is better), the "
        "80 % band's coverage, the cost of one update (best of five runs, pinned to one core) and the state "
        "kept per series. AutoETS and AutoARIMA (statsforecast) are refitted daily.",
        table(["series", "Tessera MAE / naive", "AutoETS", "AutoARIMA", "band coverage", "µs per update",
               "state KiB"], rows),
        f"Blend cost: median {d['blend_us_per_update_best_median']:.0f} µs per update (best of five); "
        f"{n(d['series_per_core_at_5min'])} series per core at 5-minute intervals.",
        "**Ceiling** (`python -m load.forecast_ceiling`, `load/results/forecast_ceiling.json`): offline models "
        "fitted with hindsight on the first half, scored on the second.",
        table(["series", "online engine", "best offline", "which"], crow, "lrrl"),
        machine_line(d)])


def micro() -> str:
    p, b, pr = load("partitioner"), load("billing"), load("produce")
    rows = [
        ["partition a key (murmur2)", f"{p['tessera_compiled_us_per_key']:.2f} µs", f"{p['aiokafka_python_us_per_key']:.2f} µs",
         f"{p['speedup']:.1f}x", "same partitions" if p["same_partitions"] else "DIFFERENT partitions"],
        ["publish a record (client CPU)", f"{pr['us_per_record_best']['send_batched (Tessera)']:.1f} µs",
         f"{pr['us_per_record_best']['send per record (aiokafka)']:.1f} µs", f"{pr['speedup_best']:.2f}x", ""],
        ["rate usage records (parse + rate)", f"{n(b['parse_and_rate_records_per_s'])}/s",
         f"{n(b['baseline_decimal_records_per_s'])}/s", f"{b['speedup_parse_and_rate_vs_baseline']:.2f}x",
         "totals agree" if b["baseline_totals_agree"] else "TOTALS DIFFER"],
        ["rate parsed records, keeping the per-day, per-tenant detail (FOCUS, live agent)",
         f"{n(b['rate_with_daily_detail_records_per_s'])}/s", "", "", f"{n(b['rate_only_records_per_s'])}/s without it"],
        ["live allocation events into billing state", f"{n(b['live_allocation_events_per_s'])}/s", "", "", ""],
    ]
    return "\n\n".join([
        "## Micro-benchmarks\n\n`python -m load.bench_partitioner`, `load.bench_produce`, `load.bench_billing` "
        "(`load/results/partitioner.json`, `produce.json`, `billing.json`); each pinned to one core. The "
        "partitioner baseline is aiokafka's pure-Python murmur2; the publish baseline one awaited `send` per "
        "record; the rating baseline a plain `Decimal` rater (exact integer micro-units are slower to parse, "
        "and the totals must agree to the cent).",
        table(["measure", "Tessera", "baseline", "ratio", "check"], rows, "lrrrl"),
        machine_line(p)])


def _capture(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def economics_table(captured: bool = True) -> str:
    """Cost (SLA misses) per trace and policy, and the share of the oracle's saving over
    reactive that predictive and learned capture (n/a: the oracle saves nothing)."""
    d = load("economics")
    rows = []
    for t in d["traces"]:
        pol = t["policies"]
        cells = [f"{n(float(pol[p]['cost_total']))} ({pol[p]['sla_miss_rate']:.2%})" for p in POLICIES]
        m = t.get("with_migration")
        mig = f"{n(float(m['cost_total']))} ({m['sla_miss_rate']:.2%}), {-m['saving_share']:+.0%}" if m else "n/a"
        at_once, lm = t.get("idle_closed_at_once"), t.get("learned_with_migration")
        rows.append([t["trace"], *cells, mig]
                    + ([f"{n(float(lm['cost_total']))} ({lm['sla_miss_rate']:.2%}), {-lm['saving_share']:+.0%}"
                        if lm else "n/a",
                        f"{n(float(at_once['cost_total']))} ({at_once['sla_miss_rate']:.2%})" if at_once else "n/a",
                        f"{_capture(t['capture']['predictive'])} / {_capture(t['capture']['learned'])}"]
                       if captured else []))
    head = ["trace", *POLICIES, "predictive + migration"] + (
        ["learned + migration", "predictive, idle VMs closed at once", "captured"] if captured else [])
    return table(head, rows, "l" + "r" * (len(head) - 1))


def _learned(d: dict) -> str:
    """What the learned policy tuned, and how it compares with the best fixed setting."""
    top = []
    for t in d["traces"]:
        choices = t["policies"]["learned"].get("tuner_choices") or {}
        if choices:
            best = max(choices, key=lambda k: (choices[k], k))
            top.append(f"{t['trace']}: {best} ({choices[best] / sum(choices.values()):.0%} of its choices)")
    if not top:
        return ""
    return ("*Learned* is predictive with a River bandit per hour band choosing, every control interval, the "
            "headroom quantiles (the most urgent tier's; the others follow by the newsvendor), how long an idle "
            "partner VM stays open (its idle-close share: 0, half or all of the partner's `idle_close_s`) and, "
            "where the partners' lead times differ, whether the cheapest or the soonest usable VMs open first, "
            "from the reward of the interval before (minus its cost, minus 1.00 per SLA miss). "
            "Its most frequent setting: " + "; ".join(top) + ". *Predictive, idle VMs closed at once* "
            "fixes the idle-close share at 0 from the start, the setting the learner settles on most: where learned "
            "costs more, the gap is what learning it online (exploring) costs; where it costs less, varying the "
            "settings by hour band paid.")


def _bandits() -> str:
    """The learned policy with each bandit the tuner offers (load/results/bandits.json)."""
    if not (RESULTS / "bandits.json").exists():
        return ""
    from tessera.simulate.engine import SimConfig

    d = load("bandits")
    names = d["bandits"]
    default = SimConfig().bandit
    rows = [[r["trace"], *(f"{n(float(r[b]['cost_total']))} ({r[b]['sla_miss_rate']:.2%})" for b in names)]
            for r in d["runs"]]
    totals = {b: sum(float(r[b]["cost_total"]) for r in d["runs"]) for b in names}
    best = {b: sum(min(names, key=lambda x: float(r[x]["cost_total"])) == b for r in d["runs"]) for b in names}
    rows.append(["total", *(n(totals[b]) for b in names)])
    return ("Which bandit should learn the knobs? `python -m load.bench_bandits` (`load/results/bandits.json`) runs "
            "learned with each River policy the tuner offers (`tessera simulate --bandit`) on the same runs. "
            + "; ".join(f"{b}: cheapest on {best[b]} of {len(d['runs'])}" for b in names)
            + f". The default, {default}, is {'the' if min(names, key=totals.get) == default else 'not the'} "
            "cheapest in total.\n\n"
            + table(["trace", *names], rows, "l" + "r" * len(names)))


def _stress(d: dict) -> str:
    """The harder variants: does reactive ever need a warm buffer?"""
    rows = []
    for v in d.get("stress") or []:
        cells = [f"{n(float(v[p]['cost_total']))} ({v[p]['sla_miss_rate']:.2%})" for p in POLICIES]
        rows.append([v["variant"], f"{v['reactive']['buffer_vcpu']:g}", *cells,
                     f"{_capture(v['capture']['predictive'])} / {_capture(v['capture']['learned'])}"])
    if not rows:
        return ""
    stress = d["stress"]
    buffers = {v["reactive"]["buffer_vcpu"] for v in stress}
    gaps = [float((float(v["reactive"]["cost_total"]) - float(v["oracle"]["cost_total"]))
                  / float(v["reactive"]["cost_total"])) for v in stress]
    return ("Harder variants of the Google series, looking for where warm capacity pays (learned chooses its own "
            "idle-close share in each). Reactive's buffer: "
            + ("0 in each" if buffers == {0.0} else ", ".join(f"{b:g}" for b in sorted(buffers)))
            + f"; the oracle saves at most {max(gaps):.1%} of reactive's cost, and a capture ratio over so small a "
            "gap says little.\n\n"
            + table(["variant", "reactive buffer (vCPU)", *POLICIES, "captured"], rows, "lrrrrrr"))


def _drill(d: dict) -> str:
    dr = d.get("failure_drill")
    if not dr:
        return ""
    off, on = dr["without_migration"], dr["with_migration"]
    return (f"Failure drill (pods trace): own nodes {', '.join(dr['failed'])} fail {dr['at_s'] / 86400:.1f} days in, "
            f"holding {on['peak_replicas_on_failed']} replicas. Without migration that work stays on the failed nodes "
            f"for up to {off['work_on_failed_until_s'] / 86400:.1f} days (until it ends); with it, "
            f"{on['evacuations']} evacuations finish within {on['evacuation_s_max']:.0f} s of the failure (cost "
            f"{n(float(on['cost_total']))} against {n(float(off['cost_total']))}: evacuated work runs on partner VMs "
            "instead of nowhere).")


def economics() -> str:
    d = load("economics")
    speed = [(t["trace"], p, v["requests_per_s"]) for t in d["traces"] for p, v in t["policies"].items()
             if v.get("requests_per_s")]
    lo, hi = min(x[2] for x in speed), max(x[2] for x in speed)
    buffers = ", ".join(f"{t['trace']}: {t['policies']['reactive']['buffer_vcpu']:g}" for t in d["traces"])
    return "\n\n".join(filter(None, [
        "## Economics: reactive vs predictive vs oracle vs learned\n\n`python -m load.bench_economics` "
        "(`load/results/economics.json`): real traces through `tessera simulate` (the live cores under a virtual "
        "clock). Cost is own capacity (full cost, the same for every policy) plus what partners bill; misses are "
        "requests that waited past their tier's target or were rejected for capacity. *Captures* is "
        "`(cost_reactive - cost_policy) / (cost_reactive - cost_oracle)`. Reactive's warm buffer (vCPU) is the "
        f"smallest on its grid with misses at or under 1 %: {buffers}. With that buffer at 0, the oracle keeps at "
        "least as much warm as reactive, and saves only where warm capacity spares a dearer opening for waiting "
        "work: here it saves nothing, so there is nothing to capture (n/a).",
        economics_table(),
        _learned(d),
        _bandits(),
        _stress(d),
        "*Predictive + migration* runs the migration planner in the simulator (consolidation every hour, move cost "
        "0.01 per replica before tier weights): its saving against predictive alone is measured, with the misses "
        "it costs. " + _drill(d),
        " ".join(filter(None, [f"Simulator speed: {n(lo)}–{n(hi)} trace requests per second of wall time on one "
                               "core (reactive counts every run of its buffer search).", _intervals(d)])),
        _speed(d),
        _blends(d),
        machine_line(d)]))


def _speed(d: dict) -> str:
    """The timed runs: trace requests per second of one simulation, best and median of a few."""
    traced = [t for t in d["traces"] if t.get("speed")]
    if not traced:
        return ""
    labels = list(traced[0]["speed"])
    runs = traced[0]["speed"][labels[0]]["runs"]
    rows = [[t["trace"]] + [f"{n(t['speed'][k]['requests_per_s_best'])} ({n(t['speed'][k]['requests_per_s_median'])})"
                            for k in labels] for t in traced]
    best = [t["speed"][k]["requests_per_s_best"] for t in traced for k in labels]
    return (f"Timed apart, each simulation {runs} times (trace requests per second of wall time on one core, best "
            f"(median) of the {runs}; reactive at the buffer its search chose, one run of it); the aim is 10,000:\n\n"
            + table(["trace"] + labels, rows)
            + f"\n\nBest figures {n(min(best))}–{n(max(best))} requests/s.")


def _blends(d: dict) -> str:
    """Predictive with smaller blends of the demand engine: what a control interval costs
    over reactive, against what 10,000 requests/s would leave for it, and what the smaller
    blends give up in cost, misses and the oracle's saving captured."""
    traced = [t for t in d["traces"] if t.get("speed_by_blend")]
    if not traced:
        return ""
    costed = ([(t["trace"], t["predictive_by_blend"]) for t in d["traces"] if t.get("predictive_by_blend")]
              + [(f"{v['variant']} (harder variant)", v["predictive_by_blend"]) for v in d.get("stress") or []
                 if v.get("predictive_by_blend")])
    rows = []
    for t in traced:
        for label, r in t["speed_by_blend"]["runs"].items():
            over = "" if label == "reactive" else f"{r['us_per_interval_over_reactive']:.1f}"
            rows.append([t["trace"], label, f"{n(r['requests_per_s_best'])} ({n(r['requests_per_s_median'])})", over])
    budgets = "; ".join(f"{t['trace']} {t['speed_by_blend']['us_per_interval_at_10000_per_s']:.1f} µs over "
                        f"{n(t['speed_by_blend']['intervals'])} intervals" for t in traced)
    out = ("Where a forecasting run's time goes: predictive with smaller blends of the demand engine's models "
           "(`tessera simulate --models`), timed as above beside reactive. *µs per interval* is the run's time "
           "over reactive's per control interval; the last value alone forecasts nothing, so its figure is what "
           "the engine's scoring, quantile tracking and issuing and the controller's use of them cost with no "
           "model at all. What 10,000 requests/s would leave per interval over reactive: " + budgets + ".\n\n"
           + table(["trace", "run", "requests/s, best (median)", "µs per interval over reactive"], rows))
    if costed:
        labels = list(costed[0][1])
        cost_rows = [[name] + [f"{n(float(b['cost_total']))} ({b['sla_miss_rate']:.2%}), {_capture(b['captured'])}"
                               for b in blends.values()] for name, blends in costed]
        out += ("\n\nWhat a smaller blend gives up: predictive's cost (SLA misses), share of the oracle's saving "
                "captured, per blend:\n\n" + table(["trace"] + labels, cost_rows))
    return out


def _intervals(d: dict) -> str:
    """Requests per control interval per trace, and predictive's intervals per second: where
    a trace is sparse, its intervals (each urgent tier's demand engine learns and forecasts
    at each) bound the speed, not its requests."""
    rows = [(t["trace"], t["requests"] / t["policies"]["predictive"]["intervals"],
             t["policies"]["predictive"]["intervals_per_s"])
            for t in d["traces"] if t["policies"]["predictive"].get("intervals")]
    if not rows:
        return ""
    sparse = sorted({name.split(",")[0] for name, per, _ in rows if per < 2})
    return ("Requests per control interval (at each, every urgent tier's demand engine learns and forecasts, "
            "whatever arrives) and predictive's intervals per second: "
            + "; ".join(f"{name} {per:.1f}, {n(rate)}/s" for name, per, rate in rows) + "."
            + (f" On {', '.join(sparse)}, with under two requests an interval, the intervals, not the requests, "
               "bound the speed." if sparse else ""))


def migration() -> str:
    d = load("migration")
    c, e, s = d["consolidation"], d["evacuation"], d["speed"]
    rows = [
        [f"{c['instances']} fragmented fleets ({c['resources_per_instance']} running resources, "
         f"{c['allocations_per_instance']} allocations): fleet cost after the plan / exact minimum (HiGHS)",
         f"median {c['median_ratio']:.3f}, worst {c['worst_ratio']:.3f}",
         f"within 10 %: {c['within_10_percent']}/{c['instances']}; optimal: {c['optimal']}/{c['instances']}"
         + (f"; of the rest, {c['beyond_10_percent_frozen']} frozen (no replica fits anywhere else: "
            "the MIP's swap has nowhere to stand, and the plan closes the idle resources)"
            if "beyond_10_percent_frozen" in c else ""),
         "aim: all within 10 %"],
        ["fleet cost saved by the plan (mean share)", f"{c['mean_saving_share']:.1%}", "", ""],
        [f"{e['instances']} fleets with {e['failed_nodes_per_instance']} failed own nodes: work left unplaced "
         "although the MIP found room for all of it", f"{e['left_work_unplaced_although_room_existed']} of "
         f"{e['instances_with_room']}", "", "aim: 0"],
        [f"planning time, {s['resources']} resources / {s['allocations']} allocations ({s['replicas']} replicas), "
         "one failed node", f"{s['plan_s']} s", f"HiGHS {s['highs_s']} s", f"{s['speedup_vs_highs']}x"],
        ["its fleet cost (USD/h): before, plan, exact minimum", f"{n(float(s['cost_before']), 2)} → "
         f"{n(float(s['plan_cost']), 2)}", f"{n(float(s['highs_cost']), 2)}",
         f"{float(s['plan_cost']) / float(s['highs_cost']):.3f}"],
    ]
    parts = []
    try:
        pr = load("migration_process")
    except FileNotFoundError:
        pr = None
    if pr:
        a, b = pr["pre_copy"], pr["stop_and_copy"]
        prow = lambda label, key, unit="": [label, f"{a[key]:,}{unit}", f"{b[key]:,}{unit}", ""]  # noqa: E731
        parts = [
            "### Moving a live process\n\n`python -m load.bench_migration_process` "
            "(`load/results/migration_process.json`): the example key-value service moved "
            f"{a['moves']} times between processes while one client writes through the proxy as fast as it can; "
            "Tessera's process executor (pre-copy, then the last delta during the pause) against stop-and-copy "
            "(the whole log copied while clients wait). The benchmark and the processes it starts share one core.",
            table(["measure", "pre-copy (Tessera)", "stop-and-copy", "ratio"], [
                prow("writes acknowledged", "writes_acked"), prow("writes lost (must be 0)", "writes_lost"),
                prow("failed client requests (aim 0)", "failed_requests"),
                prow("log entries on the final process", "log_entries_moved_last"),
                prow("cut-over pause p50", "pause_ms_p50", " ms"),
                [*prow("cut-over pause p99", "pause_ms_p99", " ms")[:3],
                 f"{pr['pause_p99_ratio_baseline_over_tessera']}x"],
                prow("slowest client request", "client_ms_max", " ms"),
                prow("client request p99", "client_ms_p99", " ms")], "lrrr"),
            machine_line(pr)]
    return "\n\n".join([
        "## Migration planner\n\n`python -m load.bench_migration` (`load/results/migration.json`). Fleets from "
        "`data/` (own Alibaba nodes at amortized capex + opex, GCP europe-west4 and DigitalOcean VMs), all running, "
        "with Alibaba v2023 CPU pods scattered over them first-fit in random order. Moves are free and budgets "
        "open, so the plan is compared with the least fleet cost any reassignment reaches (HiGHS MIP). Pinned to "
        "one core.",
        table(["measure", "Tessera", "exact (HiGHS)", "ratio / aim"], rows, "lrrr"),
        machine_line(d), *parts])


def restart() -> str:
    d = load("restart")
    rows = [[n(r["history_events"]), f"{r['scheduler_s']['full replay']:.2f} s", f"{r['scheduler_s']['checkpoint']:.2f} s",
             f"{r['speedup']['scheduler']}x", f"{r['billing_s']['full replay']:.2f} s",
             f"{r['billing_s']['checkpoint']:.2f} s", f"{r['speedup']['billing']}x",
             f"{n(r['checkpoint_bytes']['scheduler'] / 1000)} / {n(r['checkpoint_bytes']['billing'] / 1000)} kB"]
            for r in d["levels"]]
    r0 = d["levels"][0]
    return "\n\n".join([
        "## Restart time against history\n\n`python -m load.bench_restart` (`load/results/restart.json`): "
        f"`recover()` of the scheduler and the billing agent, best of 3, with {r0['live_allocations']} live "
        "allocations and a growing history of finished ones (placed + released) on the local broker. Full replay "
        "(the baseline, how they started before checkpoints) reads every record; from a checkpoint they read the "
        f"newest checkpoint and the {r0['events_after_checkpoint']:,} events after it. The aim is flat. The "
        "checkpoint itself grows with the ids kept to recognise redeliveries (decided requests, rated records, "
        "released allocations) up to their bound of 1,000,000 each, then stays.",
        table(["history (events)", "scheduler: full replay", "from checkpoint", "ratio", "billing: full replay",
               "from checkpoint", "ratio", "checkpoint (scheduler / billing)"], rows, "lrrrrrrr"),
        machine_line(d)])


SECTIONS: list[Callable[[], str]] = [kernel, scheduler_kafka, scaling, pipeline, profile, faults, health_ingest, sink, forecast, micro,
                                     economics, migration, restart]


def benchmarks_page() -> str:
    head = ("# Benchmarks\n\n<!-- Generated by `python -m load.report_docs` (make docs) from load/results/*.json; "
            "do not edit by hand. -->\n\nEach benchmark runs Tessera and a baseline side by side in one process on "
            "the same input (against the real broker where Kafka is involved) and writes its result to "
            "`load/results/`. Tests never assert timings; these pages report them. Why each figure is what it "
            "is, and what changed it, is in the commit history of the result files.\n")
    return head + "\n" + "\n\n".join(section() for section in SECTIONS) + "\n"


def headline() -> str:
    k, s, h, f = load("kernel")["speed"], load("scheduler_kafka"), load("sink"), load("forecast")
    # The highest offered rate answered in full with p99 within the aim (250 ms).
    within = [r for r in s["results"] if r["p99_ms"] <= 250 and r["answered"] == r["sent"]]
    r2k = max(within, key=lambda r: r["offered_per_s"]) if within else s["results"][0]
    best_ratio = min(x["models"]["blend (all)"]["mae_vs_best_naive"] for x in f["series"])
    worst_ratio = max(x["models"]["blend (all)"]["mae_vs_best_naive"] for x in f["series"])
    rows = [
        ["pack 10,000 requests onto 5,000 resources (Numba kernel)", f"{k['kernel_ms_median']} ms",
         f"{k['speedup_vs_python']}x the plain-Python twin"],
        [f"requests → allocation events through Kafka, {n(r2k['offered_per_s'])}/s", f"p99 {n(r2k['p99_ms'])} ms",
         f"{n(r2k['answered'])}/{n(r2k['sent'])} answered"],
        ["events into ClickHouse (event-log sink)", f"{n(h['results']['tessera']['rows_per_s'])} rows/s",
         f"{h['ratio_tessera_vs_baseline']:.0f}x a per-event agent"],
        ["demand forecast error vs the best naive forecast (4 real series)", f"{best_ratio:.2f}–{worst_ratio:.2f}",
         "lower is better; AutoETS/AutoARIMA in docs"],
    ]
    return (f"{HEADLINE_START}\n" + table(["what", "figure", "against"], rows, "lrl") +
            f"\n\n{machine_line(load('scheduler_kafka'))} More in [docs/benchmarks.md](docs/benchmarks.md).\n"
            f"{HEADLINE_END}")


def readme_with_headline(text: str) -> str:
    start, end = text.index(HEADLINE_START), text.index(HEADLINE_END) + len(HEADLINE_END)
    text = text[:start] + headline() + text[end:]
    start, end = text.index(ECONOMICS_START), text.index(ECONOMICS_END) + len(ECONOMICS_END)
    return text[:start] + f"{ECONOMICS_START}\n{economics_table(captured=False)}\n{ECONOMICS_END}" + text[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the pages differ from the results")
    args = ap.parse_args(argv)
    wanted = {BENCHMARKS_MD: benchmarks_page(), README: readme_with_headline(README.read_text())}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is stale: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
