"""What the running system looks like, read from ClickHouse SQL (the views Tessera creates
over its event log) and, when given, the workers' Prometheus metrics: the dashboard's
data, and the demo report's time series.

Every function takes an ``AnalyticsStore`` (the embedded engine in the process that writes
it, or a server / ``tessera sql serve`` through clickhouse-connect) and a database name,
and only reads. Money stays a decimal string from the SQL to the page.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from tessera.storage.store import AnalyticsStore

#: Quantiles of the forecast band drawn (the demand engine issues these among others).
BAND = ("0.05", "0.5", "0.95")


def _sql_string(text: str) -> str:
    """``text`` for use inside a single-quoted SQL string literal."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def timeline(store: AnalyticsStore, db: str, value: str, points: int = 120,
             start: float | None = None) -> tuple[float, dict[str, list]]:
    """Per provider, the sum of ``value`` (an expression over ``v_allocation_usage``) over
    the stretches of allocations live (through migrations) at each of ``points`` moments from ``start`` (UTC epoch seconds;
    default the first placement) to the latest event: (start, {provider: [(seconds since
    start, value)]})."""
    rows = store.query(f"SELECT provider, toUnixTimestamp64Micro(started_at) AS a, "
                     f"toUnixTimestamp64Micro(ifNull(released_at, (SELECT max(event_time) FROM {db}.events))) AS b, "
                     f"{value} AS v FROM {db}.v_allocation_usage")
    if not rows:
        return 0.0, {}
    if start is None:
        start = min(int(r["a"]) for r in rows) / 1e6
    end = max(int(r["b"]) for r in rows) / 1e6
    grid = [start + (end - start) * k / points for k in range(points + 1)]
    spans: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        spans[r["provider"]].append((int(r["a"]) / 1e6, int(r["b"]) / 1e6, float(r["v"])))
    out: dict[str, list[tuple[float, float]]] = {}
    for provider, ss in sorted(spans.items()):
        # Live at g: placed at or before it and not yet released (the last point counts
        # what is still running at the latest event).
        out[provider] = [(g - start, sum(v for a, b, v in ss if a <= g < b or g == b == end)) for g in grid]
    return start, out


def busiest_series(store: AnalyticsStore, db: str) -> str | None:
    """The vCPU series forecast most often (else any series): the one worth a chart."""
    rows = store.query(f"SELECT series, sum(forecasts) AS n FROM {db}.v_forecast_accuracy GROUP BY series "
                     f"ORDER BY endsWith(series, 'dim=vcpu') DESC, n DESC, series LIMIT 1")
    return rows[0]["series"] if rows else None


def forecast_band(store: AnalyticsStore, db: str, series: str, limit: int = 240) -> dict[str, list]:
    """The one-step-ahead forecast band (5 %, median, 95 %) and the realised demand of a
    series, per interval start (UTC epoch seconds), the latest ``limit`` intervals."""
    series = _sql_string(series)
    lo, mid, hi = BAND
    band = store.query(f"""
        SELECT toUnixTimestamp64Micro(parseDateTime64BestEffort(JSONExtractString(h, 'interval_start'), 6)) AS t,
               JSONExtractFloat(JSONExtractRaw(h, 'quantiles'), '{lo}') AS lo,
               JSONExtractFloat(JSONExtractRaw(h, 'quantiles'), '{mid}') AS mid,
               JSONExtractFloat(JSONExtractRaw(h, 'quantiles'), '{hi}') AS hi
        FROM {db}.events FINAL ARRAY JOIN JSONExtractArrayRaw(payload, 'horizons') AS h
        WHERE event_type = 'forecast' AND JSONExtractString(payload, 'series') = '{series}'
          AND JSONExtractUInt(h, 'step') = 1 ORDER BY t DESC LIMIT {limit}""")
    actual = store.query(f"""
        SELECT toUnixTimestamp64Micro(parseDateTime64BestEffort(JSONExtractString(payload, 'interval_start'), 6))
               AS t, JSONExtractFloat(payload, 'value') AS v
        FROM {db}.events FINAL WHERE event_type = 'demand.interval'
          AND JSONExtractString(payload, 'series') = '{series}' ORDER BY t DESC LIMIT {limit}""")
    return {"series": series,
            "band": [[int(r["t"]) / 1e6, float(r["lo"]), float(r["mid"]), float(r["hi"])] for r in reversed(band)],
            "actual": [[int(r["t"]) / 1e6, float(r["v"])] for r in reversed(actual)]}


def resources(store: AnalyticsStore, db: str) -> list[dict[str, Any]]:
    """The resource table: own and partner resources, health, capacity and what is free."""
    rows = store.query(f"""
        SELECT r.resource_id AS resource_id, r.provider AS provider, r.region AS region,
               r.vcpu AS vcpu, r.gpu AS gpu, toString(r.price_per_hour) AS price_per_hour,
               ifNull(u.vcpu_used, 0) AS vcpu_used, ifNull(u.gpu_used, 0) AS gpu_used,
               ifNull(h.status, 'healthy') AS health
        FROM {db}.v_resources AS r
        LEFT JOIN (SELECT resource_id, sum(vcpu_per_replica * replicas) AS vcpu_used,
                          sum(gpu_per_replica * replicas) AS gpu_used
                   FROM {db}.v_allocation_usage WHERE released_at IS NULL GROUP BY resource_id) AS u
            USING (resource_id)
        LEFT JOIN (SELECT JSONExtractString(payload, 'resource_id') AS resource_id,
                          argMax(JSONExtractString(payload, 'status'), event_time) AS status
                   FROM {db}.events FINAL WHERE event_type = 'health.changed' GROUP BY resource_id) AS h
            USING (resource_id)
        WHERE NOT r.removed ORDER BY provider = 'own' DESC, provider, resource_id
        SETTINGS join_use_nulls = 1""")
    for r in rows:
        r["vcpu_free"] = max(float(r["vcpu"]) - float(r["vcpu_used"]), 0.0)
        r["gpu_free"] = max(int(r["gpu"]) - int(r["gpu_used"]), 0)
    return rows


def outcomes(store: AnalyticsStore, db: str) -> dict[str, Any]:
    """Requests placed, released and rejected (by reason code), and waiting now per tier."""
    counts = {r["t"]: int(r["n"]) for r in store.query(f"""
        SELECT event_type AS t, uniqExact(JSONExtractString(payload, 'request_id')) AS n FROM {db}.events FINAL
        WHERE event_type IN ('allocation.placed', 'allocation.released') GROUP BY t""")}
    rejected = {r["code"]: int(r["n"]) for r in store.query(f"""
        SELECT JSONExtractString(payload, 'code') AS code, uniqExact(JSONExtractString(payload, 'request_id')) AS n
        FROM {db}.events FINAL WHERE event_type = 'allocation.rejected' GROUP BY code ORDER BY n DESC, code""")}
    waiting = {r["sla_tier"]: int(r["n"]) for r in store.query(f"""
        SELECT sla_tier, count() AS n FROM (
            SELECT JSONExtractString(payload, 'request_id') AS rid, any(JSONExtractString(payload, 'sla_tier')) AS sla_tier
            FROM {db}.events FINAL
            WHERE event_type IN ('allocation.queued', 'allocation.placed', 'allocation.rejected')
            GROUP BY rid
            HAVING countIf(event_type = 'allocation.queued') > 0
               AND countIf(event_type IN ('allocation.placed', 'allocation.rejected')) = 0)
        GROUP BY sla_tier""")}
    waits = store.query(f"SELECT sla_tier, placed, p50_s, p90_s, p99_s, max_s FROM {db}.v_queue_wait_by_tier "
                      f"ORDER BY sla_tier")
    return {"placed": counts.get("allocation.placed", 0), "released": counts.get("allocation.released", 0),
            "rejected": rejected, "rejected_total": sum(rejected.values()), "waiting": waiting, "waits": waits}


def cost_rate(store: AnalyticsStore, db: str) -> dict[str, Any]:
    """What the live placements cost per hour, by provider, against the same work on own
    capacity only (at own full cost per vCPU-hour, had it the room) and on the cheapest
    partner only (its cheapest price per vCPU-hour); GPU work is priced on GPU offers in
    both, since a GPU pod cannot run on a CPU-only machine."""
    by_provider = store.query(f"""
        SELECT provider, toString(sum(price_per_hour)) AS usd_per_hour, sum(vcpu_per_replica * replicas) AS vcpu
        FROM {db}.v_allocation_usage WHERE released_at IS NULL GROUP BY provider ORDER BY provider""")
    alt = store.query(f"""
        SELECT sum(a.vcpu * if(a.gpu > 0 AND o.own_gpu > 0, o.own_gpu, o.own_any)) AS own_only,
               sum(a.vcpu * if(a.gpu > 0 AND o.partner_gpu > 0, o.partner_gpu, o.partner_any)) AS cheapest,
               any(o.own_any) > 0 AS has_own, any(o.partner_any) > 0 AS has_partner
        FROM (SELECT vcpu_per_replica * replicas AS vcpu, gpu_per_replica AS gpu
              FROM {db}.v_allocation_usage WHERE released_at IS NULL) AS a
        CROSS JOIN (
            SELECT sumIf(price, provider = 'own' AND gpu > 0) / sumIf(vcpu, provider = 'own' AND gpu > 0) AS own_gpu,
                   sumIf(price, provider = 'own') / sumIf(vcpu, provider = 'own') AS own_any,
                   minIf(price / vcpu, provider != 'own' AND gpu > 0) AS partner_gpu,
                   minIf(price / vcpu, provider != 'own') AS partner_any
            FROM (SELECT provider, toFloat64(price_per_hour) AS price, vcpu, gpu FROM {db}.v_resources
                  WHERE NOT removed AND vcpu > 0)) AS o""")
    a = alt[0] if alt else {}
    vcpu = sum(float(r["vcpu"]) for r in by_provider)
    own = f"{float(a['own_only']):.4f}" if a.get("has_own") and a.get("own_only") is not None else None
    cheapest = f"{float(a['cheapest']):.4f}" if a.get("has_partner") and a.get("cheapest") is not None else None
    return {"by_provider": by_provider,
            "total_usd_per_hour": f"{sum(float(r['usd_per_hour']) for r in by_provider):.4f}",
            "vcpu_in_use": vcpu, "own_only_usd_per_hour": own, "cheapest_partner_usd_per_hour": cheapest}


def bills(store: AnalyticsStore, db: str) -> list[dict[str, Any]]:
    """Partner bills month to date: the latest revision of each billing line, summed per
    partner and period (the newest period first)."""
    return store.query(f"""
        SELECT partner, period, currency, toString(sum(amount)) AS amount, count() AS lines FROM (
            SELECT JSONExtractString(payload, 'line_id') AS line_id,
                   argMax(JSONExtractString(payload, 'partner_id'), rev) AS partner,
                   argMax(substring(JSONExtractString(payload, 'period_start'), 1, 7), rev) AS period,
                   argMax(JSONExtractString(payload, 'currency'), rev) AS currency,
                   argMax(toDecimal128OrZero(JSONExtractString(payload, 'amount'), 9), rev) AS amount
            FROM (SELECT payload, JSONExtractUInt(payload, 'revision') AS rev FROM {db}.events FINAL
                  WHERE event_type = 'billing.line')
            GROUP BY line_id)
        GROUP BY partner, period, currency ORDER BY period DESC, partner""")


def recent(store: AnalyticsStore, db: str, limit: int = 8) -> dict[str, list]:
    """The latest alerts, provisioning hints and migrations."""
    alerts = store.query(f"""
        SELECT toString(event_time) AS at, JSONExtractString(payload, 'partner_id') AS partner,
               JSONExtractString(payload, 'limit_name') AS limit_name,
               JSONExtractUInt(payload, 'threshold_pct') AS threshold_pct,
               JSONExtractString(payload, 'enforcement') AS enforcement, JSONExtractBool(payload, 'lifted') AS lifted
        FROM {db}.events FINAL WHERE event_type = 'usage_limit.alert' ORDER BY event_time DESC LIMIT {limit}""")
    hints = store.query(f"""
        SELECT pool, toString(needed_by) AS needed_by, shortfall_vcpu, suggested_resources,
               toString(suggested_cost_per_hour) AS suggested_cost_per_hour, hints
        FROM {db}.v_provisioning_hints ORDER BY last_hint_at DESC LIMIT {limit}""")
    migrations = store.query(f"""
        SELECT migration_id, allocation_id, reason, source_resource_id, target_resource_id, status,
               toString(planned_at) AS planned_at, toString(expected_saving_per_hour) AS expected_saving_per_hour
        FROM {db}.v_migrations ORDER BY planned_at DESC LIMIT {limit}""")
    return {"alerts": alerts, "hints": hints, "migrations": migrations}


def scrape(urls: list[str], timeout: float = 2.0) -> dict[str, Any]:
    """The scheduler's queue depth per tier from the workers' ``/metrics`` (each URL; one
    that does not answer is reported, not fatal)."""
    from prometheus_client.parser import text_string_to_metric_families

    depth: dict[str, float] = defaultdict(float)
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:     # noqa: S310 (operator-given URL)
                text = resp.read(4_000_000).decode()
        except (OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        for fam in text_string_to_metric_families(text):
            if fam.name == "tessera_scheduler_queue_depth":
                for s in fam.samples:
                    depth[s.labels.get("tier", "")] += s.value
    return {"queue_depth": dict(depth), "errors": errors}


def snapshot(store: AnalyticsStore, db: str, metrics_urls: list[str] | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, in one JSON-ready document."""
    start, cost = timeline(store, db, "toFloat64(price_per_hour)")
    series = busiest_series(store, db)
    doc = {
        "as_of": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "database": db,
        "resources": resources(store, db),
        "outcomes": outcomes(store, db),
        "cost": cost_rate(store, db),
        "cost_timeline": {"start": start, "series": cost},
        "forecast": forecast_band(store, db, series) if series else None,
        "bills": bills(store, db),
        **recent(store, db),
    }
    if metrics_urls:
        doc["metrics"] = scrape(metrics_urls)
    return doc
