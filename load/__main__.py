"""``python -m load``: the load generator and the whole-pipeline streaming benchmark.

Starts Tessera's processes against the broker, each on its own: the scheduler
(``tessera scheduler``), the billing agent (``tessera billing``) and the ClickHouse sink
(``tessera worker --agent event-log``); registers an own data center and two partners;
then for each offered rate publishes requests open loop (plus health and usage events at
a fixed ratio) and reports sustained requests/s, p50 / p99 / p99.9 request-to-allocation
latency from the intended send time, and the CPU and memory of every process. Results:
``load/results/pipeline.json`` and an SVG plot next to it.

  python -m load [--rates 250,500,1000,2000,4000] [--seconds 10] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
from load.generator import broker_pid, run_rate, synthetic_requests, trace_requests
from load.machine import machine

from tessera.app.pipeline import DEMO_AGREEMENTS
from tessera.config import load_settings
from tessera.schemas import GIB, Capacity, ResourceDiscovered, ResourceSpec
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import producer_for, send_events

RESULTS = Path(__file__).resolve().parent / "results"


def resources(n_own: int, n_partner: int) -> list[ResourceDiscovered]:
    out = [ResourceDiscovered(resource_id=f"own/n{i}", spec=ResourceSpec(
        provider="own", region="dc1", capacity=Capacity(vcpu=64, memory_bytes=256 * GIB),
        price_per_hour=Decimal("0.49"))) for i in range(n_own)]
    for i in range(n_partner):
        partner = ("gcp", "digitalocean")[i % 2]
        out.append(ResourceDiscovered(resource_id=f"{partner}/v{i}", spec=ResourceSpec(
            provider=partner, region="eu", capacity=Capacity(vcpu=16, memory_bytes=64 * GIB),
            price_per_hour=Decimal("0.55") if partner == "gcp" else Decimal("0.38"))))
    return out


async def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="250,500,1000,2000,4000", help="offered requests/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per rate (default 10)")
    ap.add_argument("--own", type=int, default=300, help="own nodes (64 vCPU each)")
    ap.add_argument("--partner", type=int, default=200, help="partner VMs (16 vCPU each)")
    ap.add_argument("--health-ratio", type=float, default=0.5, help="health samples per request")
    ap.add_argument("--usage-ratio", type=float, default=0.2, help="usage samples per request")
    ap.add_argument("--warmup-seconds", type=float, default=15.0,
                    help="an unrecorded first round at the lowest rate (0: none)")
    ap.add_argument("--trace", action="store_true", help="replay Alibaba v2023 pods instead of synthetic requests")
    ap.add_argument("--out", default=str(RESULTS / "pipeline.json"))
    args = ap.parse_args(argv)
    run = uuid.uuid4().hex[:8]
    settings = load_settings(topic_prefix=f"load-{run}", app_id=f"load-{run}", clickhouse_database=f"load_{run}",
                             metrics_port=0)
    await ensure_topics(settings)
    res = resources(args.own, args.partner)
    p = producer_for(settings)
    await p.start()
    await send_events(p, settings, "resources", res)
    await p.stop()
    agreements = Path(tempfile.mkstemp(prefix="agreements-", suffix=".json")[1])
    agreements.write_bytes(orjson.dumps(DEMO_AGREEMENTS))
    env = dict(os.environ, TESSERA_TOPIC_PREFIX=settings.topic_prefix, TESSERA_APP_ID=settings.app_id,
               TESSERA_METRICS_PORT="0", TESSERA_KAFKA_BOOTSTRAP=settings.bootstrap_servers,
               TESSERA_CLICKHOUSE_DATABASE=settings.clickhouse_database,
               TESSERA_DATA_DIR=str(Path(tempfile.mkdtemp(prefix="tessera-load-"))))
    cli = [sys.executable, "-m", "tessera.app.cli.main"]
    procs = {
        "scheduler": subprocess.Popen([*cli, "scheduler", "--batch-wait-ms", "10"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "billing": subprocess.Popen([*cli, "billing", "--agreements", str(agreements)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "sink (event-log worker)": subprocess.Popen([*cli, "worker", "--agent", "event-log", "--loglevel", "warn"],
                                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    results = []
    try:
        print(f"starting {', '.join(procs)} (topics load-{run}.*) ...", file=sys.stderr)
        await asyncio.sleep(20.0)   # process start, JIT cache load, recovery, consumer-group join
        rates = [int(x) for x in args.rates.split(",")]
        if args.warmup_seconds > 0:
            # The first seconds of traffic pay one-time costs (first fetches and commits of
            # every consumer, the broker's JIT), which belong to start-up, not to a rate.
            print(f"warming up at {min(rates)} requests/s for {args.warmup_seconds:.0f} s ...", file=sys.stderr)
            make = (trace_requests if args.trace else synthetic_requests)(f"{run}-warmup")
            await run_rate(settings, min(rates), args.warmup_seconds, make, health_ratio=args.health_ratio,
                           usage_ratio=args.usage_ratio, resource_ids=[x.resource_id for x in res], tail_s=20.0)
            await asyncio.sleep(3.0)
        for rate in rates:
            print(f"offering {rate} requests/s for {args.seconds:.0f} s ...", file=sys.stderr)
            # Request ids are unique per rate: the scheduler answers a redelivered id only once.
            make = (trace_requests if args.trace else synthetic_requests)(f"{run}-{rate}")
            r = await run_rate(settings, rate, args.seconds, make, health_ratio=args.health_ratio,
                               usage_ratio=args.usage_ratio, resource_ids=[x.resource_id for x in res],
                               processes={**{k: v.pid for k, v in procs.items()}, **broker_pid(settings)},
                               tail_s=20.0)
            print("  " + json.dumps(r), file=sys.stderr)
            results.append(r)
            await asyncio.sleep(3.0)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        agreements.unlink(missing_ok=True)
    report = {"benchmark": "whole pipeline: requests (+ health, usage) -> scheduler -> allocations -> billing, "
                           "sink; open loop, latency from intended send time",
              "processes": list(procs), "own_nodes": args.own, "partner_vms": args.partner,
              "requests": "Alibaba v2023 trace" if args.trace else "synthetic, 4 sizes x 4 tiers, 2 s lifetime",
              "health_per_request": args.health_ratio, "usage_per_request": args.usage_ratio,
              "results": results, "machine": machine(), "broker": "Apache Kafka 4.1.1 single node on the same machine",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    from tessera.app.report import svg_chart

    lat = {k: [(r["offered_per_s"], r[k]) for r in results] for k in ("p50_ms", "p99_ms", "p999_ms")}
    lat["achieved req/s"] = [(r["offered_per_s"], r["achieved_per_s"]) for r in results]
    out.with_suffix(".svg").write_text(svg_chart("Latency (ms) and achieved requests/s by offered requests/s", lat,
                                                 y_label="ms  |  req/s", x_unit=" req/s"))
    print(json.dumps(report["results"], indent=2))
    return report


if __name__ == "__main__":
    asyncio.run(main())
