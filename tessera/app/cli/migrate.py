"""``tessera migrate``: the migration planner offline, on a snapshot file."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson


def add_parser(sub: Any, fmt: type) -> None:
    sp = sub.add_parser("migrate", formatter_class=fmt, help="plan migrations: evacuate, consolidate, rebalance",
                        description="Plan which replicas to move, with the planner the migration agent runs.")
    msub = sp.add_subparsers(dest="migrate_command", metavar="COMMAND", required=True)
    p = msub.add_parser(
        "plan", formatter_class=fmt, help="plan moves for a snapshot of the fleet and print them",
        description="""\
Plan moves for a snapshot: evacuate work from unhealthy or withdrawn resources, empty
paid resources whose work fits on the running fleet (consolidation) or on cheaper idle
capacity (rebalance), each only if its saving over the work's remaining life beats the
cost of moving, within the disruption budget. Prints one JSON object with --json:
{"moves": [{"allocation_id", "from_resource", "to_resource", "replicas", "reason"}],
 "savings_per_hour", "disruption_cost", "unplaced": [...], "skipped": [...], ...}

SNAP.json: {"now": ISO-8601 UTC,
  "resources": [the RES lines `tessera pack` reads, with vcpu/memory_gib/gpu the total
                capacity, "open" (running, paid for), "healthy", optional "withdrawing"],
  "allocations": [{"id", "tier", "vcpu", "memory_gib", "gpu" (per replica), "tags_required",
                   "regions", "placements": [{"resource_id", "replicas"}], "expected_end"}],
  "forecast": [{"at", "vcpu"}] (optional), "recent_moves": [{"allocation_id", "at"}] (optional)}""",
        epilog="example:\n  tessera migrate plan --snapshot snap.json --max-moves 20 --move-cost 0.02 --json")
    p.add_argument("--snapshot", required=True, metavar="SNAP.json")
    p.add_argument("--max-moves", type=int, metavar="N", help="at most N moves in the plan (default: no limit)")
    p.add_argument("--move-cost", default="0", metavar="AMOUNT",
                   help="cost of moving one replica, in the prices' currency, before tier weights (default 0)")
    p.add_argument("--max-fraction", type=float, default=1.0, metavar="P",
                   help="at most this share (0-1) of a pool's or tenant's allocations moved per window (default 1)")
    p.add_argument("--window", type=float, default=3600.0, metavar="S", help="budget window, seconds (default 3600)")
    p.add_argument("--maintenance", action="append", default=[], metavar="HH:MM-HH:MM",
                   help="daily UTC window for consolidation and rebalance (repeatable; default: always)")
    p.add_argument("--horizon", type=float, default=86400.0, metavar="S",
                   help="remaining life assumed for work with no expected_end, and the most any saving counts "
                        "(default 86400)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(fn=run_plan)

    r = msub.add_parser(
        "run", formatter_class=fmt, help="run the migration agent: plan on the live table, execute, publish steps",
        description="""\
Run the migration agent against the configured broker: it keeps the live table from the
resources, health, allocations and migrations topics, evacuates work from resources that
turn unhealthy or disappear, consolidates every --consolidate-every seconds, and executes
each move as a resumable state machine whose steps go to migrations.v1 (one Kafka
transaction per step). Restarted, it resumes unfinished migrations first.

Executors:
  books     the move happens in the books only (capacity, billing): for workloads
            Tessera places but does not run; their runner follows migrations.v1
  process   moves the example key-value service (tessera.migration.kvstore) between
            processes on this machine behind its proxy: --workdir holds the registry of
            each allocation's process, --proxy-control the proxy's control address
  kubernetes  moves an allocation's pods (label tessera.io/allocation) between nodes of
            the cluster at --kube-server: replacement bound to the target and Ready,
            then the source evicted (PodDisruptionBudgets hold); the bearer token is read
            from the environment variable named by --kube-token-env""",
        epilog="example:\n  tessera migrate run --executor books --consolidate-every 300 --max-moves 10")
    r.add_argument("--executor", choices=("books", "process", "kubernetes"), default="books")
    r.add_argument("--kube-server", metavar="URL", help="kubernetes executor: the API server")
    r.add_argument("--namespace", default="default", help="kubernetes executor: the workloads' namespace")
    r.add_argument("--kube-token-env", default="KUBE_TOKEN", metavar="NAME",
                   help="kubernetes executor: environment variable holding the bearer token (default KUBE_TOKEN)")
    r.add_argument("--workdir", metavar="DIR", help="process executor: registry and data directory")
    r.add_argument("--proxy-control", metavar="HOST:PORT", help="process executor: the proxy's control address")
    r.add_argument("--consolidate-every", type=float, default=300.0, metavar="S",
                   help="plan consolidation and rebalance this often (default 300; 0 = evacuations only)")
    r.add_argument("--max-moves", type=int, metavar="N", help="at most N moves per plan")
    r.add_argument("--move-cost", default="0", metavar="AMOUNT", help="cost of moving one replica (default 0)")
    r.add_argument("--max-fraction", type=float, default=0.2, metavar="P",
                   help="at most this share of a pool's or tenant's allocations moved per hour (default 0.2)")
    r.add_argument("--maintenance", action="append", default=[], metavar="HH:MM-HH:MM",
                   help="daily UTC window for consolidation (repeatable; default: always)")
    r.add_argument("--step-pause", type=float, default=0.0, metavar="S",
                   help="wait after each committed step (drills: lets a test kill the agent mid-migration)")
    r.set_defaults(fn=run_agent)


def run_agent(args: argparse.Namespace, settings: Any) -> int:
    import asyncio

    from tessera.agents.migration import MigrationWorker
    from tessera.app.cli.main import _prepare_service, pricing_agreements
    from tessera.migration.budget import DailyWindow, DisruptionBudget
    from tessera.migration.machine import BookkeepingExecutor

    try:
        budget = DisruptionBudget(max_moves=args.max_moves, max_fraction=args.max_fraction,
                                  maintenance=tuple(DailyWindow.parse(w) for w in args.maintenance),
                                  move_cost=Decimal(args.move_cost))
    except (ValueError, InvalidOperation) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.executor == "process":
        if not args.workdir or not args.proxy_control:
            print("error: the process executor needs --workdir and --proxy-control", file=sys.stderr)
            return 2
        from tessera.migration.process import ProcessExecutor

        executor: Any = ProcessExecutor(Path(args.workdir), args.proxy_control)
    elif args.executor == "kubernetes":
        if not args.kube_server:
            print("error: the kubernetes executor needs --kube-server URL", file=sys.stderr)
            return 2
        import os

        from tessera.migration.kubernetes import KubernetesExecutor

        executor = KubernetesExecutor(args.kube_server, args.namespace, token=os.environ.get(args.kube_token_env, ""))
    else:
        executor = BookkeepingExecutor()

    agreements = pricing_agreements(settings)     # it prices as the scheduler and billing do
    if agreements is None:
        return 2

    async def main() -> None:
        stop = await _prepare_service(settings)
        worker = MigrationWorker(settings, executor, budget, consolidate_every_s=args.consolidate_every,
                                 step_pause_s=args.step_pause, agreements=agreements)
        print(f"migration agent ({args.executor} executor): steps -> {worker.topic['migrations']} (Ctrl-C to stop)",
              file=sys.stderr)
        await worker.run(stop)

    asyncio.run(main())
    return 0


def run_plan(args: argparse.Namespace, _settings: Any) -> int:
    from tessera.migration.budget import DailyWindow, DisruptionBudget
    from tessera.migration.planner import plan
    from tessera.migration.snapshot import SnapshotError, parse_snapshot

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    path = Path(args.snapshot)
    if not path.is_file():
        return fail(f"{path} does not exist")
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return fail(f"{path} is not JSON ({exc})")
    try:
        move_cost = Decimal(args.move_cost)
        if not move_cost.is_finite():
            raise InvalidOperation
        budget = DisruptionBudget(max_moves=args.max_moves, max_fraction=args.max_fraction, window_s=args.window,
                                  maintenance=tuple(DailyWindow.parse(w) for w in args.maintenance),
                                  move_cost=move_cost, horizon_s=args.horizon)
        snap = parse_snapshot(doc)
    except InvalidOperation:
        return fail(f"--move-cost {args.move_cost!r} is not a number")
    except (SnapshotError, ValueError) as exc:
        return fail(f"{path}: {exc}" if isinstance(exc, SnapshotError) else str(exc))
    result = plan(snap, budget)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"{len(result.moves)} moves, saving {result.as_dict()['savings_per_hour']} per hour "
          f"(fleet {result.cost_before} -> {result.cost_after} per hour), disruption cost {result.disruption_cost}")
    for m in result.moves:
        print(f"  {m.reason:<13} {m.allocation_id}: {m.replicas} replica(s) {m.from_resource} -> {m.to_resource}")
    if result.closed:
        print(f"closes: {', '.join(result.closed)}")
    if result.opened:
        print(f"opens: {', '.join(result.opened)}")
    for u in result.unplaced:
        print(f"  UNPLACED {u.allocation_id} ({u.replicas} on {u.resource_id}): {u.reason}: {u.detail}")
    for s in result.skipped:
        print(f"  skipped {s.resource_id or '-'}: {s.reason}: {s.detail}")
    return 0
