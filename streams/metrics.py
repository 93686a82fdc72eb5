"""Prometheus metrics, all defined in one place (Karpenter's metrics.go habit).

Every service exposes them on ``TESSERA_METRICS_BIND``:``TESSERA_METRICS_PORT`` (``/metrics``),
beside its liveness (``/healthz``) and readiness (``/readyz``) probes.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

EVENTS_CONSUMED = Counter(
    "tessera_events_consumed_total", "Valid events decoded by an agent", ["agent", "topic"]
)
DEAD_LETTERS = Counter(
    "tessera_dead_letters_total", "Inputs that failed validation and went to the dead-letter topic",
    ["agent", "topic"],
)
RESOURCE_EVENTS_REFUSED = Counter(
    "tessera_resource_events_refused_total", "Valid resource events a worker refused (e.g. beyond its place limit)",
    ["agent"],
)
SINK_ROWS = Counter("tessera_sink_rows_total", "Rows written to ClickHouse", ["table"])
SINK_FAILURES = Counter("tessera_sink_failures_total", "Failed ClickHouse batch writes (retried)", ["table"])
SINK_BATCH_SECONDS = Histogram(
    "tessera_sink_batch_seconds", "Time to write one batch to ClickHouse", ["table"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SINK_PENDING = Gauge("tessera_sink_pending_rows", "Rows consumed but not yet durably written", ["table"])


@lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """``metric.labels(*labels)``, looked up once: prometheus_client validates and locks on
    every ``labels`` call, which cost the scheduler 6 % of its CPU when done per record."""
    return metric.labels(*labels)


class Probe:
    """What /healthz and /readyz answer for this process.

    Live: the worker's loop beat within ``stale_s`` (a loop stuck in a blocking call, or a
    worker that stopped looping, fails it, and an orchestrator restarts the process). Ready:
    live, and the worker has rebuilt its state and is doing its work (a scheduler still
    replaying its topics is alive but not ready). ``waiting`` says why it is not, e.g. the
    broker is unreachable and the worker is retrying."""

    def __init__(self, stale_s: float = 60.0) -> None:
        self.stale_s = stale_s
        self.last_beat = time.monotonic()
        self.is_ready = False
        self.waiting = "starting"

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def ready(self) -> None:
        self.is_ready, self.waiting = True, ""
        self.beat()

    def wait(self, why: str) -> None:
        self.is_ready, self.waiting = False, why
        self.beat()

    def live(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last_beat
        return (age <= self.stale_s, f"last loop beat {age:.1f} s ago")

    def readiness(self) -> tuple[bool, str]:
        ok, why = self.live()
        if not ok:
            return False, why
        return (self.is_ready, "ready" if self.is_ready else self.waiting)


#: The process's probe: services beat it from their loops and say when they are ready.
PROBE = Probe()


class _Handler(BaseHTTPRequestHandler):
    # Read-only, three paths; anything else is refused (the server opens nothing it need not).
    server_version = "tessera"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, status, ctype = generate_latest(REGISTRY), 200, CONTENT_TYPE_LATEST
        elif path in ("/healthz", "/readyz"):
            ok, why = PROBE.live() if path == "/healthz" else PROBE.readiness()
            body, status, ctype = (why + "\n").encode(), 200 if ok else 503, "text/plain; charset=utf-8"
        else:
            body, status, ctype = b"not found: use /metrics, /healthz or /readyz\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (scrapes are not news)
        pass


def serve(port: int, bind: str = "127.0.0.1") -> ThreadingHTTPServer | None:
    """Serve /metrics (Prometheus), /healthz (liveness) and /readyz (readiness) on
    ``bind:port`` from a daemon thread; no-op when ``port`` is 0. Returns the server."""
    if not port:
        return None
    try:
        server = ThreadingHTTPServer((bind, port), _Handler)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {bind}:{port} ({exc.strerror}); give each service on a host its "
                      "own port: TESSERA_METRICS_PORT or --metrics-port (0 turns the endpoint off)") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server

FORECAST_INTERVALS = Counter("tessera_forecast_intervals_total", "Closed demand intervals learned", ["group"])
FORECAST_OBSERVATIONS = Counter(
    "tessera_forecast_observations_total", "Demand observations by outcome (applied, duplicate, late)", ["outcome"])
FORECAST_SPIKES = Counter("tessera_forecast_spikes_total", "Demand spikes detected", ["group"])
BILLING_UNRATED = Counter("tessera_billing_unrated_total", "Usage records for partners without an agreement",
                          ["partner"])
MIGRATIONS = Counter("tessera_migrations_total", "Migrations finished, by reason and outcome (done, rolled_back, "
                     "failed)", ["reason", "status"])
MIGRATION_STRANDED = Counter("tessera_migration_unplaced_total",
                             "Replicas the planner found no place for (left on failed capacity), by reason", ["reason"])
BILLING_EVENTS = Counter("tessera_billing_events_total", "Billing lines and alerts published", ["topic"])
SINK_LAG_SECONDS = Gauge("tessera_sink_lag_seconds",
                         "Age of the oldest event consumed but not yet written to ClickHouse (0 when caught up)",
                         ["table"])
CHECKPOINTS = Counter("tessera_checkpoints_total", "Checkpoints saved (state and input positions)", ["agent"])

# The scheduler: what an operator watches to see it keep up.
SCHEDULER_DECISION_SECONDS = Histogram(
    "tessera_scheduler_decision_seconds", "From a request's arrival at the scheduler to its decision (placed or "
    "rejected), by tier", ["tier"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600))
SCHEDULER_QUEUE_DEPTH = Gauge("tessera_scheduler_queue_depth", "Requests waiting for capacity, by tier", ["tier"])
SCHEDULER_DECISIONS = Counter("tessera_scheduler_decisions_total",
                              "Decisions by outcome (placed, rejected) and reason code (placed: 'placed')",
                              ["outcome", "code"])
SCHEDULER_BATCH_SIZE = Histogram("tessera_scheduler_batch_requests", "Requests considered per batch",
                                 buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
SCHEDULER_BATCH_SECONDS = Histogram("tessera_scheduler_batch_seconds",
                                    "Time to decide one batch (packing kernel and search)",
                                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
SCHEDULER_LIVE_ALLOCATIONS = Gauge("tessera_scheduler_live_allocations", "Allocations holding capacity")
SERVICE_RESTARTS = Counter("tessera_service_restarts_total",
                           "Times a service started again after a Kafka fault, by service and error", ["service", "error"])
