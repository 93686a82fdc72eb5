"""Prometheus metrics, all defined in one place (Karpenter's metrics.go habit).

Workers expose them on ``TESSERA_METRICS_PORT`` (``/metrics``).
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(port: int) -> None:
    """Start the /metrics endpoint (no-op when port is 0)."""
    if port:
        start_http_server(port, addr="127.0.0.1")

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
