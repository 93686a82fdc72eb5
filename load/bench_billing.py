"""Benchmark: offline rating throughput (usage records per second, one core).

Usage records are built from the Alibaba v2023 pod list in data/ (each pod's vCPU,
memory and GPUs become a partner allocation lasting a random 10 min - 3 days, spread
over two months across three partners with flat, tiered and committed agreements).
Three measures, side by side in one process on the same records:

- ``rate``: ``Ledger.add`` on parsed records (the rating engine alone), and again keeping
  the per-day, per-tenant detail FOCUS rows and the live agent need;
- ``parse+rate``: JSON line -> validated record -> ledger (what ``tessera bill`` does);
- baseline: a straightforward Decimal rater (per record: hours as Decimal, amount +=
  rate x quantity x hours), as a typical billing script does it.

Both produce the same invoice totals to the cent (checked). Run: python -m load.bench_billing
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import orjson
from load.machine import machine, pin_to_one_core

from tessera.billing.ledger import Ledger
from tessera.billing.usage import parse_usage
from tessera.pricing.agreements import parse_agreements

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PODS = ROOT / "data" / "alibaba_clusterdata_gpu_v2023" / "openb_pod_list_default.csv"
AGREEMENTS = [
    {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.031611", "memory_gib_hour": "0.004237",
                                                    "gpu_hour": "2.48"}},
    {"partner": "digitalocean", "currency": "USD", "rates": {"vcpu_hour": "0.0223", "memory_gib_hour": "0.0029",
                                                             "gpu_hour": "2.99"}},
    {"partner": "coloc", "currency": "EUR", "rates": {"vcpu_hour": "0.02", "memory_gib_hour": "0.003",
                                                      "gpu_hour": "1.9"}},
]


def usage_lines(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    pods = []
    with PODS.open() as fh:
        for row in csv.DictReader(fh):
            pods.append((int(row["cpu_milli"]) / 1000, int(row["memory_mib"]) / 1024, int(row["num_gpu"])))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        vcpu, mem, gpu = pods[i % len(pods)]
        start = t0 + timedelta(seconds=rng.randrange(0, 59 * 86400))
        end = start + timedelta(seconds=rng.randrange(600, 3 * 86400))
        out.append(orjson.dumps({
            "event_id": f"u{i}", "partner": AGREEMENTS[i % 3]["partner"], "allocation_id": f"a{i // 3}",
            "resource_id": f"r{i % 2000}", "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "vcpu": vcpu, "memory_gib": round(mem, 3), "gpu": gpu}))
    return out


def baseline(lines: list[bytes], period: str) -> dict[str, Decimal]:
    """A plain Decimal rater: what a straightforward billing script does per record."""
    rates = {a["partner"]: {k: Decimal(v) for k, v in a["rates"].items()} for a in AGREEMENTS}
    seen: set[str] = set()
    totals: dict[str, Decimal] = defaultdict(Decimal)
    y, m = int(period[:4]), int(period[5:])
    lo = datetime(y, m, 1, tzinfo=timezone.utc)
    hi = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=timezone.utc)
    for raw in lines:
        d = orjson.loads(raw)
        if d["event_id"] in seen:
            continue
        seen.add(d["event_id"])
        s = max(datetime.fromisoformat(d["start"]), lo)
        e = min(datetime.fromisoformat(d["end"]), hi)
        if e <= s:
            continue
        hours = Decimal((e - s).total_seconds()) / Decimal(3600)
        r = rates[d["partner"]]
        totals[d["partner"]] += hours * (r["vcpu_hour"] * Decimal(str(d["vcpu"]))
                                         + r["memory_gib_hour"] * Decimal(str(d["memory_gib"]))
                                         + r["gpu_hour"] * Decimal(d["gpu"]))
    return {p: t.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) for p, t in totals.items()}


def live_rate(agreements, n: int = 20_000, batch: int = 500) -> float:
    """The live agent's core (tessera.billing.state.BillingState): allocation placed/released events
    per second, with month-to-date lines and limits recomputed per batch as the agent does."""
    from tessera.billing.state import BillingState
    from tessera.schemas import AllocationPlaced, AllocationReleased, Capacity, Placement

    t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    events = []
    for i in range(n // 2):
        partner = ("gcp", "digitalocean", "coloc")[i % 3]
        at = t0 + timedelta(seconds=i)
        events.append(AllocationPlaced(event_time=at, request_id=f"q{i}", allocation_id=f"a{i}",
                                       per_replica=Capacity(vcpu=2, memory_bytes=8 << 30),
                                       placements=[Placement(resource_id=f"{partner}/r{i % 300}", provider=partner,
                                                             replicas=1, price_per_hour=Decimal("0.1"))]))
        if i >= 50:
            j = i - 50
            events.append(AllocationReleased(event_time=at, request_id=f"q{j}", allocation_id=f"a{j}"))
    state = BillingState(agreements)
    start = time.process_time()
    for k in range(0, len(events), batch):
        touched: set = set()
        for e in events[k:k + batch]:
            touched |= state.apply(e)
        state.outputs(touched)
    return len(events) / (time.process_time() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    args = ap.parse_args(argv)
    core = pin_to_one_core()       # the target is per core
    lines = usage_lines(args.records)
    agreements = parse_agreements(AGREEMENTS)
    parsed = [parse_usage(orjson.loads(x)) for x in lines]

    t0 = time.process_time()
    led = Ledger(agreements, detail=None)       # invoices only (what `tessera bill` rates for them)
    for r in parsed:
        led.add(r)
    rate_s = time.process_time() - t0

    t0 = time.process_time()
    daily = Ledger(agreements)                  # also per day and tenant (FOCUS rows, the live agent)
    for r in parsed:
        daily.add(r)
    daily_s = time.process_time() - t0

    t0 = time.process_time()
    led2 = Ledger(agreements, detail=None)
    for x in lines:
        led2.add(parse_usage(orjson.loads(x)))
    parse_rate_s = time.process_time() - t0

    t0 = time.process_time()
    base = baseline(lines, "2026-01")
    base_s = time.process_time() - t0

    live = live_rate(agreements)
    ours = {p: Decimal(led.invoice(p, "2026-01").total) for p in agreements}
    agree = all(ours[p] == base[p] for p in base)
    n = len(lines)
    out = {
        "machine": machine(), "pinned_to_core": core, "records": n,
        "rate_only_records_per_s": n / rate_s, "parse_and_rate_records_per_s": n / parse_rate_s,
        "rate_with_daily_detail_records_per_s": n / daily_s,
        "baseline_decimal_records_per_s": n / base_s,
        "speedup_parse_and_rate_vs_baseline": base_s / parse_rate_s,
        "live_allocation_events_per_s": live,
        "totals_2026_01": {p: str(v) for p, v in ours.items()}, "baseline_totals_agree": agree,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "billing.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
