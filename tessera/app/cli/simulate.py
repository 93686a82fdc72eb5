"""``tessera simulate``: replay a request trace through the live cores, no Kafka."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from tessera.forecast import MODEL_NAMES

POLICIES = ("reactive", "predictive", "oracle", "learned")


def add_parser(sub: Any, fmt: type) -> None:
    sp = sub.add_parser(
        "simulate", formatter_class=fmt, help="replay a request trace through the scheduler, forecasts and billing",
        description="""\
Replay a trace through the same cores the live workers run (scheduler core and packing
kernel, demand engine, price book, billing ledger) under a virtual clock: no Kafka, and
the same result for the same inputs and seed. Partner VMs open lead_time_s after they are
asked for and are paid from open to close; the policy decides how much to keep warm.

  reactive    no forecasts: open when work waits, plus the smallest static warm buffer
              that keeps SLA misses at or under 1 % (searched on a grid)
  predictive  the demand engine, learning as the trace unfolds, keeps capacity warm ahead
              of the partners' lead time at each urgent tier's newsvendor quantile
  oracle      the same controller fed the realised future demand
  learned     predictive, with the headroom quantiles, how long idle VMs stay open,
              which partners open first and (with --migrate) the consolidation
              threshold chosen per hour band online by a River bandit

FLEET.toml is the partners file `tessera resources discover` reads, plus per partner
lead_time_s (default 90) and idle_close_s (default 600). AGR.json is the file `tessera
bill` reads; partners without an agreement pay their VMs' list price per instance-hour.
REQ.csv columns: submit_time (s from the start, or ISO-8601 UTC), duration_s, vcpu,
memory_gib, gpu, replicas, tier, tenant, tags_required, regions (lists `;`-separated).

With --migrate the migration planner the live agent runs (tessera migrate) evacuates work
from resources that fail (--fail) and consolidates every --migrate-every seconds; moves
take 60 s and are billed as live migrations are.""",
        epilog="example:\n  tessera simulate --partners fleet.toml --agreements agr.json --requests req.csv "
               "--policy predictive --json")
    sp.add_argument("--partners", required=True, metavar="FLEET.toml")
    sp.add_argument("--agreements", required=True, metavar="AGR.json")
    sp.add_argument("--requests", required=True, metavar="REQ.csv")
    sp.add_argument("--policy", required=True, choices=POLICIES)
    sp.add_argument("--sla-targets", metavar="TIER=S,...", default="platinum=30,gold=120,silver=600,bronze=3600",
                    help="longest acceptable wait per tier, seconds (default %(default)s)")
    sp.add_argument("--interval", type=float, default=300.0, metavar="S",
                    help="control and forecast interval, seconds (default 300)")
    sp.add_argument("--quantile", type=float, default=None, metavar="Q",
                    help="predictive: the most urgent tier's headroom quantile, the others' following by the "
                         "newsvendor (default: each tier's newsvendor quantile, its shortage cost against the "
                         "cheapest partner vCPU-hour)")
    sp.add_argument("--idle-close-share", type=float, default=1.0, metavar="SHARE",
                    help="keep an idle partner VM open this share of its partner's idle_close_s before "
                         "closing it (default 1; 0 closes idle VMs at the next control tick; learned chooses)")
    sp.add_argument("--prefer-fast-partners", action="store_true",
                    help="open the soonest usable partner VMs first, the cheapest among them (default: the "
                         "cheapest per vCPU first; learned chooses where partners' lead times differ)")
    sp.add_argument("--bandit", choices=("epsilon-greedy", "ucb", "thompson"), default="epsilon-greedy",
                    help="learned: the River bandit that chooses the knobs (default %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the learned policy's exploration (default 0)")
    sp.add_argument("--models", metavar="NAMES", default=None,
                    help="predictive, learned: the models the demand engine blends, comma-separated, as the "
                         "forecast worker's TESSERA_FORECAST_MODELS (default: all, "
                         f"{', '.join(MODEL_NAMES)}); fewer run faster and forecast less well, "
                         "e.g. direct_ar,holt_winters,last")
    sp.add_argument("--migrate", action="store_true",
                    help="run the migration planner too: evacuate failed resources, consolidate periodically")
    sp.add_argument("--migrate-every", type=float, default=3600.0, metavar="S",
                    help="with --migrate: consolidate this often, seconds (default 3600)")
    sp.add_argument("--move-cost", default="0.01", metavar="AMOUNT",
                    help="with --migrate: cost of moving one replica, before tier weights (default 0.01)")
    sp.add_argument("--fail", action="append", default=[], metavar="RESOURCE@SECONDS",
                    help="a resource fails at this time (repeatable), e.g. own/node-3@7200")
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    sp.add_argument("--report", metavar="OUT.html", help="write an HTML page with cost, capacity and forecast plots")
    sp.set_defaults(fn=run)


def _targets(text: str) -> dict[str, float]:
    from tessera.schemas import TIER_RANK

    out = {}
    for part in text.split(","):
        tier, _, value = part.partition("=")
        tier = tier.strip()
        if tier not in TIER_RANK:
            raise ValueError(f"--sla-targets: tier {tier!r} unknown; use {', '.join(TIER_RANK)}")
        try:
            out[tier] = float(value)
        except ValueError:
            raise ValueError(f"--sla-targets: {part!r} is not TIER=SECONDS") from None
    return out


def _failure(text: str) -> tuple[float, str]:
    rid, _, at = text.rpartition("@")
    try:
        seconds = float(at)
    except ValueError:
        seconds = -1.0
    if not rid or seconds < 0:
        raise ValueError(f"--fail {text!r}: write RESOURCE@SECONDS, e.g. own/node-3@7200")
    return seconds, rid


def run(args: argparse.Namespace, _settings: Any) -> int:
    from tessera.config import ConfigError
    from tessera.pricing.agreements import AgreementError, load_agreements
    from tessera.resources.model import AdapterError
    from tessera.simulate.engine import SimConfig, simulate
    from tessera.simulate.fleet import load_fleet
    from tessera.simulate.trace import TraceError, load_trace

    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        targets = _targets(args.sla_targets)
        if args.quantile is not None and not 0.0 < args.quantile < 1.0:
            raise ValueError(f"--quantile {args.quantile:g}: give a quantile between 0 and 1, e.g. 0.9")
        if not 0.0 <= args.idle_close_share <= 1.0e6:
            raise ValueError(f"--idle-close-share {args.idle_close_share:g}: give a share from 0 to 1000000")
        failures = tuple(_failure(f) for f in args.fail)
        move_cost = Decimal(args.move_cost)
        models = MODEL_NAMES if args.models is None else tuple(m.strip() for m in args.models.split(",") if m.strip())
        cfg = SimConfig(policy=args.policy, sla_targets={**SimConfig().sla_targets, **targets},
                        interval_s=args.interval, quantile=args.quantile, idle_close_share=args.idle_close_share,
                        prefer_fast_partners=args.prefer_fast_partners, bandit=args.bandit,
                        seed=args.seed, migrate=args.migrate,
                        migrate_every_s=args.migrate_every, move_cost=move_cost, failures=failures,
                        forecast_models=models)
        fleet = load_fleet(args.partners)        # the files last: a typo above is reported at once
        agreements = load_agreements(args.agreements)
        start, trace = load_trace(args.requests)
    except (OSError, ValueError, ConfigError, AgreementError, AdapterError, TraceError, InvalidOperation) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"simulating {len(trace):,} requests on {len(fleet.own)} own nodes and {len(fleet.offers)} partner VMs "
        f"({args.policy})")
    try:
        result = simulate(fleet, agreements, trace, start, cfg, progress=say)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        write_sim_report(Path(args.report), result)
        say(f"report: {args.report}")
    if args.json:
        sys.stdout.write(orjson.dumps(result.as_json()).decode() + "\n")
    else:
        print(f"policy {result.policy}: {result.requests:,} requests, cost {result.cost_total} "
              f"({', '.join(f'{p} {c}' for p, c in sorted(result.cost_by_provider.items()))}), "
              f"SLA misses {result.sla_miss_rate:.2%}, utilization {result.mean_utilization:.1%}, "
              f"{result.wall_s:.1f} s" + (f", warm buffer {result.buffer_vcpu:g} vCPU" if result.policy == "reactive"
                                          else ""))
        if args.migrate or failures:
            reasons = ", ".join(f"{k} {v}" for k, v in result.migration_reasons.items()) or "none"
            print(f"migrations: {result.migrations} ({reasons}), longest evacuation "
                  f"{result.evacuation_s_max if result.evacuation_s_max is not None else '-'} s, "
                  f"replicas left on failed resources {result.stranded}")
    return 0


def write_sim_report(path: Path, result) -> Path:
    from tessera.app.report import svg_chart, write_report

    tl = result.timeline
    hours = [t / 3600 for t in tl.t]
    cost = {p: list(zip(hours, rates)) for p, rates in sorted(tl.cost_rate.items()) if any(rates)}
    sections = [
        ("Cost over time by provider", svg_chart("Cost rate of running capacity (per hour)", cost,
                                                 y_label="currency/h", x_unit="h")),
        ("Warm vs used capacity", svg_chart("vCPU warm (own + open partner VMs) and in use",
                                            {"warm": list(zip(hours, tl.warm_vcpu)),
                                             "used": list(zip(hours, tl.used_vcpu))}, y_label="vCPU", x_unit="h")),
    ]
    band = [(h, b) for h, b in zip(hours, tl.band) if b[0] == b[0]]
    if band:
        xs = [h for h, _ in band]
        sections.append(("Forecast band vs realised demand", svg_chart(
            "One-interval-ahead forecast (5-95 % band, median) vs realised demand",
            {"realised": list(zip(hours, tl.demand)), "median forecast": [(h, b[1]) for h, b in band]},
            band=(xs, [b[0] for _, b in band], [b[2] for _, b in band]), y_label="vCPU", x_unit="h")))
    summary = orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode()
    return write_report(path, f"Tessera simulation: {result.policy}", sections, [("Result", summary)])
