"""``tessera bill``: the rating engine offline, on an agreements file and a usage file; or
``tessera bill export --from-events``: what the live billing agent billed, rebuilt from the
topics it reads (its newest checkpoint, then the events after it), through the same core."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tessera.billing.export import chargeback, focus_csv, focus_rows, invoice_json, iso_utc
from tessera.billing.ledger import Ledger
from tessera.billing.usage import UsageError, parse_usage
from tessera.pricing.agreements import Agreement, AgreementError, load_agreements

FORMATS = ["invoice-json", "focus-csv", "chargeback-json"]


def add_parser(sub: Any, fmt: type) -> None:
    sp = sub.add_parser(
        "bill", formatter_class=fmt, help="rate usage at contracted rates: invoices, FOCUS rows, chargeback",
        description="""\
Rate partner usage exactly (integer micro-units; rounded once, half-up, on the invoice)
with graduated tiers, monthly commitments and limits, and print a JSON invoice per
partner, FOCUS 1.2 cost rows (one per line, UTC day, resource and tenant), or tenant
chargeback (what each tenant's work cost, the partners' bills shared out exactly).

Offline: from an agreements file and a usage file.
Live (`tessera bill export --from-events`): what the billing agent billed, rebuilt from
the broker (its newest checkpoint, then the allocation, migration and usage events after
it, read committed) through the same rating core; month to date for the current month.

AGR.json: a list of {"partner", "currency", "rates": {"vcpu_hour", "memory_gib_hour",
  "gpu_hour": "decimal string", "instance_hour": {"type": "..."}}, "tiers": {"vcpu_hour":
  [{"from": "0", "rate": "..."}, {"from": "10000", "rate": "..."}]}, "monthly_commit": "...",
  "limits": {"spend": {"amount": "...", "thresholds": [80, 100], "enforcement": "hard"}},
  "basis": "allocated" (capacity held while placed; default) or "measured" (the live agent
  rates usage samples instead)}
USAGE.jsonl: {"event_id", "partner", "allocation_id", "resource_id", "start", "end"
  (ISO-8601 UTC), "vcpu", "memory_gib", "gpu", optional "region", "tenant"} per line;
  duplicates (same event_id) count once.""",
        epilog="examples:\n"
               "  tessera bill --agreements agr.json --usage usage.jsonl --period 2026-01 --format invoice-json\n"
               "  tessera bill export --from-events --period 2026-11 --format focus-csv --out focus.csv")
    sp.add_argument("action", nargs="?", choices=["export"], help="export (the default; kept for readability)")
    sp.add_argument("--agreements", metavar="AGR.json",
                    help="partner agreements (with --from-events: default TESSERA_BILLING_AGREEMENTS; the "
                         "agreements topic's updates apply on top)")
    sp.add_argument("--usage", metavar="USAGE.jsonl", help="usage records (offline)")
    sp.add_argument("--from-events", action="store_true", help="rebuild from the broker instead of --usage")
    sp.add_argument("--period", required=True, metavar="YYYY-MM", help="billing period (calendar month, UTC)")
    sp.add_argument("--format", choices=FORMATS, default="invoice-json")
    sp.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    sp.set_defaults(fn=run)


class _Refused(Exception):
    pass


def _from_file(args: argparse.Namespace) -> tuple[Ledger, dict[str, Agreement], str, dict[str, int]]:
    if not args.agreements or not args.usage:
        raise _Refused("give --agreements and --usage, or --from-events to read what the live system billed")
    agreements = load_agreements(args.agreements)
    # Invoices need no per-day detail (FOCUS rows and chargeback do; it costs ~2x).
    ledger = Ledger(agreements, detail=None if args.format == "invoice-json" else {})
    upath = Path(args.usage)
    if not upath.is_file():
        raise UsageError(f"{args.usage} does not exist")
    t0 = time.perf_counter()
    n = 0
    with upath.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{args.usage}:{lineno}: not JSON ({exc})") from None
            ledger.add(parse_usage(doc, f"{args.usage}:{lineno}"))
            n += 1
    elapsed = time.perf_counter() - t0
    return ledger, agreements, f"from {n:,} usage records ({n / max(elapsed, 1e-9):,.0f} records/s)", {}


def _from_events(args: argparse.Namespace, settings: Any) -> tuple[Ledger, dict[str, Agreement], str, dict[str, int]]:
    from tessera.agents.billing import BillingWorker

    path = args.agreements or settings.billing_agreements
    worker = BillingWorker(settings, load_agreements(path) if path else {})
    t0 = time.perf_counter()
    try:
        asyncio.run(worker.recover())
    except Exception as exc:     # a broker that does not answer: say where and what to check
        raise _Refused(f"could not read the billing topics at {settings.kafka_bootstrap or 'the local broker'} "
                       f"({type(exc).__name__}: {exc}); is it up (`tessera infra status`)?") from None
    states = [sh.state for sh in worker.shards.values()]
    agreements = {k: v for st in states for k, v in st.agreements.items()}
    if not agreements:
        raise _Refused("no agreements: give --agreements, set TESSERA_BILLING_AGREEMENTS, or publish them "
                       "on the agreements topic")
    watermark = max((st.lifecycle.watermark_us for st in states), default=0)
    as_of = iso_utc(watermark) if watermark else "no usage yet"
    own: dict[str, int] = {}
    for st in states:       # own capacity is one shard's, like any partner; summed all the same
        for tenant, n in st.own_costs(args.period).items():
            own[tenant] = own.get(tenant, 0) + n
    return (worker.view(detail=True), agreements,
            f"from the broker (events up to {as_of}; read in {time.perf_counter() - t0:.1f} s)", own)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.period):
        print(f"error: --period {args.period!r}: give a month as YYYY-MM, e.g. 2026-01", file=sys.stderr)
        return 2
    try:
        if args.from_events:
            if args.usage:
                raise _Refused("--usage and --from-events are alternatives; give one")
            ledger, agreements, source, own = _from_events(args, settings)
        else:
            ledger, agreements, source, own = _from_file(args)
    except (OSError, AgreementError, UsageError, _Refused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    invoices = [ledger.invoice(p, args.period) for p in sorted(agreements)]
    invoices = [inv for inv in invoices if inv.lines]
    if args.format == "invoice-json":
        body = orjson.dumps([invoice_json(inv) for inv in invoices], option=orjson.OPT_INDENT_2) + b"\n"
    else:
        rows = [focus_rows(ledger, inv, agreements[inv.partner]) for inv in invoices]
        if args.format == "focus-csv":
            body = focus_csv([r for inv_rows in rows for r in inv_rows]).encode()
        else:
            body = orjson.dumps(chargeback(invoices, rows, own=own, period=args.period),
                                option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        Path(args.out).write_bytes(body)
        print(f"{len(invoices)} invoice(s) for {args.period} {source} -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(body)
    return 0
