"""``tessera resources``: discover partners, and read the live resource table.

Like every command module, it imports inside each command what only that command needs
(see tessera.app.cli.main).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from typing import Any

import orjson

from tessera.config import ConfigError, Settings
from tessera.resources.model import AdapterError, DiscoveredResource

COLUMNS = ("id", "provider", "region", "vcpu", "memory_bytes", "gpu", "price_per_hour", "healthy")


def add_parser(sub: Any, fmt: type) -> None:
    sp = sub.add_parser(
        "resources", help="discover partner resources; list or show the live resource table",
        formatter_class=fmt,
        description="""\
Discover resources from partners and the own data center, normalized (cores, bytes,
Gbps, GPUs; prices in the base currency per hour), and inspect the live resource table.

  discover  list one source (or every source in --partners) and print or publish it
  list      the live table as the resources agent keeps it (read from its changelog)
  show ID   one row of the live table, with health and free capacity""",
        epilog="""\
examples:
  tessera resources discover --catalog data/digitalocean_skypilot_catalog/do_vms.csv --once --json
  tessera resources discover --catalog data/gcp_cyclenerd_pricing/gcp_compute_instance_prices.csv \\
      --format gcp --region europe-west4 --pricing committed_1y --once
  tessera resources discover --kubernetes-url https://k8s:6443 --token $TOKEN --rate-vcpu-hour 0.03 --once
  tessera resources discover --partners docs/partners.example.toml          # poll + publish to Kafka
  tessera resources list --provider gcp""")
    sp.set_defaults(fn=run)
    rs = sp.add_subparsers(dest="action", metavar="ACTION", required=True)

    d = rs.add_parser("discover", help="list resources from a partner source", formatter_class=fmt)
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument("--partners", metavar="FILE", help="every source in a partners TOML file")
    src.add_argument("--catalog", metavar="FILE|URL", help="a SkyPilot- or GCP-format catalog CSV")
    src.add_argument("--kubernetes-url", metavar="URL", help="a partner cluster's API server")
    d.add_argument("--format", choices=["skypilot", "gcp"], default="skypilot", help="catalog format")
    d.add_argument("--partner", help="partner name (default: derived from the source)")
    d.add_argument("--token", default="", help="bearer token for the Kubernetes API")
    d.add_argument("--insecure", action="store_true", help="do not verify the API server's TLS certificate")
    d.add_argument("--region", action="append", default=[], help="only these regions (repeatable)")
    d.add_argument("--max-per-type", type=int, default=1, help="catalog: instances offered per type and region")
    d.add_argument("--pricing", default="on_demand", choices=["on_demand", "spot", "committed_1y", "committed_3y"])
    for unit in ("vcpu", "gib", "gpu"):
        d.add_argument(f"--rate-{unit}-hour", type=Decimal, help=f"rate card: price per {unit}-hour")
    d.add_argument("--once", action="store_true", help="list once and exit (default with --catalog/--kubernetes-url)")
    d.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    d.add_argument("--publish", action="store_true", help="also publish resource events to Kafka")
    d.add_argument("--interval", type=float, help="seconds between polls when not --once (default: per partner)")

    ls = rs.add_parser("list", help="the live resource table", formatter_class=fmt)
    ls.add_argument("--provider", help="only this provider")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    sh = rs.add_parser("show", help="one resource of the live table", formatter_class=fmt)
    sh.add_argument("resource_id")


def _adapters(args: argparse.Namespace, s: Settings) -> list[Any]:
    from tessera.pricing.rates import RateCard
    from tessera.resources.adapters.catalog import CatalogAdapter
    from tessera.resources.adapters.kubernetes import KubernetesAdapter
    from tessera.resources.partners import load_partners

    if args.partners:
        return load_partners(args.partners)[0]
    card = RateCard(vcpu_hour=args.rate_vcpu_hour, gib_hour=args.rate_gib_hour, gpu_hour=args.rate_gpu_hour)
    if args.catalog:
        name = args.partner or ("gcp" if args.format == "gcp" else "catalog")
        return [CatalogAdapter(name, args.catalog, format=args.format, regions=frozenset(args.region),
                               max_per_type=args.max_per_type, pricing_model=args.pricing, rate_card=card)]
    return [KubernetesAdapter(args.partner or "kubernetes", args.kubernetes_url, token=args.token,
                              verify_tls=not args.insecure, rate_card=card)]


def _print(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for r in records:
            sys.stdout.write(orjson.dumps(r).decode() + "\n")
        return
    rows = [[str(r.get(c, "")) for c in COLUMNS] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"({len(rows)} resources)", file=sys.stderr)


async def _discover(args: argparse.Namespace, s: Settings, adapters: list[Any]) -> int:
    from tessera.resources.discovery import Discoverer

    producer = None
    if args.publish or not args.once:
        from tessera.streams.admin import ensure_topics
        from tessera.streams.produce import producer_for, send_events

        await ensure_topics(s)
        producer = producer_for(s)
        await producer.start()

    async def publish(events: list[Any]) -> None:
        if producer is None:
            return
        by_topic: dict[str, list[Any]] = {}
        for e in events:
            by_topic.setdefault("health" if e.event_type.startswith("health") else "resources", []).append(e)
        for topic, evs in by_topic.items():
            await send_events(producer, s, topic, evs)

    from tessera.resources.compliance import screen
    from tessera.resources.partners import compliance_allow_lists

    allow = compliance_allow_lists(args.partners) if args.partners else {}

    def compliance(a: Any) -> frozenset[str] | None:
        # The own inventory's tags are the operator's; a partner's need the operator's allow-list.
        return None if a.partner == "own" else allow.get(a.partner, frozenset())

    try:
        if args.once:
            failed = 0
            records: list[DiscoveredResource] = []
            for a in adapters:
                try:
                    listing = await a.snapshot()
                except AdapterError as exc:
                    print(f"error: partner {a.partner}: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                if compliance(a) is not None:
                    listing, dropped = screen(listing, compliance(a))
                    for rid, tag in dropped[:5]:
                        print(f"  ! {rid}: compliance tag {tag!r} dropped (not allowed for partner {a.partner} "
                              "in the partners file)", file=sys.stderr)
                records += listing
                print(f"  - {a.partner}: {len(listing)} resources", file=sys.stderr)
                if producer is not None:
                    await Discoverer(a, publish, compliance=compliance(a)).poll_once()
            _print([r.as_json_line() for r in records], args.json)
            return 1 if failed else 0
        stop = asyncio.Event()
        from tessera.resources.partners import load_partners

        intervals = load_partners(args.partners)[1] if args.partners else {}
        loops = [Discoverer(a, publish, interval_s=args.interval or intervals.get(a.partner, 60),
                            compliance=compliance(a)) for a in adapters]
        print(f"discovering {len(loops)} source(s) into {s.topic_prefix}.resources.v1; Ctrl-C to stop",
              file=sys.stderr)
        await asyncio.gather(*(d.run(stop) for d in loops))
        return 0
    finally:
        if producer is not None:
            await producer.stop()


def read_table(s: Settings, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The live table, rebuilt from the resources agent's changelog (last value per key)."""
    from tessera.agents.resources import changelog_topic
    from tessera.resources.table import decode_row
    from tessera.schemas.topics import topic_spec
    from tessera.streams.reader import read_to_end

    # The changelog has the table's partition count, which is the resources topic's.
    records = asyncio.run(read_to_end(s, changelog_topic(s), topic_spec("resources").partitions, timeout=timeout))
    rows: dict[str, dict[str, Any]] = {}
    for rec in records:
        row = decode_row(rec.value)
        if row is None:
            rows.pop(rec.key.decode(), None)
        else:
            rows[rec.key.decode()] = row
    return rows


def run(args: argparse.Namespace, s: Settings) -> int:
    from tessera.resources.table import ResourceView

    try:
        if args.action == "discover":
            if not args.partners:
                args.once = True
            return asyncio.run(_discover(args, s, _adapters(args, s)))
        rows = read_table(s)
        if args.action == "list":
            views = [v for v in (ResourceView.from_row(r) for r in rows.values()) if v is not None]
            if args.provider:
                views = [v for v in views if v.spec.provider == args.provider]
            records = []
            for v in sorted(views, key=lambda v: v.resource_id):
                rec = DiscoveredResource(v.resource_id, v.spec, v.healthy).as_json_line()
                rec["free_vcpu"], rec["free_memory_bytes"] = v.free.vcpu, v.free.memory_bytes
                records.append(rec)
            _print(records, args.json)
            return 0
        row = rows.get(args.resource_id)
        if row is None:
            print(f"error: {args.resource_id!r} is not in the live table (see `tessera resources list`)",
                  file=sys.stderr)
            return 1
        sys.stdout.write(orjson.dumps(row, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    except (ConfigError, AdapterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
