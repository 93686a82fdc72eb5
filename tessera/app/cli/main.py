"""The ``tessera`` command line: one entry point for infrastructure, workers and queries.

Each command imports what it needs inside its function: ``tessera --help`` and the light
commands then start without loading Faust, aiokafka, Numba or the embedded ClickHouse
(each costs from a fraction of a second to several seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys
import textwrap
from typing import Any, Callable, Sequence

from tessera.config import ConfigError, Settings, load_settings

DESCRIPTION = """\
Tessera blends compute from your own data centers and from partner providers into one
pool: it forecasts demand, places each workload where it costs least while its SLA
holds, and bills partners exactly. Events flow through Kafka; decisions land in
ClickHouse.

Settings come from TESSERA_* environment variables or a TOML file (--config);
`tessera config` shows the effective values.
"""

EPILOG = """\
examples:
  tessera infra up                 start a local Kafka broker (downloads jars once)
  tessera demo                     run the end-to-end demo and print what happened
  tessera worker                   run Tessera's agents against the configured broker
  tessera resources discover --catalog data/digitalocean_skypilot_catalog/do_vms.csv --once --json
  tessera sql "SELECT event_type, count() FROM events GROUP BY 1"
  tessera infra down               stop the local broker
"""


def _progress(msg: str) -> None:
    print(f"  - {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- infra
def cmd_infra(args: argparse.Namespace, s: Settings) -> int:
    from tessera.infra.kafka_broker import BrokerError, broker_from_settings

    if args.brokers != 1:
        return _infra_cluster(args, s)
    broker = broker_from_settings(s, secure=args.secure)
    if s.kafka_bootstrap and args.action in {"up", "down"}:
        print(f"TESSERA_KAFKA_BOOTSTRAP={s.kafka_bootstrap} points at an external broker; "
              "`tessera infra` manages only the local one. Unset it to use the local broker.", file=sys.stderr)
        return 2
    try:
        if args.action == "up":
            st = broker.start(timeout=args.timeout, progress=_progress)
            print(f"Kafka listening on {st.bootstrap}  (data: {broker.home}, pid: {st.pid or 'external'})")
            if broker.secure:
                print(f"TLS + SCRAM-SHA-512 only, with ACLs per role ({', '.join(broker.credentials())}); the "
                      f"role passwords are in {broker.home / 'credentials.json'}. Configure each service as its "
                      "role:\n  TESSERA_KAFKA_SECURITY_PROTOCOL=SASL_SSL TESSERA_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 "
                      f"TESSERA_KAFKA_SSL_CAFILE={broker.ca_file} \\\n  TESSERA_KAFKA_SASL_USERNAME=<role> "
                      "TESSERA_KAFKA_SASL_PASSWORD=<its password>")
            else:
                print(f"Point clients at it with TESSERA_KAFKA_BOOTSTRAP={st.bootstrap} (the default).")
            return 0
        if args.action == "down":
            stopped = broker.stop()
            print("Kafka stopped." if stopped else "Kafka was not running (nothing to stop).")
            if args.wipe:
                broker.wipe()
                print(f"Deleted {broker.home}.")
            return 0
        st = broker.status()
        print(st.describe())
        return 0 if st.running else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- gateway
def _infra_cluster(args: argparse.Namespace, s: Settings) -> int:
    """``--brokers N`` (N >= 3): a KRaft cluster on loopback, ports 2 apart from the
    configured ones (9092, 9094, 9096; controllers 9093, 9095, 9097)."""
    from tessera.infra.kafka_broker import BrokerError, KafkaCluster

    if args.brokers < 3 or args.secure:
        print("error: --brokers takes 1 (the default) or 3 and more; a secured cluster is not offered yet "
              "(use --secure with one broker)", file=sys.stderr)
        return 2
    cluster = KafkaCluster(s.data_path / "kafka-cluster", [s.kafka_port + 2 * i for i in range(args.brokers)],
                           [s.kafka_controller_port + 2 * i for i in range(args.brokers)],
                           heap=s.kafka_heap)
    try:
        if args.action == "up":
            bootstrap = cluster.start(timeout=max(args.timeout, 180), progress=_progress)
            print(f"Kafka cluster of {args.brokers} listening on {bootstrap} (data: {cluster.home}); every topic "
                  "keeps 3 copies, writes need 2. Point clients and topic creation at it with\n"
                  f"  TESSERA_KAFKA_BOOTSTRAP={bootstrap} TESSERA_TOPIC_REPLICATION_FACTOR=3")
            return 0
        if args.action == "down":
            cluster.stop()
            print("Kafka cluster stopped.")
            return 0
        states = [n.status() for n in cluster.nodes]
        for st in states:
            print(st.describe())
        return 0 if all(st.running for st in states) else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_gateway(args: argparse.Namespace, s: Settings) -> int:
    from tessera.app.gateway import Gateway, load_tokens, new_token

    if args.action == "token":
        if not args.tenant:
            print("error: give the tenant: tessera gateway token TENANT", file=sys.stderr)
            return 2
        token, line = new_token(args.tenant)
        print(f"token for {args.tenant} (give it to them; it is shown once):\n  {token}\n"
              f"add its digest to the tokens file ({s.gateway_tokens or 'TESSERA_GATEWAY_TOKENS'}):\n  {line}")
        return 0
    path = args.tokens or s.gateway_tokens
    if not path:
        print("error: the gateway needs a tokens file: --tokens FILE or TESSERA_GATEWAY_TOKENS "
              "(make tokens with `tessera gateway token TENANT`)", file=sys.stderr)
        return 2
    try:
        tokens = load_tokens(path)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from aiohttp import web

    print(f"request gateway for {len(set(tokens.values()))} tenant(s) on http://{args.host}:{args.port}/v1/requests "
          f"-> {s.topic('requests.v1')}; Ctrl-C to stop", file=sys.stderr)
    web.run_app(Gateway(s, tokens).app(), host=args.host, port=args.port, print=None)
    return 0


# --------------------------------------------------------------------------- topics
def cmd_topics(args: argparse.Namespace, s: Settings) -> int:
    from tessera.schemas.topics import TOPICS

    if args.action == "create":
        from tessera.streams.admin import ensure_topics

        created = asyncio.run(ensure_topics(s))
        print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
        return 0
    width = max(len(t.full_name(s.topic_prefix)) for t in TOPICS)
    print(f"{'TOPIC'.ljust(width)}  {'KEY':<14} {'PARTS':>5}  EVENT TYPES")
    for t in TOPICS:
        print(f"{t.full_name(s.topic_prefix).ljust(width)}  {t.key:<14} {t.partitions:>5}  {', '.join(t.event_types)}")
    return 0


# --------------------------------------------------------------------------- worker
def cmd_worker(args: argparse.Namespace, s: Settings) -> int:
    from tessera.agents.worker import agent_names, run_worker

    agents = args.agent or agent_names()
    unknown = sorted(set(agents) - set(agent_names()))
    if unknown:
        print(f"error: unknown agent(s) {', '.join(unknown)}; available: {', '.join(agent_names())}", file=sys.stderr)
        return 2
    if args.sql_port is not None:
        # The embedded store can be read only by the process that writes it: this one serves
        # it (read-only, loopback) for the dashboard, clickhouse-connect and curl.
        from tessera.app.sqlserver import SqlServer
        from tessera.storage.ddl import apply_migrations
        from tessera.storage.store import ChdbStore, open_store

        if s.clickhouse_url:
            print("error: --sql-port serves the embedded store; TESSERA_CLICKHOUSE_URL points at a server "
                  "already (query that one)", file=sys.stderr)
            return 2
        store = open_store(s)
        apply_migrations(store)
        assert isinstance(store, ChdbStore)
        try:
            server = SqlServer(store, "127.0.0.1", args.sql_port).start()
        except OSError as exc:
            print(f"error: --sql-port {args.sql_port}: {exc.strerror or exc}; pick a free port", file=sys.stderr)
            return 2
        print(f"SQL interface (read-only) on {server.url}; e.g. TESSERA_CLICKHOUSE_URL={server.url}/"
              f"{s.clickhouse_database} tessera dashboard", file=sys.stderr)
    return run_worker(s, agents, loglevel=args.loglevel)


def cmd_dashboard(args: argparse.Namespace, s: Settings) -> int:
    from aiohttp import web

    from tessera.app.dashboard import Dashboard, DashboardError
    from tessera.storage.ddl import apply_migrations
    from tessera.storage.store import StorageError, open_store

    if args.database:
        s = s.replace(clickhouse_database=args.database)
    try:
        # A reader: over a server (or a worker's read-only SQL port) it creates nothing; the
        # embedded store, when this process opens it, gets its tables if it has none yet.
        store = open_store(s, readonly=True)
        if not s.clickhouse_url:
            apply_migrations(store)
        board = Dashboard(store, s.clickhouse_database, host=args.host or s.dashboard_bind,
                          port=s.dashboard_port if args.port is None else args.port, metrics_urls=args.metrics,
                          password=s.dashboard_password or None)
    except (StorageError, DashboardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = s.clickhouse_url.split("@")[-1] if s.clickhouse_url else f"the embedded store {s.chdb_path}"
    print(f"Tessera dashboard on {board.url} (database {s.clickhouse_database} from {source}); Ctrl-C to stop",
          file=sys.stderr)
    try:
        web.run_app(board.app(), host=board.host, port=board.port, print=None, access_log=None)
    except OSError as exc:
        print(f"error: cannot listen on {board.url}: {exc.strerror or exc}; pick another --port", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------- scheduler
async def _prepare_service(s: Settings) -> asyncio.Event:
    """Topics created, metrics served, SIGINT/SIGTERM wired to the returned stop event."""
    import signal

    from tessera.streams import collector, metrics
    from tessera.streams.admin import ensure_topics

    collector.tune_for_service()
    await ensure_topics(s)
    metrics.serve(s.metrics_port, s.metrics_bind)
    from tessera.streams.supervise import exit_after

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            exit_after(s.shutdown_grace_s)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


def pricing_agreements(s: Settings) -> dict | None:
    """The agreements a service prices by, the ones billing charges (optional: without them
    it uses the discovered list prices; updates also arrive on the agreements topic). None,
    after saying why on stderr, when the configured file cannot be read."""
    from tessera.pricing.agreements import AgreementError, load_agreements

    try:
        return load_agreements(s.billing_agreements) if s.billing_agreements else {}
    except (OSError, AgreementError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_scheduler(args: argparse.Namespace, s: Settings) -> int:
    from tessera.agents.scheduler import SchedulerWorker
    from tessera.agents.warmup import compiled_off_loop
    from tessera.scheduler.domains import DomainError, load_domains

    agreements = pricing_agreements(s)
    if agreements is None:
        return 2

    try:
        domains = load_domains(s.domains_file) if s.domains_file else None
        if domains is not None and args.domain not in domains.names:
            raise DomainError(f"--domain {args.domain!r} is not in {s.domains_file} ({', '.join(domains.names)})")
    except (OSError, DomainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = await _prepare_service(s)
        # Here only to tell the user why a first start waits; the worker's own warm-up then
        # finds the kernels compiled (milliseconds).
        await compiled_off_loop(lambda text: print(text, file=sys.stderr))
        worker = SchedulerWorker(s, domain=args.domain, batch_max=args.batch_max, batch_wait_ms=args.batch_wait_ms,
                                 aging_s=args.aging_s, agreements=agreements, tuning_interval_s=args.tune_every,
                                 domains=domains)
        print(f"scheduler for domain {args.domain!r}: {worker.topic['requests']} -> {worker.topic['allocations']}"
              " (Ctrl-C to stop)", file=sys.stderr)
        await worker.run(stop)

    asyncio.run(main())
    return 0


def cmd_billing(args: argparse.Namespace, s: Settings) -> int:
    from tessera.agents.billing import BillingWorker
    from tessera.pricing.agreements import AgreementError, load_agreements

    path = args.agreements or s.billing_agreements
    if not path:
        print("error: give --agreements AGR.json (or set TESSERA_BILLING_AGREEMENTS)", file=sys.stderr)
        return 2
    try:
        agreements = load_agreements(path)
    except (OSError, AgreementError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = await _prepare_service(s)
        worker = BillingWorker(s, agreements)
        print(f"billing {len(agreements)} partner(s): {worker.topic['billing-feed']} (group {worker.group}) -> "
              f"{worker.topic['billing-lines']}, {worker.topic['alerts']} (Ctrl-C to stop)", file=sys.stderr)
        await worker.run(stop)

    asyncio.run(main())
    return 0


# --------------------------------------------------------------------------- sql
def cmd_sql(args: argparse.Namespace, s: Settings) -> int:
    from tessera.storage.ddl import apply_migrations
    from tessera.storage.store import StorageError, open_store

    if args.query == "serve":
        return _sql_serve(args, s)
    if args.query == "ddl":
        from tessera.storage.ddl import statements

        for stmt in statements(s.clickhouse_database, args.cluster or ""):
            print(stmt + ";\n")
        return 0
    if args.cluster:
        print("error: --cluster goes with `tessera sql ddl`", file=sys.stderr)
        return 2
    fmt = {"pretty": "PrettyCompactMonoBlock", "csv": "CSVWithNames", "json": "JSONEachRow", "tsv": "TabSeparatedWithNames"}
    try:
        store = open_store(s)
        apply_migrations(store)
        out = store.query_raw(args.query, fmt[args.format])
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out.decode())
    return 0


def _sql_serve(args: argparse.Namespace, s: Settings) -> int:
    import ssl

    from tessera.app.sqlserver import LOOPBACK, SqlError, SqlServer
    from tessera.storage.ddl import apply_migrations
    from tessera.storage.store import ChdbStore, StorageError, open_store

    if s.clickhouse_url:
        print("error: TESSERA_CLICKHOUSE_URL points at a ClickHouse server already; `sql serve` serves the "
              "embedded store. Unset it (or query that server directly).", file=sys.stderr)
        return 2
    password = s.sql_password or None
    if args.password_file:
        try:
            password = open(args.password_file, encoding="utf-8").read().strip() or None
        except OSError as exc:
            print(f"error: cannot read --password-file: {exc}", file=sys.stderr)
            return 2
    if args.host not in LOOPBACK and not password:
        print(f"error: refusing to listen on {args.host} without a password: set TESSERA_SQL_PASSWORD or give "
              "--password-file (and --user)", file=sys.stderr)
        return 2
    try:
        store = open_store(s)
        apply_migrations(store)
        assert isinstance(store, ChdbStore)
        server = SqlServer(store, args.host, args.port, args.user, password, allow_writes=args.allow_writes,
                           certfile=args.tls_cert, keyfile=args.tls_key, max_execution_time_s=args.max_execution_time)
    except SqlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StorageError, OSError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ClickHouse HTTP interface over the embedded store {s.chdb_path} on {server.url} (database "
          f"{s.clickhouse_database}); e.g. curl '{server.url}/?query=SELECT+1'. Ctrl-C to stop.", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


# --------------------------------------------------------------------------- schemas
def cmd_schemas(args: argparse.Namespace, s: Settings) -> int:
    from tessera.schemas.jsonschema import JSON_DIR, export, rendered

    if args.action == "export":
        for p in export():
            print(p)
        return 0
    stale = [n for n, c in rendered().items() if not (JSON_DIR / n).exists() or (JSON_DIR / n).read_bytes() != c]
    if stale:
        print(f"out of date: {', '.join(stale)}; run `tessera schemas export`", file=sys.stderr)
        return 1
    print(f"{len(rendered())} JSON Schema files in {JSON_DIR} match the code")
    return 0


# --------------------------------------------------------------------------- produce
def cmd_produce(args: argparse.Namespace, s: Settings) -> int:
    from tessera.streams.produce import produce_lines

    stream = sys.stdin if args.file == "-" else open(args.file, "rb")
    with stream:
        sent, rejected = asyncio.run(produce_lines(s, args.topic, stream, validate=not args.no_validate))
    from tessera.schemas.topics import topic_spec

    name = topic_spec(args.topic).full_name(s.topic_prefix)
    print(f"sent {sent} event(s) to {name}; rejected {rejected} invalid line(s)")
    return 0 if rejected == 0 else 1


# --------------------------------------------------------------------------- config / demo
def cmd_config(args: argparse.Namespace, s: Settings) -> int:
    for k, v in s.shown().items():
        print(f"{k:<28} {v}")
    return 0


def cmd_demo(args: argparse.Namespace, s: Settings) -> int:
    from tessera.app.demo import run_demo

    return run_demo(s, requests=args.requests, seconds=args.seconds, report=args.report)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="tessera", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--config", metavar="FILE", help="TOML settings file (default: $TESSERA_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="a service's /metrics, /healthz and /readyz port (default $TESSERA_METRICS_PORT, 9464; "
                        "0 = off): each service on one host needs its own")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable, help_: str, desc: str = "") -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=textwrap.dedent(desc or help_), formatter_class=fmt)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("infra", cmd_infra, "start, stop or inspect the local Kafka broker",
             """\
             Manage the single-node Apache Kafka 4.x broker (KRaft, broker+controller) that
             Tessera runs from Maven Central jars. Data lives in $TESSERA_DATA_DIR/kafka.
             Ports: TESSERA_KAFKA_PORT (9092), TESSERA_KAFKA_CONTROLLER_PORT (9093).

               up      start it (idempotent: reuses a running broker) and wait until ready
               down    stop it (--wipe also deletes its data)
               status  say whether it runs; exit code 0 if it does, 3 if not

             --secure runs the secured broker instead (docs/security.md): TLS only, SCRAM-SHA-512
             users for Tessera's roles, ACLs, no plaintext listener.""")
    sp.add_argument("action", choices=["up", "down", "status"])
    sp.add_argument("--wipe", action="store_true", help="with down: delete the broker's data directory")
    sp.add_argument("--secure", action="store_true", help="the secured broker: TLS, SCRAM users per role, ACLs")
    sp.add_argument("--brokers", type=int, default=1, metavar="N",
                    help="1 (default) or a KRaft cluster of N >= 3 on loopback: replication 3, min.insync 2")
    sp.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)")

    sp = add("gateway", cmd_gateway, "the HTTP front door where tenants submit requests (tenant from the token)",
             "Serve POST /v1/requests: tenants submit workload requests with a bearer token; the\n"
             "gateway sets each request's tenant from the token (refusing any other), validates it\n"
             "and publishes it. Tenants then need no Kafka credentials (docs/security.md).\n\n"
             "  serve   run it (--tokens FILE or TESSERA_GATEWAY_TOKENS: token digest -> tenant)\n"
             "  token   make a token for TENANT and print the line to add to the tokens file")
    sp.add_argument("action", choices=["serve", "token"])
    sp.add_argument("tenant", nargs="?", help="with token: the tenant")
    sp.add_argument("--tokens", metavar="FILE", help="JSON tokens file (token digest -> tenant)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    sp.add_argument("--port", type=int, default=8088, help="port (default 8088)")

    sp = add("topics", cmd_topics, "list Tessera's topics or create them on the broker")
    sp.add_argument("action", choices=["list", "create"], nargs="?", default="list")

    sp = add("worker", cmd_worker, "run the Faust worker: event-log sink, resources, forecast",
             "Run the Faust worker with the chosen agents (all by default) until interrupted:\n"
             "event-log (every topic into ClickHouse, a batch consumer inside the worker),\n"
             "resources (the live resource table), forecast (demand series and forecasts).\n"
             "Metrics on http://$TESSERA_METRICS_BIND:$TESSERA_METRICS_PORT/metrics, probes on\n"
             "/healthz (its loop runs) and /readyz (its agents started).")
    sp.add_argument("--agent", action="append", metavar="NAME", help="agent to run (repeatable); default: all")
    sp.add_argument("--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"])
    sp.add_argument("--sql-port", type=int, metavar="PORT",
                    help="also serve the embedded store's SQL interface (read-only, loopback) on this port, so "
                         "the dashboard and other processes can read what this worker writes")

    sp = add("dashboard", cmd_dashboard, "serve the live dashboard (a web page that updates as the system runs)",
             "Serve a web page that redraws every 2 s from ClickHouse SQL (and the workers'\n"
             "metrics, with --metrics): resources with health and free capacity, queue and waits\n"
             "per tier, placements and rejections by reason, cost rate by provider against own-only\n"
             "and cheapest-partner, the forecast band against realised demand, provisioning hints,\n"
             "migrations, partner bills month to date and alerts.\n\n"
             "It reads the configured store: a ClickHouse server (TESSERA_CLICKHOUSE_URL), or the\n"
             "SQL interface of a running worker (`tessera worker --sql-port 8123`, then\n"
             "TESSERA_CLICKHOUSE_URL=http://127.0.0.1:8123/tessera), or the embedded store when no\n"
             "other process holds it. Loopback only unless TESSERA_DASHBOARD_PASSWORD is set.")
    sp.add_argument("--host", help="address to listen on (default TESSERA_DASHBOARD_BIND, loopback)")
    sp.add_argument("--port", type=int, help="port (default TESSERA_DASHBOARD_PORT, 8050)")
    sp.add_argument("--database", help="the database to show (default TESSERA_CLICKHOUSE_DATABASE), e.g. demo_ab12cd")
    sp.add_argument("--metrics", action="append", default=[], metavar="URL",
                    help="a worker's metrics endpoint to read the queue depth from (repeatable), "
                         "e.g. http://127.0.0.1:9464/metrics")

    sp = add("sql", cmd_sql, "run a SQL query on Tessera's ClickHouse",
             "Run SQL on the configured ClickHouse: embedded chdb in $TESSERA_DATA_DIR/chdb by\n"
             "default, or the server in TESSERA_CLICKHOUSE_URL. Tables live in the database\n"
             "`tessera` (TESSERA_CLICKHOUSE_DATABASE); qualify them, e.g. tessera.events.\n\n"
             "`tessera sql serve [--host 127.0.0.1] [--port 8123]` serves the ClickHouse HTTP\n"
             "interface over the embedded store, for clickhouse-connect, curl, Grafana and the like:\n"
             "reads only unless --allow-writes; never file(), url() and the like, nor INTO OUTFILE;\n"
             "a password (TESSERA_SQL_PASSWORD or --password-file) is required beyond loopback.\n\n"
             "`tessera sql ddl [--cluster NAME]` prints Tessera's DDL: for one server, or for a\n"
             "ClickHouse cluster (replicated tables sharded by event_id behind Distributed ones).")
    sp.add_argument("query", help='e.g. "SELECT event_type, count() FROM tessera.events GROUP BY 1", '
                                  'or `serve` to serve the ClickHouse HTTP interface over the embedded store, '
                                  'or `ddl` to print the DDL')
    sp.add_argument("--format", choices=["pretty", "csv", "json", "tsv"], default="pretty")
    sp.add_argument("--cluster", metavar="NAME",
                    help="with ddl: the DDL for a ClickHouse cluster of that name (ReplicatedReplacingMergeTree "
                         "tables sharded by event_id behind Distributed tables, everything ON CLUSTER)")
    sp.add_argument("--host", default="127.0.0.1", help="with serve: address to listen on (default loopback)")
    sp.add_argument("--port", type=int, default=8123, help="with serve: port (default 8123)")
    sp.add_argument("--user", help="with serve: user name clients must give (default: 'default')")
    sp.add_argument("--password-file", metavar="FILE",
                    help="with serve: file holding the password clients must give (or TESSERA_SQL_PASSWORD)")
    sp.add_argument("--allow-writes", action="store_true",
                    help="with serve: also serve inserts and schema changes (POST only)")
    sp.add_argument("--tls-cert", metavar="PEM", help="with serve: serve HTTPS with this certificate chain")
    sp.add_argument("--tls-key", metavar="PEM", help="with serve: the certificate's private key")
    sp.add_argument("--max-execution-time", type=int, default=60, metavar="S",
                    help="with serve: the longest a query may run (default 60 s)")

    sp = add("schemas", cmd_schemas, "export or check the JSON Schema files for producers")
    sp.add_argument("action", choices=["export", "check"])

    sp = add("produce", cmd_produce, "publish JSON events (one per line) to a topic, validated",
             "Read one JSON event per line from FILE (or - for stdin), validate it against its\n"
             "contract and publish it keyed as the topic declares. Invalid lines are reported\n"
             "with the field and the problem, and not sent.")
    sp.add_argument("topic", help="logical topic name, e.g. requests (see `tessera topics`)")
    sp.add_argument("file", nargs="?", default="-")
    sp.add_argument("--no-validate", action="store_true", help="send lines as they are (to test the dead-letter path)")

    sp = add("scheduler", cmd_scheduler, "run the scheduler: requests in, allocation events out",
             "Consume workload requests, place them with the packing kernel onto the live\n"
             "resources, and publish allocation events, in Kafka transactions. One scheduler\n"
             "runs per placement domain: a second one with the same domain fences the first.\n"
             "Consumers of the allocations topic should read with isolation.level=read_committed.")
    sp.add_argument("--domain", default="global",
                    help="placement domain this scheduler owns (default: global); with TESSERA_DOMAINS_FILE, one of "
                         "its domains: it places only its domain's requests, on its domain's resources")
    sp.add_argument("--batch-max", type=int, default=1000, help="requests per batch at most (default 1000)")
    sp.add_argument("--batch-wait-ms", type=int, default=20, help="max wait to fill a batch (default 20 ms)")
    sp.add_argument("--tune-every", type=float, default=0.0, metavar="S",
                    help="tune the headroom quantile online every S seconds (a River bandit; decisions on "
                         "tuning.v1 and in v_tuning); default 0: the newsvendor levels")
    sp.add_argument("--aging-s", type=float, default=60.0,
                    help="seconds of waiting that promote a request by one tier (default 60)")

    sp = add("billing", cmd_billing, "run the billing agent: allocations in, billing lines and alerts out",
             "Rate partner usage live at the agreed rates: placements and migrations from the\n"
             "billing feed (the scheduler's and migration agent's events keyed by partner,\n"
             "read_committed), or, for agreements with \"basis\": \"measured\", usage samples\n"
             "from the usage topic. Publish month-to-date billing lines and usage-limit alerts\n"
             "(a hard limit stops the scheduler placing on that partner until the period ends\n"
             "or the limit is raised). Run it more than once to share the partners: the agents\n"
             "split the feed's shards through their consumer group, and each shard rebuilds\n"
             "from its checkpoint. The offline twin is `tessera bill`.")
    sp.add_argument("--agreements", metavar="AGR.json", help="agreements file (default: $TESSERA_BILLING_AGREEMENTS)")

    # Offline commands, each in a module of its own; one whose extra is not installed
    # stays listed and says which extra to install.
    # The packages named are looked for, not imported: Numba and River (with SciPy) take
    # seconds to import, and `tessera --help` or `tessera config` should not wait for them.
    for module, command, needs in (("resources", "resources", ()), ("scheduler", "pack", ("numba", "numpy")),
                                   ("billing", "bill", ()), ("forecast", "forecast", ("river", "numba", "numpy")),
                                   ("simulate", "simulate", ("river", "numba", "numpy")),
                                   ("migrate", "migrate", ("numba", "numpy"))):
        _add_optional(sub, fmt, f"tessera.app.cli.{module}", command, needs)

    add("config", cmd_config, "show the effective settings (secrets masked)")

    sp = add("demo", cmd_demo, "run the demo: own data center + partner clouds on the Alibaba trace, end to end",
             "Bring up the local broker and the whole pipeline in this process (event log,\n"
             "live resource table, forecasts, scheduler, billing), register an own data center\n"
             "and two partners with agreements, replay Alibaba v2023 pod arrivals time-compressed\n"
             "as workload requests, then print a summary from ClickHouse SQL and write an HTML\n"
             "report with plots. Each run has its own topics and database; run it as often as\n"
             "you like. `tessera infra down` stops the broker afterwards.")
    sp.add_argument("--requests", type=int, default=1500, help="pods to replay (default 1500)")
    sp.add_argument("--seconds", type=float, default=90.0, help="replay the arrivals over this long (default 90)")
    sp.add_argument("--report", metavar="FILE.html", help="where to write the report (default: under the data dir)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        if args.metrics_port is not None:
            settings = settings.replace(metrics_port=args.metrics_port)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        rc = int(args.fn(args, settings) or 0)
    except KeyboardInterrupt:
        rc = 130
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: this command needs {exc.name!r}, which comes with the '{extra}' extra: "
              f"pip install 'tessera[{extra}]' (or 'tessera[all]')", file=sys.stderr)
        rc = 2
    return _leave(rc)


def _add_optional(sub: Any, fmt: type, module: str, command: str, needs: tuple[str, ...] = ()) -> None:
    try:
        missing_package = next((p for p in needs if importlib.util.find_spec(p) is None), None)
        if missing_package is not None:
            raise ModuleNotFoundError(f"No module named {missing_package!r}", name=missing_package)
        add_parser = importlib.import_module(module).add_parser
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        sp = sub.add_parser(command, help=f"(needs the '{extra}' extra: pip install 'tessera[{extra}]')")

        def missing(_args: argparse.Namespace, _settings: Settings, exc: ModuleNotFoundError = exc) -> int:
            raise exc

        sp.set_defaults(fn=missing, any_arguments=True)
        return
    add_parser(sub, fmt)


#: Which optional extra brings a module (the base install is the producer client's).
EXTRAS = {**dict.fromkeys(("faust", "mode", "river", "numba", "numpy", "clickhouse_connect", "prometheus_client",
                           "aiohttp", "babel"), "worker"),
          "chdb": "embedded", "kubernetes": "kubernetes"}


def _leave(rc: int) -> int:
    """As a program, exit without chdb's teardown (see exit_skipping_chdb_teardown); called
    as a function (tests), return the code."""
    if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "tessera":
        from tessera.storage.store import exit_skipping_chdb_teardown

        exit_skipping_chdb_teardown(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
