"""``tessera bill``: the rating engine offline, on an agreements file and a usage file."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tessera.billing.export import focus_csv, focus_rows, invoice_json
from tessera.billing.ledger import Ledger
from tessera.billing.usage import UsageError, parse_usage
from tessera.pricing.agreements import AgreementError, parse_agreements


def add_parser(sub: Any, fmt: type) -> None:
    sp = sub.add_parser(
        "bill", formatter_class=fmt, help="rate usage at contracted rates: invoices or FOCUS rows",
        description="""\
Rate partner usage exactly (integer micro-units; rounded once, half-up, on the invoice)
with graduated tiers, monthly commitments and limits, and print a JSON invoice per
partner or FOCUS 1.x cost rows for the billing period.

AGR.json: a list of {"partner", "currency", "rates": {"vcpu_hour", "memory_gib_hour",
  "gpu_hour": "decimal string", "instance_hour": {"type": "..."}}, "tiers": {"vcpu_hour":
  [{"from": "0", "rate": "..."}, {"from": "10000", "rate": "..."}]}, "monthly_commit": "...",
  "limits": {"spend": {"amount": "...", "thresholds": [80, 100], "enforcement": "hard"}},
  "basis": "allocated" (capacity held while placed; default) or "measured" (the live agent
  rates usage samples instead)}
USAGE.jsonl: {"event_id", "partner", "allocation_id", "resource_id", "start", "end"
  (ISO-8601 UTC), "vcpu", "memory_gib", "gpu"} per line; duplicates (same event_id) count once.""",
        epilog="example:\n  tessera bill --agreements agr.json --usage usage.jsonl --period 2026-01 --format invoice-json")
    sp.add_argument("--agreements", required=True, metavar="AGR.json")
    sp.add_argument("--usage", required=True, metavar="USAGE.jsonl")
    sp.add_argument("--period", required=True, metavar="YYYY-MM", help="billing period (calendar month, UTC)")
    sp.add_argument("--format", choices=["invoice-json", "focus-csv"], default="invoice-json")
    sp.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    sp.set_defaults(fn=run)


def run(args: argparse.Namespace, _settings: object = None) -> int:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.period):
        print(f"error: --period {args.period!r}: give a month as YYYY-MM, e.g. 2026-01", file=sys.stderr)
        return 2
    try:
        path = Path(args.agreements)
        if not path.is_file():
            raise AgreementError(f"{args.agreements} does not exist")
        try:
            agreements = parse_agreements(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError as exc:
            raise AgreementError(f"{args.agreements}: not JSON ({exc})") from None
        ledger = Ledger(agreements)
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
    except (AgreementError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    invoices = [ledger.invoice(p, args.period) for p in sorted(agreements)]
    invoices = [inv for inv in invoices if inv.lines]
    if args.format == "invoice-json":
        body = orjson.dumps([invoice_json(inv) for inv in invoices], option=orjson.OPT_INDENT_2) + b"\n"
    else:
        rows = [r for inv in invoices for r in focus_rows(ledger, inv, agreements[inv.partner])]
        body = focus_csv(rows).encode()
    if args.out:
        Path(args.out).write_bytes(body)
        print(f"{len(invoices)} invoice(s) for {args.period} from {n:,} usage records "
              f"({n / max(elapsed, 1e-9):,.0f} records/s) -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(body)
    return 0
